"""The plan view of a result, for people: one answer per decision in the order one acts on it, the bans
that matter, at most three questions, and a count of what the view leaves out (``--all`` shows it)."""
from __future__ import annotations

import textwrap
from typing import Any

from .evaluation.logic import SET_ASIDE
from .report_lines import BADGE as _BADGE, MARK as _MARK, because_line, citations, dose_lines

Line = tuple[str, dict[str, Any]]


def plan_lines(data: dict[str, Any]) -> list[Line]:
    """The plan of a result's JSON (``data["plan"]`` present) as (line, click style) pairs."""
    plan = data["plan"]
    recs = {r["rule_id"]: r for r in data["recommendations"]}
    out: list[Line] = [("", {})]
    if data["pack"].get("release") == "validation":
        out.append(("VALIDATION RELEASE: the rules are in review, without a recorded clinical sign-off; for shadow use "
                    "or with a clinician checking every answer", {"fg": "yellow", "bold": True}))
        out.append(("", {}))
    if plan["outside_protocol"]:
        rec = recs[plan["outside_protocol"]]
        out.append(("OUTSIDE THIS PROTOCOL", {"fg": "red", "bold": True}))
        out += _advice(rec)
        out += [(f"     {line}", {}) for line in textwrap.wrap(rec["detail"], 96)]
        out += [(f"     {line}", {}) for line in dose_lines(rec["dose"])] if rec.get("dose") else []
        out += _notes(data, decided=False)
        return out
    set_aside = [w for w in data["warnings"] if w.startswith(SET_ASIDE)]
    if plan.get("others") or set_aside:  # a reading set aside, fired rules outside every decision: first
        out.append(("FIRST", {"bold": True}))
        out += [(f" ! {w[len(SET_ASIDE):]}", {"fg": "yellow"}) for w in set_aside]
        for rid in plan.get("others", ()):
            out += _advice(recs[rid])
        out.append(("", {}))
    out.append(("PLAN", {"bold": True}))
    if not plan["items"]:
        out.append(("  nothing to decide yet for this patient state", {}))
    for n, item in enumerate(plan["items"], 1):
        out += _item(n, item, recs, data.get("decided_for_any_value"))
    bans = [recs[rid] for rid in plan["bans"]]
    if bans:
        out.append(("", {}))
        out.append(("DO NOT", {"bold": True}))
        for rec in bans:
            out += _advice(rec)
    if plan["questions"]:
        asks = {a["fact"]: a for a in data.get("ask_next", [])}
        out.append(("", {}))
        out.append(("ASK (each answer changes the plan)", {"bold": True}))
        for i, fact in enumerate(plan["questions"], 1):
            out.append((f" {i}. {asks[fact]['question']}", {}))
    out += _notes(data)
    return out


def _item(n: int, item: dict[str, Any], recs: dict[str, dict[str, Any]], decided: dict[str, Any] | None = None) -> list[Line]:
    out: list[Line] = [("", {})]
    status = {"firm": "", "conditional": " (unless below)", "undecided": " (depends on the answers below)"}[item["status"]]
    if item["rule_id"] is None:
        out.append((f" {n}. {item['title']}{status}", {"bold": True}))
        for u in item["unless"]:
            out.append((f"     if {u['if']}: {u['summary']}", {}))
        return out
    rec = recs[item["rule_id"]]
    label, colour = _BADGE[rec["severity"]]
    style = {"fg": colour, "bold": True} if rec["severity"] == "critical" else {"bold": True}
    out.append((f" {n}. {item['title']}{status}: {rec['summary']} {citations(rec['citations'])}", style))
    out.append((f"     {rec['rule_id']} v{rec['rule_version']} ({label.lower()}); because "
                + because_line(rec["evidence"], decided), {"dim": True}))
    if "dose" in rec:
        out.extend((f"     {line}", {}) for line in dose_lines(rec["dose"]))
    for u in item["unless"]:
        out.append((f"     UNLESS {u['if']}: {u['summary']}", {"fg": "yellow"}))
    for rid in item["supporting"]:
        sup = recs[rid]
        out.append((f"     {_MARK[sup['kind']]} {sup['summary']} {citations(sup['citations'])}", {}))
        if "dose" in sup:
            out.extend((f"       {line}", {}) for line in dose_lines(sup["dose"]))
    for s in item["set_aside"]:
        out.append((f"     set aside: {s['rule_id']} ({s['because']})", {"dim": True}))
    return out


def _advice(rec: dict[str, Any]) -> list[Line]:
    return [(f" {_MARK[rec['kind']]} {rec['summary']} {citations(rec['citations'])}", {}),
            (f"     {rec['rule_id']} v{rec['rule_version']} ({rec['severity']})", {"dim": True})]


def _notes(data: dict[str, Any], decided: bool = True) -> list[Line]:
    """The closing notes; ``decided``: say which verdicts every value of a missing fact gives (not for a
    patient outside the protocol, whose advice none of them changes)."""
    out: list[Line] = []
    decided_for = (data.get("decided_for_any_value") or {}) if decided else {}
    for name, inputs in decided_for.items():
        out.append((f"note: {name} is {str(data['derived'][name]).lower()} for any value of {', '.join(inputs)} "
                    f"(not recorded)", {"dim": True}))
    left_out = data["plan"]["set_aside_count"]
    if left_out:
        out.append(("", {}))
        out.append((f"{left_out} more item{'s' if left_out != 1 else ''} not shown (set aside, not relevant here, or "
                    f"waiting on facts that change nothing above): pressor recommend --all shows everything", {"dim": True}))
    for warning in data["warnings"]:
        if not warning.startswith(SET_ASIDE):  # printed first
            out.append((f"note: {warning}", {"fg": "yellow"}))
    out.append(("Citations marked ? are cited by the source but absent from its reference list.", {"dim": True}))
    return out
