"""What one result puts in front of a clinician, read in ONE place: firm items, "If ..." items, questions, cards.

Everything else in the shadow run counts what :func:`read_call` returns; when the result's format
changes (the ``plan`` of evaluate()'s Result: decisions answered by priority, items marked
``shown``), only this module changes.

Today (no plan in the result):

- firm: the recommendations; each is a card, as the CDS Hooks service shows one card per rule;
- "If ..." items: the conditional advice; those the service shows (the groups decided by the first
  questions, :func:`pressor.engine.report.shown_if_groups`) are cards of kind ``if``;
- questions: ``ask_next``; they make one card (``questions``) naming the first;
- the cost of not knowing a fact: how many conditional items its answer decides, and the most severe.

With a plan: the plan's items marked shown are the cards (by their status), its questions those shown.
"""
from __future__ import annotations

from typing import Any, Mapping

SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def read_call(data: Mapping[str, Any]) -> dict[str, Any]:
    """A result (its JSON form) as the shadow run counts it.

    ``firm``/``conditional``: ``[rule_id, severity, kind]`` lists; ``if_shown``: the rule ids of the "If"
    items shown as cards; ``questions``: ``[fact, items it decides, most severe of them]``; ``cards``:
    ``[key, kind]`` per card shown (key: what repeat suppression compares); ``items``: plan items
    ``[decision, rule_id, status, shown]`` (empty until results carry a plan).
    """
    plan = data.get("plan")
    if isinstance(plan, Mapping):
        return _read_plan(data, plan)
    from ..report import shown_if_groups

    firm = [[r["rule_id"], r["severity"], r["kind"]] for r in _list(data.get("recommendations"))]
    conditional = [[c["rule_id"], c["severity"], c["kind"]] for c in _list(data.get("conditional"))]
    fired = {r[0] for r in firm}
    if_shown: list[str] = []
    for _, members in shown_if_groups(dict(data)):
        for c in members:
            if c["rule_id"] not in fired and c["rule_id"] not in if_shown:
                if_shown.append(c["rule_id"])
    questions = []
    for q in _list(data.get("ask_next")):
        decides = _list(q.get("decides")) if isinstance(q, Mapping) else []
        worst = min((SEVERITY_RANK.get(d.get("severity"), 3) for d in decides), default=3)
        questions.append([q["fact"], len(decides), _severity_name(worst)])
    cards = [[f"rule:{r[0]}", f"firm-{r[1]}"] for r in firm]
    cards += [[f"if:{rid}", "if"] for rid in if_shown]
    if questions:
        cards.append([f"ask:{questions[0][0]}", "questions"])
    return {"firm": firm, "conditional": conditional, "if_shown": if_shown, "questions": questions, "cards": cards,
            "items": []}


def _severity_name(rank: int) -> str:
    return {0: "critical", 1: "warning", 2: "info"}.get(rank, "")


def _read_plan(data: Mapping[str, Any], plan: Mapping[str, Any]) -> dict[str, Any]:
    """The same counts from a result that carries a plan (items marked shown)."""
    items = [i for i in _list(plan.get("items")) if isinstance(i, Mapping)]
    firm = [[str(i.get("rule_id")), str(i.get("severity", "info")), str(i.get("kind", ""))]
            for i in items if i.get("status") == "firm"]
    conditional = [[str(i.get("rule_id")), str(i.get("severity", "info")), str(i.get("kind", ""))]
                   for i in items if i.get("status") == "conditional"]
    shown = [i for i in items if i.get("shown", True) is not False]
    if_shown = [str(i.get("rule_id")) for i in shown if i.get("status") == "conditional"]
    questions = []
    for q in _list(plan.get("questions")):
        if isinstance(q, Mapping) and q.get("shown", True) is not False:
            decides = _list(q.get("decides"))
            worst = min((SEVERITY_RANK.get(d.get("severity"), 3) for d in decides if isinstance(d, Mapping)), default=3)
            questions.append([str(q.get("fact")), len(decides), _severity_name(worst)])
    cards = [[f"rule:{i.get('rule_id')}", f"firm-{i.get('severity', 'info')}"] for i in shown if i.get("status") == "firm"]
    cards += [[f"if:{rid}", "if"] for rid in if_shown]
    if questions:
        cards.append([f"ask:{questions[0][0]}", "questions"])
    plan_items = [[str(i.get("decision", "")), str(i.get("rule_id")), str(i.get("status", "")), i.get("shown", True) is not False]
                  for i in items]
    return {"firm": firm, "conditional": conditional, "if_shown": if_shown, "questions": questions, "cards": cards,
            "items": plan_items}
