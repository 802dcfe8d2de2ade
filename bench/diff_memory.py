"""Peak memory and time of ``pressor diff`` against a big generated pack (issue 24: 3,000 rules in < 300 MB).

Writes a pack of ``--rules`` generated rules (bench/compare.py's generator: conjunctions of 2-4
comparisons over the patient-state facts, each rule with the bundled pack's provenance) and runs
``pressor diff OLD NEW --json`` with the bundled pack as OLD (the default scenarios: tests/scenarios),
as a child process: its peak RSS (``ru_maxrss``), wall and CPU time. The pack cache is a fresh
temporary directory, so both packs are loaded from their files. The load average is printed beside.

The pack is written by another child: Linux gives a child started by fork or vfork and exec the peak RSS of
its parent at the exec as its own starting ``ru_maxrss``, so generating the pack in this process (~330 MB)
was measured as the diff's peak.

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

ROOT = Path(__file__).resolve().parent.parent


def write(rules: int, big: Path) -> None:
    """The generated pack in ``big`` (rule files of 100 rules: one file would pass the 1 MB limit)."""
    from compare import generate_rules, write_pack

    big.mkdir()
    write_pack(generate_rules(rules), big)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=3000)
    parser.add_argument("--scenarios", default=str(ROOT / "tests" / "scenarios"))
    parser.add_argument("--write", metavar="DIR", help=argparse.SUPPRESS)  # the child that writes the pack
    args = parser.parse_args()
    if args.write:
        write(args.rules, Path(args.write))
        return
    pressor = str(Path(sys.executable).parent / "pressor")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big"
        subprocess.run([sys.executable, __file__, "--rules", str(args.rules), "--write", str(big)], check=True)
        cache = Path(tmp) / "cache"
        env = {**os.environ, "PRESSOR_CACHE_DIR": str(cache)}
        cmd = [pressor, "diff", str(ROOT / "rules"), str(big), "--scenarios", args.scenarios, "--json"]
        out, err = Path(tmp) / "out.json", Path(tmp) / "err.txt"
        t0 = time.perf_counter()
        with out.open("w") as stdout, err.open("w") as stderr:
            child = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=stderr)
            _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not the pack writer's
        wall = time.perf_counter() - t0
        code, text, errors = os.waitstatus_to_exitcode(status), out.read_text(), err.read_text()
    cpu = usage.ru_utime + usage.ru_stime
    summary = ""
    if text.strip().startswith("{"):
        import json

        data = json.loads(text)
        seen = data["behaviour"]
        summary = (f"; {len(data['rules']['added'])} rules added, {seen['states_checked']:,} states checked, "
                   f"{seen['thresholds']:,} thresholds, {len(seen['changes'])} behaviour changes")
    print(f"pressor diff rules/ <{args.rules:,} generated rules> --json: exit {code}, peak RSS "
          f"{usage.ru_maxrss / 1024:,.0f} MB (target < 300 MB), {wall:,.1f} s wall, {cpu:,.1f} s CPU{summary}; "
          f"this process's own peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB (a floor of the child's)")
    if code not in (0, 1):
        print(errors[-2000:])
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
