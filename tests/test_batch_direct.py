"""Batch workers writing their own lines (issue 21, item 5): in input order, the same bytes as one process
writes, and a worker that dies stops the batch (exit 4) without leaving the others waiting for their turn."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pressor.engine.errors import EvaluationError
from pressor.engine.evaluation import batch

ROOT = Path(__file__).resolve().parent.parent
PRESSOR = str(Path(sys.executable).with_name("pressor"))
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
sys.path.append(str(ROOT / "bench"))  # appended: bench/fhir.py must not shadow fhir.resources for later tests


def test_workers_write_in_input_order_the_same_bytes(tmp_path):
    from evaluate import varied_states

    lines = [json.dumps(s) for s in varied_states(400, seed=8)]
    lines.insert(70, '{"vitals": {"map_mmhg": "low"}}')
    source = tmp_path / "states.jsonl"
    source.write_text("\n".join(lines) + "\n")
    outs = []
    for jobs in ("1", "2"):
        with open(tmp_path / f"out-{jobs}", "wb") as out:  # a real descriptor: the workers write to it themselves
            done = subprocess.run([PRESSOR, "recommend", "--batch", str(source), "--no-audit", "--jobs", jobs, "--now",
                                   "2026-11-24T12:00:00Z"], stdout=out, stderr=subprocess.PIPE, timeout=600)
        assert done.returncode == 1, done.stderr  # the one invalid state
        outs.append((tmp_path / f"out-{jobs}").read_bytes())
    assert outs[0] == outs[1] and outs[0].count(b"\n") == len(lines)


def _die_on_second(number, fd, chunk):
    if number == 1:
        os._exit(9)
    return _REAL(number, fd, chunk)


_REAL = batch._answer_chunk_direct


def test_a_dying_worker_stops_the_batch_without_a_hang(monkeypatch):
    monkeypatch.setattr(batch, "_answer_chunk_direct", _die_on_second)
    state = json.dumps({"patient": {"age_years": 60}, "vitals": {"map_mmhg": 58}})
    items = [batch.Item(f"<t>:{i}", state, True) for i in range(batch.CHUNK * 6)]
    with tempfile.TemporaryFile() as out:
        with pytest.raises(EvaluationError) as exc:
            list(batch.evaluate_many(items, rules_dir=None, now=NOW, jobs=2, out=out.fileno()))
        assert "worker process died" in str(exc.value.problems[0])
        out.seek(0)
        written = out.read().splitlines()
    # whatever was written before the pool stopped: whole chunks of whole lines, in order, none after the dead one
    assert len(written) in (0, batch.CHUNK)
    assert [json.loads(line)["index"] for line in written] == list(range(len(written)))
