"""Two packs (or two profiles) over the same cohort: which patient-hours change, per rule and plan item.

The runs are compared hour by hour (same course, same evaluation time). A rule "changes" an hour when
it is firm in one run and not the other, or an "If ..." item in one and not the other; a plan item
changes when its answer differs. Each change keeps a few examples (stay and time).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from .tables import _csv

EXAMPLES = 3


def compare(base: list[dict[str, Any]], other: list[dict[str, Any]], *, base_label: str,
            other_label: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(summary, tables) of what changes between two runs over the same courses."""
    other_rows = {(c["id"], r["t"]): r for c in other for r in c["rows"]}
    changed = {"any": 0, "firm": 0, "cards": 0, "plan": 0}
    total = 0
    per: dict[tuple[str, str, str], list[Any]] = defaultdict(lambda: [0, []])  # (what, id, change) -> [hours, examples]
    for c in base:
        for row in c["rows"]:
            total += 1
            new = other_rows.get((c["id"], row["t"]))
            if new is None or row.get("refused") or new.get("refused"):
                continue
            kinds = set()
            for what, key in (("firm", "firm"), ("if", "conditional")):
                a = {f[0] for f in row.get(key, ())}
                b = {f[0] for f in new.get(key, ())}
                for rid in sorted(a - b):
                    _add(per, (what, rid, "only in " + base_label), c["id"], row["t"])
                    kinds.add(what)
                for rid in sorted(b - a):
                    _add(per, (what, rid, "only in " + other_label), c["id"], row["t"])
                    kinds.add(what)
            if {c[0] for c in row.get("cards", ())} != {c[0] for c in new.get("cards", ())}:
                kinds.add("cards")
            a_items = {(i[0], i[1], i[2]) for i in row.get("items", ())}
            b_items = {(i[0], i[1], i[2]) for i in new.get("items", ())}
            for decision, rid, status in sorted(a_items ^ b_items):
                side = base_label if (decision, rid, status) in a_items else other_label
                _add(per, ("plan", f"{decision}: {rid} ({status})", "only in " + side), c["id"], row["t"])
                kinds.add("plan")
            changed["any"] += bool(kinds)
            for k in ("firm", "cards", "plan"):
                changed[k] += k in kinds
    rows = sorted(([what, rid, change, v[0], " ".join(f"{s}@{t}" for s, t in v[1])] for (what, rid, change), v in per.items()),
                  key=lambda r: (-r[3], r[0], r[1], r[2]))
    pct = (lambda k: round(100 * k / total, 2)) if total else (lambda k: 0.0)
    summary = {"base": base_label, "other": other_label, "patient_hours": total,
               "changed_hours": changed["any"], "changed_pct": pct(changed["any"]),
               "changed_hours_firm": changed["firm"], "changed_firm_pct": pct(changed["firm"]),
               "changed_hours_cards": changed["cards"], "changed_cards_pct": pct(changed["cards"]),
               "changed_hours_plan": changed["plan"],
               "changes": [{"what": r[0], "id": r[1], "change": r[2], "hours": r[3], "examples": r[4].split()} for r in rows]}
    return summary, {"compare.csv": _csv(["what", "id", "change", "hours", "examples"], rows)}


def _add(per: dict, key: tuple[str, str, str], stay: str, t: str) -> None:
    slot = per[key]
    slot[0] += 1
    if len(slot[1]) < EXAMPLES:
        slot[1].append((stay, t))
