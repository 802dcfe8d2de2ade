"""Peak memory and time of ``pressor diff`` against a big generated pack (issue 24: 3,000 rules in < 300 MB).

Writes a pack of ``--rules`` generated rules (bench/compare.py's generator: conjunctions of 2-4
comparisons over the patient-state facts, each rule with the bundled pack's provenance) and runs
``pressor diff OLD NEW --json`` with the bundled pack as OLD (the default scenarios: tests/scenarios),
as a child process: its peak RSS (``ru_maxrss``), wall and CPU time. The pack cache is a fresh
temporary directory, so both packs are loaded from their files. The load average is printed beside.

    python bench/diff_memory.py [--rules 3000] [--scenarios DIR]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import generate_rules, write_pack  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=3000)
    parser.add_argument("--scenarios", default=str(ROOT / "tests" / "scenarios"))
    args = parser.parse_args()
    pressor = str(Path(sys.executable).parent / "pressor")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "big"
        directory.mkdir()
        big = write_pack(generate_rules(args.rules), directory)
        cache = Path(tmp) / "cache"
        env = {**os.environ, "PRESSOR_CACHE_DIR": str(cache)}
        cmd = [pressor, "diff", str(ROOT / "rules"), str(big), "--scenarios", args.scenarios, "--json"]
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    summary = ""
    if proc.stdout.strip().startswith("{"):
        import json

        data = json.loads(proc.stdout)
        seen = data["behaviour"]
        summary = (f"; {len(data['rules']['added'])} rules added, {seen['states_checked']:,} states checked, "
                   f"{seen['thresholds']:,} thresholds, {len(seen['changes'])} behaviour changes")
    print(f"pressor diff rules/ <{args.rules:,} generated rules> --json: exit {proc.returncode}, peak RSS "
          f"{r1.ru_maxrss / 1024:,.0f} MB (target < 300 MB), {wall:,.1f} s wall, {cpu:,.1f} s CPU{summary}")
    if proc.returncode not in (0, 1):
        print(proc.stderr[-2000:])
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
