"""Benchmark of FHIR conversion on a Synthea-shaped record with years of history (generated, ~4 MB).

Prints, each as a median over runs beside a baseline from the same run: reading the file under the
FHIR limit (``json.loads`` of the same text is the baseline), converting it to a patient state with the
pack's temporal facts, and the two together; and the record's size and resource count.
Shared machines are noisy: read the ratios, not absolute times across runs.

    python bench/fhir.py [--bytes 4000000] [--runs 15]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pressor.engine.ehr.fhir import from_bundle, load_bundle, load_mapping  # noqa: E402
from pressor.engine.evaluation.pack import load_pack  # noqa: E402
from tests.fhir_records import synthea_like  # noqa: E402

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
TARGET_MS = 200


def timed(fn, runs: int) -> float:
    """Median milliseconds of ``fn()`` over ``runs`` runs."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", type=int, default=4_000_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    record = synthea_like(now=NOW, target_bytes=args.bytes)
    pack, mapping = load_pack(), load_mapping()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "record.json"
        text = json.dumps(record)
        path.write_text(text)
        from_bundle(record, now=NOW, pack=pack, mapping=mapping)  # warm: schema compile, value sets
        parse_ms = timed(lambda: json.loads(path.read_text()), args.runs)
        read_ms = timed(lambda: load_bundle(path, mapping=mapping), args.runs)
        convert_ms = timed(lambda: from_bundle(record, now=NOW, pack=pack, mapping=mapping), args.runs)
        both_ms = timed(lambda: from_bundle(load_bundle(path, mapping=mapping).data, now=NOW, pack=pack, mapping=mapping), args.runs)
    print(f"record: {len(text) / 1e6:.2f} MB, {len(record['entry'])} resources")
    print(f"baseline json.loads of the file: {parse_ms:.0f} ms")
    print(f"read (FHIR limit, no line map):  {read_ms:.0f} ms  ({read_ms / parse_ms:.2f}x baseline)")
    print(f"convert (with temporal facts):   {convert_ms:.0f} ms  ({convert_ms / parse_ms:.2f}x baseline)")
    print(f"read + convert:                  {both_ms:.0f} ms  ({both_ms / parse_ms:.2f}x baseline; target {TARGET_MS} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
