"""What the audit log costs: append, concurrent append, verify, replay, and `recommend` with and without it.

Run: .venv/bin/python bench/audit.py   (writes only into a temporary directory)
"""
from __future__ import annotations

import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from pressor.engine.audit import AuditLog
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import load_document
from pressor.engine.evaluation.pack import load_pack

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "examples" / "septic-shock-adult.yaml"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def _writer(path, pack, state, result, count, start):
    start.wait()
    with AuditLog.open(path) as log:
        for _ in range(count):
            log.append(pack, state, result, now=NOW, user="bench")


def main() -> None:
    pack = load_pack()
    state = load_document(STATE).data
    result = evaluate(pack, state, now=NOW)
    with tempfile.TemporaryDirectory(prefix="pressor-bench-") as tmp:
        path = Path(tmp, "audit.db")
        with AuditLog.open(path) as log:
            times = []
            for _ in range(2000):
                t = time.perf_counter()
                log.append(pack, state, result, now=NOW, user="bench")
                times.append(time.perf_counter() - t)
            print(f"append, one process: median {statistics.median(times) * 1e6:.0f} µs, "
                  f"p99 {sorted(times)[int(len(times) * 0.99)] * 1e6:.0f} µs ({len(result.to_dict()['recommendations'])} recommendations, "
                  f"{len(log.record(log.head()[1]).result_json)} B of result JSON)")
            t = time.perf_counter()
            outcome = log.verify()
            print(f"verify {outcome.records} records: {(time.perf_counter() - t) * 1e3:.0f} ms (ok={outcome.ok})")
            rid = log.head()[1]
            t = time.perf_counter()
            log.replay(rid)
            first = time.perf_counter() - t
            t = time.perf_counter()
            log.replay(rid)
            print(f"replay: first {first * 1e3:.0f} ms (rebuilds and compiles the pack), then {(time.perf_counter() - t) * 1e3:.1f} ms")
        print(f"file size for 2,000 records: {path.stat().st_size / 1e6:.1f} MB")

        fork = multiprocessing.get_context("fork")
        path2 = Path(tmp, "concurrent.db")
        start = fork.Event()
        writers = [fork.Process(target=_writer, args=(path2, pack, state, result, 1000, start)) for _ in range(2)]
        for w in writers:
            w.start()
        t = time.perf_counter()
        start.set()
        for w in writers:
            w.join()
        took = time.perf_counter() - t
        with AuditLog.open(path2, create=False) as log:
            ok = log.verify().ok
        print(f"two processes x 1,000 appends: {took:.2f} s, {2000 / took:.0f} records/s (chain ok={ok})")

        pressor = Path(sys.executable).parent / "pressor"
        env = dict(os.environ, PRESSOR_AUDIT_DB=str(Path(tmp, "cli.db")))
        for label, extra in (("recommend --no-audit", ["--no-audit"]), ("recommend (recorded)", [])):
            runs = []
            for _ in range(7):
                t = time.perf_counter()
                subprocess.run([str(pressor), "recommend", str(STATE), "--json", *extra], env=env, check=True, capture_output=True)
                runs.append(time.perf_counter() - t)
            print(f"{label}: median {statistics.median(runs) * 1e3:.0f} ms wall")


if __name__ == "__main__":
    main()
