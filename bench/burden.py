"""What a clinician would read per call: burden figures from ``pressor recommend --batch`` output.

    pressor recommend --batch states.jsonl --json --no-audit --now 2026-12-07T12:00:00Z > results.jsonl
    python bench/burden.py results.jsonl [--meta meta.jsonl] [--json] [--top 15]

Each input line is one batch line (``{"index", "source", "ok", "result": {...}}``); a bare result
object (``{"recommendations": ...}``) is read too. Lines with ``ok: false`` are counted as errors and
left out of every other figure.

Per call (one patient state), what a clinician would read:

- firm: the firm recommendations (``recommendations``);
- conditional: the "If ..." items (``conditional``);
- questions: the questions (``ask_next``);
- read = firm + conditional + questions.

When a result has a ``plan`` (the lead's change), the plan decides what is shown, and only what it
marks shown is counted. The shape read, defensively (a missing key is an empty list, a missing
``shown`` is shown)::

    plan: {items: [{decision, status: firm | conditional | ..., shown: bool, rule_id, ...}],
           questions: [{fact, shown?, ...}], supporting: [...], bans: [...]}

firm = shown items with status "firm", conditional = shown items with status "conditional", read =
every shown item + every shown question (``supporting`` and ``bans`` are not counted as read: they
are folded under the items they support).

Contradictions, among the firm items of one call:

- two MAP targets: two or more different rules that give a MAP target (``target.*`` except the
  ``target.no-*`` rules, which only say what not to aim for);
- volume first beside start/up: a "volume first / no routine vasopressor" item (``VOLUME_FIRST``, or
  a summary saying "no routine vasopressor") beside an item that starts or raises a vasopressor
  (``START_OR_UP``).

The counting functions (``count_call``, ``summarise``) are pure and importable.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

NOT_A_TARGET_PREFIX = "target.no-"  # target.no-map-85 says what not to aim for; it sets no target
VOLUME_FIRST = frozenset({"hypovolemia.volume-first"})
VOLUME_FIRST_WORDS = "no routine vasopressor"
START_OR_UP = frozenset({
    "norepinephrine.start", "norepinephrine.start-emergency", "norepinephrine.start-pediatric",
    "norepinephrine.titrate", "escalation.add-vasopressin", "escalation.add-epinephrine",
    "escalation.add-vasopressin-pediatric",
})


def gives_map_target(rule_id: str) -> bool:
    return rule_id.startswith("target.") and not rule_id.startswith(NOT_A_TARGET_PREFIX)


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _shown(item: Any) -> bool:
    return not isinstance(item, Mapping) or item.get("shown", True) is not False


def _fact(question: Any) -> str:
    if isinstance(question, Mapping):
        return str(question.get("fact") or question.get("id") or question.get("question") or "?")
    return str(question)


def count_call(result: Mapping[str, Any]) -> dict[str, Any]:
    """The burden of one result: counts, the questions' facts, the firm and conditional rule ids."""
    plan = result.get("plan")
    if isinstance(plan, Mapping):
        items = [i for i in _list(plan.get("items")) if isinstance(i, Mapping) and _shown(i)]
        firm = [i for i in items if i.get("status") == "firm"]
        conditional = [i for i in items if i.get("status") == "conditional"]
        questions = [q for q in _list(plan.get("questions")) if _shown(q)]
        read = len(items) + len(questions)
        source = "plan"
    else:
        firm = [i for i in _list(result.get("recommendations")) if isinstance(i, Mapping)]
        conditional = [i for i in _list(result.get("conditional")) if isinstance(i, Mapping)]
        questions = _list(result.get("ask_next"))
        read = len(firm) + len(conditional) + len(questions)
        source = "result"
    firm_ids = [str(i.get("rule_id", "?")) for i in firm]
    targets = {r for r in firm_ids if gives_map_target(r)}
    volume_first = any(str(i.get("rule_id")) in VOLUME_FIRST
                       or VOLUME_FIRST_WORDS in str(i.get("summary", "")).lower() for i in firm)
    start_or_up = any(r in START_OR_UP for r in firm_ids)
    return {
        "source": source,
        "firm": len(firm),
        "conditional": len(conditional),
        "questions": len(questions),
        "read": read,
        "question_facts": sorted({_fact(q) for q in questions}),
        "firm_rule_ids": firm_ids,
        "conditional_rule_ids": [str(i.get("rule_id", "?")) for i in conditional],
        "two_map_targets": len(targets) >= 2,
        "volume_first_beside_start_or_up": volume_first and start_or_up,
        "warnings": len(_list(result.get("warnings"))),
        "not_evaluable": len(_list(result.get("not_evaluable"))),
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])


def _dist(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 0.5), "p90": percentile(values, 0.9),
            "mean": round(statistics.fmean(values), 3) if values else 0.0, "max": max(values, default=0)}


def summarise(calls: Iterable[Mapping[str, Any]], errors: int = 0, stays: list[Any] | None = None,
              top: int = 15) -> dict[str, Any]:
    """Figures over many ``count_call`` outputs. ``stays``: the stay of each call, in order (for the
    per-stay figures and how often a question is asked again the next hour of the same stay)."""
    calls = list(calls)
    n = len(calls)
    pct = (lambda k: round(100 * k / n, 2)) if n else (lambda k: 0.0)
    asked: Counter[str] = Counter(f for c in calls for f in c["question_facts"])
    firm_ids: Counter[str] = Counter(r for c in calls for r in set(c["firm_rule_ids"]))
    cond_ids: Counter[str] = Counter(r for c in calls for r in set(c["conditional_rule_ids"]))
    out: dict[str, Any] = {
        "states": n,
        "errors": errors,
        "counted_from_plan": sum(c["source"] == "plan" for c in calls),
        "read_per_call": _dist([c["read"] for c in calls]),
        "firm_per_call": _dist([c["firm"] for c in calls]),
        "if_items_per_call": _dist([c["conditional"] for c in calls]),
        "questions_per_call": _dist([c["questions"] for c in calls]),
        "calls_with_nothing_to_read_pct": pct(sum(c["read"] == 0 for c in calls)),
        "two_map_targets_pct": pct(sum(c["two_map_targets"] for c in calls)),
        "two_map_targets_states": sum(c["two_map_targets"] for c in calls),
        "volume_first_beside_start_or_up_pct": pct(sum(c["volume_first_beside_start_or_up"] for c in calls)),
        "volume_first_beside_start_or_up_states": sum(c["volume_first_beside_start_or_up"] for c in calls),
        "questions_asked_pct": {f: pct(k) for f, k in asked.most_common()},
        "top_firm_rules_pct": {r: pct(k) for r, k in firm_ids.most_common(top)},
        "top_conditional_rules_pct": {r: pct(k) for r, k in cond_ids.most_common(top)},
    }
    if stays is not None and len(stays) == n:
        per_stay: dict[Any, list[int]] = {}
        again = pairs = 0
        for i, (stay, call) in enumerate(zip(stays, calls)):
            per_stay.setdefault(stay, []).append(call["read"])
            if i and stays[i - 1] == stay:
                before = set(calls[i - 1]["question_facts"])
                pairs += len(before)
                again += len(before & set(call["question_facts"]))
        out["stays"] = len(per_stay)
        out["read_per_call_stay_mean"] = _dist([statistics.fmean(v) for v in per_stay.values()])
        out["question_asked_again_next_hour_pct"] = round(100 * again / pairs, 2) if pairs else 0.0
    return out


def read_results(path: Path) -> tuple[list[dict[str, Any]], list[int], int]:
    """The results of a batch output file, their line indexes, and how many lines were errors."""
    results, indexes, errors = [], [], 0
    with path.open() as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            record = json.loads(line)
            if "result" in record or "ok" in record:
                if not record.get("ok", True) or not isinstance(record.get("result"), Mapping):
                    errors += 1
                    continue
                results.append(record["result"])
                indexes.append(record.get("index", number))
            else:
                results.append(record)
                indexes.append(number)
    return results, indexes, errors


def table(summary: Mapping[str, Any]) -> str:
    lines = [f"states: {summary['states']}  (errors left out: {summary['errors']}; "
             f"counted from a plan: {summary['counted_from_plan']})"]
    if "stays" in summary:
        lines.append(f"stays: {summary['stays']}")
    lines.append(f"{'per call':34s} {'p50':>6s} {'p90':>6s} {'mean':>7s} {'max':>5s}")
    for key, label in (("read_per_call", "items read (firm + If + questions)"), ("firm_per_call", "firm"),
                       ("if_items_per_call", '"If ..." items'), ("questions_per_call", "questions")):
        d = summary[key]
        lines.append(f"{label:34s} {d['p50']:6g} {d['p90']:6g} {d['mean']:7.2f} {d['max']:5g}")
    if "read_per_call_stay_mean" in summary:
        d = summary["read_per_call_stay_mean"]
        lines.append(f"{'items read, mean per stay':34s} {d['p50']:6.1f} {d['p90']:6.1f} {d['mean']:7.2f} {d['max']:5.1f}")
        lines.append(f"a question asked again the next hour of the stay: {summary['question_asked_again_next_hour_pct']}%")
    lines.append(f"calls with nothing to read: {summary['calls_with_nothing_to_read_pct']}%")
    lines.append(f"two different MAP targets (firm): {summary['two_map_targets_pct']}% "
                 f"({summary['two_map_targets_states']} states)")
    lines.append(f"volume first beside start/titrate up (firm): {summary['volume_first_beside_start_or_up_pct']}% "
                 f"({summary['volume_first_beside_start_or_up_states']} states)")
    for key, label in (("questions_asked_pct", "questions asked (% of states)"),
                       ("top_firm_rules_pct", "most frequent firm rules (% of states)"),
                       ("top_conditional_rules_pct", 'most frequent "If ..." rules (% of states)')):
        lines.append(label + ":")
        lines.extend(f"  {v:6.2f}%  {k}" for k, v in summary[key].items())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="pressor recommend --batch --json output")
    parser.add_argument("--meta", type=Path, help="mimic_hourly.py --meta output (one line per state, same order)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--top", type=int, default=15, help="how many rule ids to list")
    args = parser.parse_args(argv)
    results, indexes, errors = read_results(args.results)
    stays = None
    if args.meta:
        meta = [json.loads(line) for line in args.meta.open() if line.strip()]
        stays = [meta[i]["stay_id"] if i < len(meta) else None for i in indexes]
    summary = summarise((count_call(r) for r in results), errors=errors, stays=stays, top=args.top)
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
