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
