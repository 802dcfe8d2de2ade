"""``recommend --batch --compact`` (issue 21, item 5): every result, expanded with the definitions read
before it, is the result the batch writes without --compact; with one process and with two."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pressor.engine.evaluation.compact import HEADER, expand

ROOT = Path(__file__).resolve().parent.parent
PRESSOR = str(Path(sys.executable).with_name("pressor"))
sys.path.append(str(ROOT / "bench"))  # appended: bench/fhir.py must not shadow fhir.resources for later tests


def batch(source: Path, *extra: str) -> list[str]:
    done = subprocess.run([PRESSOR, "recommend", "--batch", str(source), "--no-audit", "--now", "2026-11-24T12:00:00Z",
                           *extra], capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    return done.stdout.splitlines()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from evaluate import varied_states  # bench/evaluate.py's states: nearly every one has conditional advice

    path = tmp_path_factory.mktemp("compact") / "states.jsonl"
    lines = [json.dumps(s) for s in varied_states(150, seed=21)]
    lines.insert(5, '{"vitals": {"map_mmhg": "low"}}')  # an error line stays as it is
    lines.insert(9, json.dumps({"patient": {"age_years": 60, "weight_kg": 70}, "vitals": {"map_mmhg": 58}}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_compact_lines_expand_to_the_full_results(source, jobs):
    full = [json.loads(line) for line in batch(source, "--jobs", jobs)]
    compact = batch(source, "--jobs", jobs, "--compact")
    assert json.loads(compact[0]) == HEADER
    defs: dict = {}
    answers = []
    for line in compact[1:]:
        data = json.loads(line)
        if "defs" in data:
            for key, value in data["defs"].items():
                assert defs.setdefault(key, value) == value  # defined again only with the same value
            continue
        if data["ok"]:
            data["result"] = expand(data["result"], defs)
        answers.append(data)
    assert answers == full
    # the result lines (definitions aside: over 150 states, each process's definitions weigh a lot) are far smaller
    size = sum(len(line) + 1 for line in compact[1:] if not line.startswith('{"defs"')) / len(answers)
    assert size < sum(len(json.dumps(a, ensure_ascii=False)) for a in full) / len(full) / 2


def test_compact_needs_batch():
    done = subprocess.run([PRESSOR, "recommend", "-", "--compact", "--no-audit"], input="{}", capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "--batch only" in done.stderr


def test_a_writer_remembers_a_bounded_number_of_contents_and_defines_again_what_it_forgot(monkeypatch):
    """A long batch of varied states meets new contents without end (plan items with doses, residuals): the
    writer keeps at most REMEMBERED content keys, and one it forgot is defined again before it is used."""
    from datetime import datetime, timezone

    from evaluate import varied_states

    from pressor.engine.evaluation import compact
    from pressor.engine.evaluation.evaluate import evaluate
    from pressor.engine.evaluation.pack import load_pack

    monkeypatch.setattr(compact, "REMEMBERED", 16)
    pack, writer = load_pack(), compact.CompactWriter()
    defs: dict = {}
    defined_again = 0
    for state in varied_states(40, seed=5):
        result = evaluate(pack, state, now=datetime(2026, 11, 24, 12, tzinfo=timezone.utc))
        new, data = writer(result)
        for key, value in (new or {}).items():
            defined_again += key in defs
            assert defs.setdefault(key, value) == value
        assert json.loads(compact.dumps(compact.expand(data, defs))) == json.loads(json.dumps(result.to_dict()))
        assert len(writer._written) <= 16
    assert defined_again > 0
