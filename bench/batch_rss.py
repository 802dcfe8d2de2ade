"""Memory of a long batch: worker RSS while ``pressor recommend --batch`` answers a million states.

Streams generated states (each new to the process: generated block by block with fresh seeds, never
held all at once) into ``pressor recommend --batch - --jobs N --no-audit --compact`` and drains its
output, counting lines. Every ``--every`` seconds it samples the resident set (VmRSS) of the batch's
main process and of each worker process (the children of the main one), with the number of states
answered so far. It prints the samples, then for each process its RSS once ``--settle`` states were
answered (100,000 by default) and its largest RSS after that: the growth after the first 100k states
(issue 21's target: under 5 MB). The load average is printed at the start and the end.

    python bench/batch_rss.py [--states 1000000] [--jobs 2] [--kind complete|varied] [--no-advice]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import random_states  # noqa: E402  (the bundled pack's benchmark states)

BLOCK = 2_000


def _states(n: int, kind: str):
    """``n`` states, generated a block at a time (complete: every fact present; varied: each with p = 0.85).

    Heights under the dosing policy's shortest adult (120 cm), where Devine's ideal weight would be 0 or less,
    are kept: the policy then doses on the actual weight (rules/dosing.yaml)."""
    present = 1.0 if kind == "complete" else 0.85
    done, seed = 0, 1_000
    while done < n:
        block = random_states(min(BLOCK, n - done), present, seed, plausible_pressures=True)
        yield from block
        done += len(block)
        seed += 1


def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--kind", choices=("complete", "varied"), default="complete")
    parser.add_argument("--no-advice", action="store_true")
    parser.add_argument("--settle", type=int, default=100_000, help="states answered before the baseline sample")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    args = parser.parse_args()

    pressor = str(Path(sys.executable).parent / "pressor")
    cmd = [pressor, "recommend", "--batch", "-", "--jobs", str(args.jobs), "--no-audit", "--compact",
           "--now", "2026-01-01T00:00:00Z", *(("--no-advice",) if args.no_advice else ())]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"{' '.join(cmd[1:])}: {args.states:,} {args.kind} states, samples every {args.every:g} s")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None

    def feed() -> None:
        try:
            batch = []
            for state in _states(args.states, args.kind):
                batch.append(orjson.dumps(state))
                if len(batch) == 256:
                    proc.stdin.write(b"\n".join(batch) + b"\n")
                    batch = []
            if batch:
                proc.stdin.write(b"\n".join(batch) + b"\n")
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()

    lines = 0  # result lines (definitions lines of --compact start with {"defs" and are not counted)
    out_bytes = 0
    done = threading.Event()

    def drain() -> None:
        nonlocal lines, out_bytes
        tail = b""
        while chunk := proc.stdout.read1(1 << 20):
            out_bytes += len(chunk)
            data = tail + chunk
            cut = data.rfind(b"\n") + 1
            whole, tail = data[:cut], data[cut:]
            lines += whole.count(b'\n{"index":')  + (1 if whole.startswith(b'{"index":') else 0)
        done.set()

    # Each result line starts with {"index": right after a newline; counting the first one of a read too.
    threading.Thread(target=feed, daemon=True).start()
    threading.Thread(target=drain, daemon=True).start()
    t0 = time.perf_counter()
    samples: list[tuple[float, int, dict[int, int]]] = []
    while not done.wait(args.every):
        pids = [proc.pid, *_children(proc.pid)]
        rss = {pid: kb for pid in pids if (kb := _rss_kb(pid)) is not None}
        samples.append((time.perf_counter() - t0, lines, rss))
        print(f"{samples[-1][0]:8.0f} s {lines:>10,} states  RSS MB: "
              + "  ".join(f"{'main' if pid == proc.pid else pid}={kb / 1024:.1f}" for pid, kb in rss.items()), flush=True)
    proc.wait()
    elapsed = time.perf_counter() - t0
    print(f"\n{lines:,} states answered in {elapsed:.0f} s ({lines / elapsed:,.0f}/s wall), exit {proc.returncode}, "
          f"{out_bytes / max(lines, 1) / 1000:.1f} KB out per state")
    base = next((s for s in samples if s[1] >= args.settle), None)
    if base is None:
        print(f"fewer than {args.settle:,} states answered: no growth figure")
    else:
        print(f"RSS once {args.settle:,} states were answered ({base[1]:,} at {base[0]:.0f} s) and its largest after that:")
        for pid, kb in base[2].items():
            later = [s[2][pid] for s in samples if s[0] >= base[0] and pid in s[2]]
            peak = max(later)
            last = later[-1]
            who = "main process" if pid == proc.pid else f"worker {pid}"
            print(f"  {who:14} {kb / 1024:7.1f} MB -> peak {peak / 1024:7.1f} MB, last {last / 1024:7.1f} MB: "
                  f"growth {(peak - kb) / 1024:+.1f} MB (target for a worker: < 5 MB)")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
