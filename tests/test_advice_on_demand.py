"""Advice on demand (issue 21, item 2): ``evaluate(advice=False)`` decides the same rules, verdicts and
evidence without the advice about unknowns, and says so; a result with advice is what it always was."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings

from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.pack import load_pack
from pressor.engine.evaluation.result_json import ResultWriter, compact_json

from .strategies import patient_states

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
PRESSOR = str(Path(sys.executable).with_name("pressor"))


@pytest.fixture(scope="module")
def pack():
    return load_pack()


def _decided(data: dict) -> dict:
    """What does not depend on the advice: the fired rules with their evidence, doses and citations, the undecided
    rules' ids, the derived facts, the warnings."""
    return {"recommendations": [{k: v for k, v in r.items() if k != "shown"} for r in data["recommendations"]],
            "not_evaluable": [n["rule_id"] for n in data["not_evaluable"]], "derived": data["derived"],
            "warnings": data["warnings"], "decided_for_any_value": data["decided_for_any_value"]}


@settings(max_examples=150, deadline=None)
@given(state=patient_states())
def test_the_same_decisions_without_the_advice(pack, state):
    asked = evaluate(pack, state, now=NOW, include_draft=True)
    default = asked.to_dict()
    assert "advice" not in default  # a result with advice is unchanged
    lean = evaluate(pack, state, now=NOW, include_draft=True, advice=False).to_dict()
    assert lean["advice"] is False
    assert _decided(lean) == _decided(default)
    assert lean["conditional"] == lean["ask_next"] == lean["not_applicable"] == []
    assert all(n["missing"] == [] for n in lean["not_evaluable"])


def test_the_batch_writer_writes_both_as_the_reference(pack):
    state = {"patient": {"age_years": 60}, "vitals": {"map_mmhg": 58}}
    write = ResultWriter()
    for advice in (True, False, True):
        result = evaluate(pack, state, now=NOW, advice=advice)
        assert write(result) == compact_json(result)


def test_batch_no_advice(tmp_path):
    lines = [json.dumps({"patient": {"age_years": 60, "weight_kg": 70}, "vitals": {"map_mmhg": 58}}),
             json.dumps({"vitals": {"map_mmhg": 70}})]
    source = tmp_path / "states.jsonl"
    source.write_text("\n".join(lines) + "\n")
    args = [PRESSOR, "recommend", "--batch", str(source), "--no-audit", "--now", "2026-11-24T12:00:00Z"]
    full = subprocess.run(args, capture_output=True, text=True, timeout=120)
    lean = subprocess.run(args + ["--no-advice"], capture_output=True, text=True, timeout=120)
    assert full.returncode == lean.returncode == 0, lean.stderr
    for a, b in zip(full.stdout.splitlines(), lean.stdout.splitlines()):
        a, b = json.loads(a), json.loads(b)
        assert b["result"]["advice"] is False and "advice" not in a["result"]
        assert _decided(b["result"]) == _decided(a["result"])
    refused = subprocess.run([PRESSOR, "recommend", "-", "--no-advice", "--no-audit"], input=lines[0], capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "--batch only" in refused.stderr
