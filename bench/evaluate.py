"""Benchmark of ``evaluate`` on the bundled pack, each figure beside a baseline from the same run.

Prints: median and p99 µs per evaluate over varied states, first sight (new to the process) and warm (the same states again), (and the same for a bare
durable-rules assert/drain/retract on the same compiled rules, for the plain-Python
reference evaluation of every rule, for the compiled truth of every rule, and for the check
of the fired rules against the reference semantics, alone and with their evidence); RSS before and after 100,000 evaluations; wall time
of ``pressor recommend --json`` on an example (without, then with, an audit record written to a
temporary log) next to ``python -c pass``.
Shared machines are noisy: read the ratios, not the absolute times across runs.

    python bench/evaluate.py [--states 5000] [--memory-evaluations 100000] [--cli-runs 10]
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from pressor.engine.evaluation.compile import state_vocabulary
from pressor.engine.evaluation.compiled import compiled_pack
from pressor.engine.evaluation.evaluate import _engine_fact, engine_slot, evaluate, flatten_state
from pressor.engine.evaluation.logic import derive, truth
from pressor.engine.evaluation.pack import load_pack
from pressor.engine.evaluation.validate import STATE_SCHEMA, schema

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "septic-shock-adult.yaml"
NEAR = (0, 0.02, 0.05, 0.1, 0.25, 0.5, 2, 10, 18, 30, 40, 65, 70)
TARGETS = {"median_us": 150, "p99_us": 1000, "cli_ms": 300}


def varied_states(n: int, seed: int = 7) -> list[dict]:
    """``n`` valid states: each fact present with probability 0.85, numbers often near thresholds."""
    return random_states(n, 0.85, seed)


def random_states(n: int, present: float, seed: int, *, plausible_pressures: bool = False) -> list[dict]:
    """``n`` valid states, each fact present with probability ``present``, numbers often near thresholds.

    Pressures: by default no measured MAP, and no DBP at or above the SBP; ``plausible_pressures``: DBP < MAP <
    SBP with the MAP measured whenever both pressures are present.
    """
    rng = random.Random(seed)
    vocab = state_vocabulary(schema(STATE_SCHEMA))
    states = []
    for _ in range(n):
        state: dict = {}
        for path, ft in vocab.items():
            if rng.random() > present:
                continue
            if ft.kind == "number":
                lo, hi = ft.minimum or 0, ft.maximum or 100
                near = [t + d for t in NEAR for d in (-0.01, 0, 0.01) if lo <= t + d <= hi]
                value = rng.choice(near) if near and rng.random() < 0.6 else round(rng.uniform(lo, hi), 2)
            elif ft.kind == "boolean":
                value = rng.random() < 0.5
            elif ft.kind == "enum":
                value = rng.choice(ft.values)
            else:
                value = rng.sample(ft.values, rng.randint(0, 2))
            section, _, key = path.partition(".")
            if key:
                state.setdefault(section, {})[key] = value
            else:
                state[section] = value
        vitals = state.get("vitals", {})
        if not plausible_pressures:
            vitals.pop("map_mmhg", None)
            if "sbp_mmhg" in vitals and "dbp_mmhg" in vitals and vitals["dbp_mmhg"] >= vitals["sbp_mmhg"]:
                vitals.pop("dbp_mmhg")
        elif "sbp_mmhg" in vitals and "dbp_mmhg" in vitals:
            sbp, dbp = sorted((vitals["sbp_mmhg"], vitals["dbp_mmhg"]), reverse=True)
            if sbp - dbp < 2:
                sbp = dbp + 20
            vitals.update(sbp_mmhg=sbp, dbp_mmhg=dbp, map_mmhg=round(dbp + (sbp - dbp) / 3, 1))
        else:
            vitals.pop("map_mmhg", None)
        states.append(state)
    return states


def timings(fn, items) -> tuple[float, float]:
    """Median and p99 of ``fn(item)`` in µs of this thread's CPU time (time preempted on a shared machine is not counted)."""
    samples = []
    clock = time.thread_time_ns
    for item in items:
        t0 = clock()
        fn(item)
        samples.append((clock() - t0) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 1_048_576


def wall_ms(cmd: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=5000)
    parser.add_argument("--memory-evaluations", type=int, default=100_000)
    parser.add_argument("--cli-runs", type=int, default=10)
    args = parser.parse_args()

    pack = load_pack()
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    states = varied_states(args.states)
    matcher = engine_slot(pack).get(pack).matcher
    prepared = []
    for s in states:
        facts = flatten_state(s)
        derive(pack.derived, facts)
        prepared.append(facts)
    engine_facts = [_engine_fact(f, pack.array_members) for f in prepared]
    fired = sum(len(evaluate(pack, s, now=now).recommendations) for s in states[:500]) / 500

    # First sight: states this process has never evaluated (another seed); warm: the same states again.
    fresh = varied_states(args.states, seed=70_707)
    first_med, first_p99 = timings(lambda s: evaluate(pack, s, now=now), fresh)
    med, p99 = timings(lambda s: evaluate(pack, s, now=now), fresh)
    bare_med, bare_p99 = timings(matcher.match, engine_facts)
    py_med, py_p99 = timings(lambda f: [truth(r.when, f) for r in pack.rules], prepared)
    compiled = compiled_pack(pack)
    fired_rules = [[r for r in compiled.rules if r.id in matcher.match(e)] for e in engine_facts]
    work = list(zip(prepared, fired_rules))
    cc_med, cc_p99 = timings(lambda f: [r.truth(f) for r in compiled.rules], prepared)
    check_med, check_p99 = timings(lambda fw: [r.truth(fw[0]) for r in fw[1]], work)
    ev_med, ev_p99 = timings(lambda fw: [r.verdict(fw[0]) for r in fw[1]], work)

    print(f"pack: {pack.name} {pack.version}: {len(pack.rules)} rules in shards of {matcher.shard_sizes}; "
          f"{len(states)} varied states, {fired:.1f} recommendations per state on average")
    print(f"{'':38}{'median µs':>10}{'p99 µs':>10}{'x baseline':>12}")
    print(f"{'evaluate(), first sight':38}{first_med:>10.1f}{first_p99:>10.1f}{first_med / bare_med:>12.2f}")
    print(f"{'evaluate(), warm (the same states again)':38}{med:>10.1f}{p99:>10.1f}{med / bare_med:>12.2f}")
    print(f"{'baseline: bare durable-rules match':38}{bare_med:>10.1f}{bare_p99:>10.1f}{1:>12.2f}")
    print(f"{'baseline: plain-Python truth, all rules':38}{py_med:>10.1f}{py_p99:>10.1f}{py_med / bare_med:>12.2f}")
    print(f"{'compiled truth, all rules':38}{cc_med:>10.1f}{cc_p99:>10.1f}{cc_med / bare_med:>12.2f}")
    print(f"{'check of the fired rules (truth only)':38}{check_med:>10.1f}{check_p99:>10.1f}{check_med / bare_med:>12.2f}")
    print(f"{'evidence of the fired rules (+check)':38}{ev_med:>10.1f}{ev_p99:>10.1f}{ev_med / bare_med:>12.2f}")

    before = rss_mb()
    t0 = time.perf_counter()
    for i in range(args.memory_evaluations):
        evaluate(pack, states[i % len(states)], now=now)
    elapsed = time.perf_counter() - t0
    after = rss_mb()
    print(f"memory: RSS {before:.1f} MB before, {after:.1f} MB after {args.memory_evaluations:,} evaluations "
          f"({after - before:+.1f} MB; {elapsed:.1f} s, {elapsed / args.memory_evaluations * 1e6:.0f} µs each)")

    pressor = shutil.which("pressor") or str(Path(sys.executable).parent / "pressor")
    cli = wall_ms([pressor, "recommend", str(EXAMPLE), "--json", "--no-audit"], args.cli_runs)
    with tempfile.TemporaryDirectory() as tmp:  # never the user's real audit log
        audited = wall_ms([pressor, "recommend", str(EXAMPLE), "--json", "--audit-db", str(Path(tmp) / "audit.db")],
                          args.cli_runs)
    bare = wall_ms([sys.executable, "-c", "pass"], args.cli_runs)
    print(f"cli: `pressor recommend --json --no-audit` {cli:.0f} ms median of {args.cli_runs}; "
          f"with the audit record (two fsyncs) {audited:.0f} ms; baseline `python -c pass` {bare:.0f} ms ({cli / bare:.1f}x)")
    verdict = {
        "median_us": first_med <= TARGETS["median_us"],
        "p99_us": first_p99 <= TARGETS["p99_us"],
        "cli_ms": cli <= TARGETS["cli_ms"],
    }
    print("targets: " + ", ".join(f"{k} <= {TARGETS[k]}: {'met' if ok else 'MISSED'}" for k, ok in verdict.items()))


if __name__ == "__main__":
    main()
