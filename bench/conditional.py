"""Benchmark of conditional advice and ask-next (``residual.py``), each figure beside a baseline
from the same run: ``evaluate`` with the when-facts-are-missing analysis, and the same call with
that analysis switched off (the cost of evaluate before it existed).

Prints median and p99 µs per evaluate for full states (every fact present: nothing is undecided,
so the analysis must cost nothing), sparse states (each fact present with probability 0.5) and the
issue's two patients; and the first-call cost of a residual never seen before (the solver's answer
is cached per pack). Shared machines are noisy: read the ratios, not absolute times across runs.

    python bench/conditional.py [--states 2000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from pressor.engine.evaluation import evaluate as evaluate_module
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.pack import load_pack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from evaluate import random_states, varied_states  # noqa: E402  the states bench/evaluate.py times
PATIENTS = [ROOT / "examples" / "septic-no-infusions.yaml", ROOT / "examples" / "pediatric-extremities-unknown.yaml"]
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def states(n: int, present: float, seed: int) -> list[dict]:
    """``n`` valid states, each fact present with probability ``present``, plausible pressures (DBP < MAP < SBP)."""
    return random_states(n, present, seed, plausible_pressures=True)


def _best(pack, item, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        evaluate(pack, item, now=NOW)
        best = min(best, (time.perf_counter_ns() - t0) / 1000)
    return best


def paired(pack, items, rounds: int = 3) -> tuple[list[float], list[float]]:
    """µs per ``evaluate`` without and with the analysis, measured alternately state by state (best of
    ``rounds`` each), so that the machine's load hits both alike."""
    real = evaluate_module._when_missing
    off = lambda *a, **k: ((), (), ())  # noqa: E731  the baseline: evaluate before the analysis existed
    base, new = [], []
    try:
        for item in items:
            evaluate_module._when_missing = off
            base.append(_best(pack, item, rounds))
            evaluate_module._when_missing = real
            new.append(_best(pack, item, rounds))
    finally:
        evaluate_module._when_missing = real
    return base, new


def _stats(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.99) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=2000)
    args = parser.parse_args()
    pack = load_pack(None)
    full = states(args.states, 1.0, seed=1)
    sparse = states(args.states, 0.5, seed=2)
    varied = varied_states(args.states)
    patients = [yaml.safe_load(p.read_text()) for p in PATIENTS]
    undecided = sum(bool(evaluate(pack, s, now=NOW).not_evaluable) for s in full)
    print(f"full states with anything undecided: {undecided} of {len(full)}")
    for label, items in (("full states", full), ("bench/evaluate.py's varied states", varied),
                         ("sparse states", sparse), ("the issue's two patients", patients * 100)):
        for item in items:  # warm the caches, as a running service would be
            evaluate(pack, item, now=NOW)
        base, new = paired(pack, items)
        (bm, bp), (nm, np_) = _stats(base), _stats(new)
        print(f"{label:34s} baseline median {bm:7.1f} µs p99 {bp:7.1f} | with analysis median {nm:7.1f} µs "
              f"p99 {np_:7.1f} | ratio median {nm / bm:.2f}, of sums {sum(new) / sum(base):.2f}")
    cold = load_pack(None)
    t0 = time.perf_counter()
    for item in sparse[:200]:
        evaluate(cold, item, now=NOW)
    first = (time.perf_counter() - t0) / 200 * 1e6
    ctx = cold.cache.residual
    print(f"cold cache: {first:.0f} µs per sparse state over the first 200 ({len(ctx._sat)} residuals solved and cached)")


if __name__ == "__main__":
    main()
