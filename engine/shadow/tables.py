"""The shadow run's figures: tables (CSV text, deterministic) and the JSON summary, from the course outputs.

Everything here is a pure function of the course outputs in course order, so a run on processes and
a run on Dask give byte-identical tables. Rule texts are not repeated per line: ``rules.csv`` holds
each rule's title and severity once, and the other tables name rules by id (shared texts by reference).
"""
from __future__ import annotations

import csv
import io
import math
import random
import statistics
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

from .concordance import advised, course_concordance

#: Hours during which a card already shown for a stay is not shown again (repeat suppression).
SUPPRESS_HOURS = 4
NOT_A_TARGET_PREFIX = "target.no-"
VOLUME_FIRST = frozenset({"hypovolemia.volume-first"})
START_OR_UP = frozenset({"norepinephrine.start", "norepinephrine.start-emergency", "norepinephrine.start-pediatric",
                         "norepinephrine.titrate", "escalation.add-vasopressin", "escalation.add-epinephrine",
                         "escalation.add-vasopressin-pediatric"})
START_OR_UP_VS_DOWN = (frozenset({"norepinephrine.titrate"}), frozenset({"norepinephrine.wean"}))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def contradictions(row: dict[str, Any]) -> list[str]:
    """Two answers of one call that contradict each other (among its firm items)."""
    firm = advised(row)
    out = []
    targets = sorted({r for r in firm if r.startswith("target.") and not r.startswith(NOT_A_TARGET_PREFIX)})
    if len(targets) >= 2:
        out.append("two MAP targets: " + ", ".join(targets))
    if VOLUME_FIRST & set(firm) and START_OR_UP & set(firm):
        out.append("volume first beside " + ", ".join(sorted(START_OR_UP & set(firm))))
    up, down = START_OR_UP_VS_DOWN
    if up & set(firm) and down & set(firm):
        out.append("titrate up beside wean")
    return out


def suppressed_cards(rows: list[dict[str, Any]], hours: float = SUPPRESS_HOURS) -> list[list[list[str]]]:
    """Per row of one course, the cards still shown when a card shown in the last ``hours`` is not shown again."""
    last_shown: dict[str, datetime] = {}
    out = []
    for row in rows:
        t = _t(row["t"])
        kept = []
        for card in row.get("cards", ()):
            seen = last_shown.get(card[0])
            if seen is None or t - seen >= timedelta(hours=hours):
                kept.append(card)
                last_shown[card[0]] = t
        out.append(kept)
    return out


def _csv(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else (f"{v:.4g}" if isinstance(v, float) else v) for v in row])
    return buffer.getvalue()


def build(courses: list[dict[str, Any]], pack: Any, *, detectors: tuple[dict[str, Any], ...] = (),
          seed: int = 20) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """(summary, tables by file name, what the report needs beyond them) of a run."""
    rules = {r.id: r for r in pack.rules}
    hours = [(c, row) for c in courses for row in c["rows"]]
    answered = [(c, row) for c, row in hours if not row.get("refused")]
    n = len(hours)
    firm_h: Counter[str] = Counter()
    cond_h: Counter[str] = Counter()
    card_h: Counter[str] = Counter()
    stays_with: dict[str, set[str]] = defaultdict(set)
    per_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # rule -> stay -> firm hours
    cards_per_call, cards_suppressed_per_call = [], []
    by_kind: Counter[str] = Counter()
    by_kind_suppressed: Counter[str] = Counter()
    asked: Counter[str] = Counter()
    asked_shown: Counter[str] = Counter()
    cost: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # fact -> [items decided, critical hours]
    dq: Counter[str] = Counter()
    dq_rows: list[list[Any]] = []
    consistency: list[list[Any]] = []
    hour_rows: list[list[Any]] = []
    stay_hours: Counter[str] = Counter()
    for c in courses:
        kept = suppressed_cards(c["rows"])
        stay_hours[c["id"]] = len(c["rows"])
        for row, kept_cards in zip(c["rows"], kept):
            for note in row.get("dq", ()) + row.get("dropped", ()):
                kind = note.split(" ", 1)[0].rstrip(":")
                dq[kind] += 1
                dq_rows.append([c["id"], row["t"], note])
            if row.get("refused"):
                hour_rows.append([c["id"], row["k"], row["t"], row["map"], "", "", "", "", "", 1])
                continue
            firm_ids = sorted({f[0] for f in row["firm"]})
            cond_ids = sorted({f[0] for f in row["conditional"]} - set(firm_ids))
            card_ids = sorted({c[2] for c in row["cards"] if c[2]})
            for r in firm_ids:
                firm_h[r] += 1
                stays_with[r].add(c["id"])
                per_day[r][c["id"]] += 1
            for r in cond_ids:
                cond_h[r] += 1
            for r in card_ids:
                card_h[r] += 1
            cards_per_call.append(len(row["cards"]))
            cards_suppressed_per_call.append(len(kept_cards))
            by_kind.update(c[1] for c in row["cards"])
            by_kind_suppressed.update(c[1] for c in kept_cards)
            for fact, decides, worst, shown in row["questions"]:
                asked[fact] += 1
                asked_shown[fact] += bool(shown)
                cost[fact][0] += decides
                cost[fact][1] += worst == "critical"
            for text in contradictions(row):
                consistency.append([c["id"], row["t"], text])
            hour_rows.append([c["id"], row["k"], row["t"], row["map"], " ".join(firm_ids), len(row["conditional"]),
                              len(row["questions"]), len(row["cards"]), len(kept_cards), 0])
    refused = sum(1 for _, row in hours if row.get("refused"))
    pct = (lambda k: round(100 * k / n, 2)) if n else (lambda k: 0.0)
    all_rules = sorted(set(firm_h) | set(cond_h) | set(card_h))
    rule_rows = []
    summary_rules = {}
    for r in all_rules:
        # Firm hours per patient-day, across the stays in which the rule is firm at least once: how often it
        # speaks for a patient it speaks for (over every stay, most rules' median would be 0).
        days = [per_day[r][s] / max(stay_hours[s] / 24, 1 / 24) for s in sorted(stays_with[r])]
        rule_rows.append([r, rules[r].severity if r in rules else "", rules[r].title if r in rules else "",
                          firm_h[r], cond_h[r], card_h[r], pct(firm_h[r]), pct(cond_h[r]), pct(card_h[r]),
                          len(stays_with[r]), round(percentile(days, 0.5), 2), round(percentile(days, 0.9), 2)])
        summary_rules[r] = {"firm": firm_h[r], "conditional": cond_h[r], "card": card_h[r], "stays_firm": len(stays_with[r]),
                            "firm_per_patient_day": {"p50": round(percentile(days, 0.5), 2), "p90": round(percentile(days, 0.9), 2)}}
    detector_rows: list[list[Any]] = []
    conc_rows: list[list[Any]] = []
    conc: defaultdict[str, dict[str, list[Any]]] = defaultdict(lambda: {"advised": [0, 0, []], "acted": [0, 0]})
    for c in courses:
        for e in course_concordance(c, detectors):
            conc_rows.append([e["detector"], e["way"], e["stay"], e["t"], int(e["matched"]), e["minutes"]])
            slot = conc[e["detector"]][e["way"]]
            slot[0] += 1
            slot[1] += e["matched"]
            if e["way"] == "advised" and e["minutes"] is not None:
                slot[2].append(e["minutes"])
    labels = {d["id"]: d for d in detectors}
    summary_conc = {}
    for d in detectors:
        a, t = conc[d["id"]]["advised"], conc[d["id"]]["acted"]
        summary_conc[d["id"]] = {"label": d["label"], "advised_hours": a[0], "acted_within_window": a[1],
                                 "acted_within_window_pct": round(100 * a[1] / a[0], 1) if a[0] else None,
                                 "median_minutes_to_action": percentile(a[2], 0.5) if a[2] else None,
                                 "team_actions": t[0], "team_actions_advised": t[1],
                                 "team_actions_advised_pct": round(100 * t[1] / t[0], 1) if t[0] else None,
                                 "within_hours": d["within_hours"]}
        detector_rows.append([d["id"], d["label"], " ".join(d["rules"]), d["drug"], " ".join(d["change"]), d["within_hours"],
                              a[0], a[1], summary_conc[d["id"]]["median_minutes_to_action"], t[0], t[1]])
    summary: dict[str, Any] = {
        "patient_hours": n,
        "answered": len(answered),
        "refused": refused,
        "stays": len(courses),
        "values_dropped": sum(len(row.get("dropped", ())) for _, row in hours),
        "data_quality_notes": sum(dq.values()),
        "cards_per_call": {"p50": percentile(cards_per_call, 0.5), "p90": percentile(cards_per_call, 0.9),
                           "mean": round(statistics.fmean(cards_per_call), 3) if cards_per_call else 0.0},
        "cards_per_call_with_suppression": {"p50": percentile(cards_suppressed_per_call, 0.5),
                                            "p90": percentile(cards_suppressed_per_call, 0.9),
                                            "mean": round(statistics.fmean(cards_suppressed_per_call), 3) if cards_suppressed_per_call else 0.0,
                                            "suppress_hours": SUPPRESS_HOURS},
        "cards_per_hour_by_kind": {k: round(by_kind[k] / max(len(answered), 1), 3) for k in sorted(by_kind)},
        "cards_per_hour_by_kind_with_suppression": {k: round(by_kind_suppressed[k] / max(len(answered), 1), 3)
                                                    for k in sorted(by_kind_suppressed)},
        "contradictions": len(consistency),
        "rules": summary_rules,
        "questions": {f: {"hours": asked[f], "pct": pct(asked[f]), "hours_shown": asked_shown[f], "items_decided": cost[f][0],
                          "hours_deciding_critical": cost[f][1]} for f in sorted(asked, key=lambda f: (-asked[f], f))},
        "concordance": summary_conc,
    }
    tables = {
        "rules.csv": _csv(["rule_id", "severity", "title", "firm_hours", "conditional_hours", "card_hours", "firm_pct",
                           "conditional_pct", "card_pct", "stays_firm", "firm_per_patient_day_p50",
                           "firm_per_patient_day_p90"], rule_rows),
        "hours.csv": _csv(["stay", "hour", "t", "map_mmhg", "firm", "conditional", "questions", "cards",
                           "cards_after_suppression", "refused"], hour_rows),
        "questions.csv": _csv(["fact", "hours_missing_and_asked", "pct_of_hours", "hours_shown", "items_decided",
                               "hours_deciding_critical"],
                              [[f, asked[f], pct(asked[f]), asked_shown[f], cost[f][0], cost[f][1]] for f in summary["questions"]]),
        "cards_by_kind.csv": _csv(["kind", "cards", "per_hour", "cards_with_suppression", "per_hour_with_suppression"],
                                  [[k, by_kind[k], summary["cards_per_hour_by_kind"].get(k, 0.0), by_kind_suppressed[k],
                                    summary["cards_per_hour_by_kind_with_suppression"].get(k, 0.0)] for k in sorted(by_kind)]),
        "data_quality.csv": _csv(["stay", "t", "note"], dq_rows),
        "consistency.csv": _csv(["stay", "t", "finding"], consistency),
        "concordance.csv": _csv(["detector", "way", "stay", "t", "matched", "minutes_to_action"], conc_rows),
        "detectors.csv": _csv(["detector", "label", "rules", "drug", "change", "within_hours", "advised_hours",
                               "acted_within_window", "median_minutes_to_action", "team_actions", "team_actions_advised"],
                              detector_rows),
    }
    extra = {"cases": cases(courses, rules, conc_rows, labels, seed=seed), "dq_kinds": dq.most_common(20),
             "consistency": consistency}
    return summary, tables, extra


def _next_care(course: dict[str, Any], t: datetime, hours: int = 6) -> list[str]:
    """What the team did in the ``hours`` after ``t``: rate changes, and the MAP at each hour."""
    out = []
    for drug, at, rate in course["care"]:
        when = _t(at)
        if t < when <= t + timedelta(hours=hours):
            out.append(f"+{(when - t).total_seconds() / 60:.0f} min: {drug} {rate:.3g}")
    maps = [f"{row['map']:g}" if row.get("map") is not None else "?" for row in course["rows"]
            if t < _t(row["t"]) <= t + timedelta(hours=hours)]
    out.append("MAP by hour: " + (" ".join(maps) if maps else "none charted"))
    return out


def cases(courses: list[dict[str, Any]], rules: dict[str, Any], conc_rows: list[list[Any]], detectors: dict[str, Any],
          *, seed: int = 20, per_list: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Case lists for clinical review: the most severe firings, the most discordant, a random sample."""
    by_id = {c["id"]: c for c in courses}
    rank = {"critical": 0, "warning": 1, "info": 2}

    def case(c: dict[str, Any], row: dict[str, Any], why: str) -> dict[str, Any]:
        return {"stay": c["id"], "t": row["t"], "hour": row["k"], "why": why, "map": row.get("map"),
                "rates": row.get("rates", {}), "firm": advised(row),
                "questions": [q[0] for q in row.get("questions", ())][:3], "next_6h": _next_care(c, _t(row["t"]))}

    severe = []
    for c in courses:
        for row in c["rows"]:
            shown = set(advised(row))
            crit = [f for f in row.get("firm", ()) if f[1] == "critical" and f[0] in shown]
            if crit:
                severe.append((len(crit), c["id"], row["k"], c, row, ", ".join(sorted({f[0] for f in crit}))))
    severe.sort(key=lambda s: (-s[0], s[1], s[2]))
    seen_stays: set[str] = set()
    most_severe = []
    for _, stay, _, c, row, ids in severe:  # one case per stay: the list shows breadth, not one long stay
        if stay not in seen_stays:
            seen_stays.add(stay)
            most_severe.append(case(c, row, f"critical: {ids}"))
        if len(most_severe) >= per_list:
            break
    # Most discordant: advice the team did not follow within the window, the most severe rule first, then
    # the lowest MAP (where not acting mattered most), one case per stay and item.
    discordant = []
    for detector, way, stay, t, matched, _ in conc_rows:
        if way == "advised" and not matched:
            row = next(r for r in by_id[stay]["rows"] if r["t"] == t)
            worst = min((rank.get(f[1], 3) for f in row.get("firm", ()) if f[0] in detectors[detector]["rules"]
                         and f[0] in advised(row)), default=3)
            discordant.append((worst, row.get("map") if row.get("map") is not None else 999, stay, t, detector))
    discordant.sort()
    picked, seen_pairs = [], set()
    for _, _, stay, t, detector in discordant:
        if (stay, detector) in seen_pairs:
            continue
        seen_pairs.add((stay, detector))
        c = by_id[stay]
        row = next(r for r in c["rows"] if r["t"] == t)
        label = detectors[detector]["label"]
        picked.append(case(c, row, f"advised '{label}'; no matching change within {detectors[detector]['within_hours']:g} h"))
        if len(picked) >= per_list:
            break
    everything = [(c, row) for c in courses for row in c["rows"] if not row.get("refused")]
    sample = random.Random(seed).sample(everything, min(per_list, len(everything)))
    return {"most_severe": most_severe, "most_discordant": picked,
            "random_sample": [case(c, row, "random") for c, row in sample]}
