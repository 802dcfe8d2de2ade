"""Human-readable views shared by the CLI, the CDS Hooks cards and the web app: bedside text
(critical first, each line with its citations and dose) and a rule's resolved detail."""
from __future__ import annotations

from typing import Any

from .model import Result, Rule, RulePack
from .report_lines import BADGE as _BADGE, MARK as _MARK, because as _because, because_line, because_text, citations, dose_lines, num as _num, ordered_evidence, quantity, weight_phrase  # noqa: F401 (re-exported)


def profile_lines(profile: dict[str, Any]) -> list[str]:
    """The site profile a result was computed with: name, SHA-256 and every parameter changed from the default."""
    changed = ", ".join(f"{c['name']} = {_num(c['value'])} {c['unit']} (default {_num(c['default'])})" for c in profile["changed"])
    return [f"site profile: {profile['name']} (sha256 {profile['sha256'][:12]}); "
            + (f"changed: {changed}" if changed else "no parameter differs from the pack's defaults")]


def result_text(result: Result | dict[str, Any], *, color: bool = True, full: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The whole report as (line, click style) pairs; ``result`` may be a stored Result's JSON.

    With a plan (and not ``full``): the plan view (PLAN, BANS, ASK, then a count of what was left out);
    ``full``: every recommendation, conditional advice and question, as before plans.
    """
    data = result if isinstance(result, dict) else result.to_dict()
    pack = data["pack"]
    out: list[tuple[str, dict[str, Any]]] = [
        (f"pressor: {pack['name']} {pack['version']} (sha256 {pack['sha256'][:12]}), evaluated {data['evaluated_at']}", {"bold": True}),
    ]
    if pack.get("profile"):
        out += [(line, {"bold": True}) for line in profile_lines(pack["profile"])]
    if data.get("plan") is not None and not full:
        from .plan_report import plan_lines

        out += plan_lines(data)
        return out
    recs = data["recommendations"]
    if not recs:
        out.append(("No recommendation applies to this patient state.", {}))
    current = None
    for rec in recs:
        if rec["severity"] != current:
            current = rec["severity"]
            label, colour = _BADGE[current]
            out.append(("", {}))
            out.append((label, {"fg": colour, "bold": True}))
        mark = _MARK[rec["kind"]]
        draft = "" if rec["status"] == "approved" else f" [{rec['status'].upper()}]"
        out.append((f" {mark} {rec['summary']} {citations(rec['citations'])}{draft}", {"fg": _BADGE[rec["severity"]][1]} if rec["severity"] == "critical" else {}))
        out.append((f"     {rec['rule_id']} v{rec['rule_version']}; because "
                    + because_line(rec["evidence"], data.get("decided_for_any_value"), 5), {"dim": True}))
        if "dose" in rec:
            out.extend((f"     {line}", {}) for line in dose_lines(rec["dose"]))
    shown_ifs = _conditional_block(data, out)
    asks = data.get("ask_next", [])
    if asks:
        out.append(("", {}))
        out.append(("ASK FIRST:", {"bold": True}))
        for i, ask in enumerate(asks[:ASK_SHOWN], 1):
            out.append((f" {i}. {ask['question']}", {}))
            out.append((f"     decides: {decides_text(ask)}", {"dim": True}))
    if data["not_evaluable"]:
        _undecided_block(data, shown_ifs, out)
    for warning in data["warnings"]:
        out.append((f"note: {warning}", {"fg": "yellow"}))
    out.append(("Citations marked ? are cited by the source but absent from its reference list.", {"dim": True}))
    return out

def rule_detail(pack: RulePack, rule: Rule) -> dict[str, Any]:
    """Everything about one rule, with its citations resolved."""
    data = dict(rule.raw)
    data["citations"] = [
        {**pack.references[c.ref].to_dict(), **({"evidence": c.evidence} if c.evidence else {})} for c in rule.citations
    ]
    data["location"] = {"file": rule.file, "line": rule.line}
    data["pack"] = {"name": pack.name, "version": pack.version, "sha256": pack.sha256}
    return data


# --- when facts are missing ---------------------------------------------------------

#: How many questions the text shows; the JSON has them all.
ASK_SHOWN = 3
#: At most this many "IF ..." groups are shown in full, each decided by the questions shown.
IF_GROUPS_SHOWN = 4


def decides_text(ask: dict[str, Any], limit: int = 4) -> str:
    """``Start norepinephrine as first-line vasopressor (warning), ... (+3 more)``."""
    items = [f"{d['title']} ({d['severity']})" for d in ask["decides"][:limit]]
    more = len(ask["decides"]) - limit
    return ", ".join(items) + (f" (+{more} more)" if more > 0 else "")


def if_groups(data: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Conditional advice grouped by its condition, in the result's order (most decisive first)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in data.get("conditional", []):
        groups.setdefault(c["if"]["text"], []).append(c)
    return list(groups.items())


def shown_if_groups(data: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The conditional advice worth showing first: groups decided by the first questions alone."""
    asked = {a["fact"] for a in data.get("ask_next", [])[:ASK_SHOWN]}
    return [(text, members) for text, members in if_groups(data) if set(members[0]["if"]["facts"]) <= asked][:IF_GROUPS_SHOWN]


def _conditional_block(data: dict[str, Any], out: list[tuple[str, dict[str, Any]]]) -> set[str]:
    """The "IF ..." block: advice that one of the first questions' answers would make firm."""
    asked = {a["fact"]: a["question"] for a in data.get("ask_next", [])[:ASK_SHOWN]}
    shown: set[str] = set()
    for text, members in shown_if_groups(data):
        out.append(("", {}))
        out.append((f"IF {text}:", {"bold": True}))
        questions = [asked[f] for f in members[0]["if"]["facts"] if f in asked]
        out.append((f"   (ask: {' / '.join(questions)})", {"dim": True}))
        for c in members:
            shown.add(c["rule_id"])
            draft = "" if c["status"] == "approved" else f" [{c['status'].upper()}]"
            out.append((f" {_MARK[c['kind']]} {c['summary']} {citations(c['citations'])}{draft}", {}))
            out.append((f"     {c['rule_id']} v{c['rule_version']} ({c['severity']}; conditional)", {"dim": True}))
            if "dose" in c:
                out.extend((f"     {line}", {}) for line in dose_lines(c["dose"]))
    return shown


def _undecided_block(data: dict[str, Any], shown: set[str], out: list[tuple[str, dict[str, Any]]]) -> None:
    """What is still open: other conditional advice in one line each, then rules nothing could decide."""
    conditional = {c["rule_id"]: c for c in data.get("conditional", [])}
    not_applicable = {n["rule_id"]: n for n in data.get("not_applicable", [])}
    rest = [ne for ne in data["not_evaluable"] if ne["rule_id"] not in shown and ne["rule_id"] not in not_applicable]
    if rest:
        out.append(("", {}))
        out.append((f"COULD NOT DECIDE ({_count(len(rest), 'more rule')}; these facts are unknown)", {"bold": True}))
        for ne in rest:
            c = conditional.get(ne["rule_id"])
            if c is not None:
                out.append((f" - {ne['rule_id']} ({c['severity']}): if {c['if']['text']}", {}))
            else:
                out.append((f" - {ne['rule_id']}: missing {', '.join(ne['missing'])}", {}))
    if not_applicable:
        if not rest:
            out.append(("", {}))
        reasons = sorted({n["because"] for n in not_applicable.values()})
        out.append((f"Not applicable ({_count(len(not_applicable), 'rule')}): " + "; ".join(reasons), {"dim": True}))


def _count(n: int, noun: str) -> str:
    """``1 rule``, ``2 rules``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
