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

With a plan (``result.plan``): the plan's default view decides what is shown (:func:`_read_plan`); the
firing rates still count every rule that fired.
"""
from __future__ import annotations

from typing import Any, Mapping

SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def read_call(data: Mapping[str, Any]) -> dict[str, Any]:
    """A result (its JSON form) as the shadow run counts it.

    ``firm``/``conditional``: every fired / conditional rule as ``[rule_id, severity, kind]`` (the firing
    rates count these, shown or not); ``advised``: the fired rule ids the default view advises (with a plan:
    each decision's answer, firm or "unless ...", its supporting items and the bans; what concordance and
    consistency check); ``if_shown``: the "If ..." rule ids shown; ``questions``:
    ``[fact, items it decides, most severe of them, shown]``; ``cards``: ``[key, kind, rule_id]`` per card
    shown (the key is what repeat suppression compares); ``items``: plan items ``[decision, rule_id, status]``.
    """
    firm = [[r["rule_id"], r["severity"], r["kind"]] for r in _list(data.get("recommendations"))]
    conditional = [[c["rule_id"], c["severity"], c["kind"]] for c in _list(data.get("conditional"))]
    plan = data.get("plan")
    if isinstance(plan, Mapping):
        return _read_plan(data, plan, firm, conditional)
    from ..report import shown_if_groups

    fired = {r[0] for r in firm}
    if_shown: list[str] = []
    for _, members in shown_if_groups(dict(data)):
        for c in members:
            if c["rule_id"] not in fired and c["rule_id"] not in if_shown:
                if_shown.append(c["rule_id"])
    questions = [_question(q, True) for q in _list(data.get("ask_next"))]
    cards = [[f"rule:{r[0]}", f"firm-{r[1]}", r[0]] for r in firm]
    cards += [[f"if:{rid}", "if", rid] for rid in if_shown]
    if questions:
        cards.append([f"ask:{questions[0][0]}", "questions", ""])
    return {"firm": firm, "conditional": conditional, "advised": [r[0] for r in firm], "if_shown": if_shown,
            "questions": questions, "cards": cards, "items": []}


def _question(q: Any, shown: bool) -> list[Any]:
    decides = _list(q.get("decides")) if isinstance(q, Mapping) else []
    worst = min((SEVERITY_RANK.get(str(d.get("severity")), 3) for d in decides if isinstance(d, Mapping)), default=3)
    return [q["fact"], len(decides), _severity_name(worst), shown]


def _severity_name(rank: int) -> str:
    return {0: "critical", 1: "warning", 2: "info"}.get(rank, "")


def _read_plan(data: Mapping[str, Any], plan: Mapping[str, Any], firm: list, conditional: list) -> dict[str, Any]:
    """The default view of a result that carries a plan (``schemas/result.schema.json``, ``plan``).

    Cards: one per plan item (its answer: kind ``firm-<severity>`` when firm, ``unless-<severity>`` when it
    holds unless something unknown turns out otherwise, ``undecided`` when it waits on the answers), one per ban
    (``ban``), one per shown firm rule the plan does not place (neither an answer, nor supporting, nor a
    ban), and one ``questions`` card when the plan asks any. Supporting items are folded under their
    answer, as the plan view shows them.
    """
    severity = {r[0]: r[1] for r in firm + conditional}
    items = [i for i in _list(plan.get("items")) if isinstance(i, Mapping)]
    bans = [str(b) for b in _list(plan.get("bans"))]
    placed = {str(i.get("rule_id")) for i in items} | {str(s) for i in items for s in _list(i.get("supporting"))} | set(bans)
    shown_recs = [r for r in _list(data.get("recommendations")) if r.get("shown", True) is not False]
    cards = []
    advised: list[str] = []
    for i in items:
        rid, status = i.get("rule_id"), i.get("status")
        if rid is None:
            cards.append([f"plan:{i.get('decision')}:undecided", "undecided", ""])
            continue
        sev = i.get("severity") or severity.get(rid, "info")
        kind = f"firm-{sev}" if status == "firm" else f"unless-{sev}"
        cards.append([f"plan:{i.get('decision')}:{rid}:{status}", kind, str(rid)])
        # The answer is advised whether firm or "unless ...": the view shows it as the plan, with its caveat.
        advised.append(str(rid))
        advised += [str(s) for s in _list(i.get("supporting"))]
    for rid in bans:
        cards.append([f"ban:{rid}", "ban", rid])
        advised.append(rid)
    for r in shown_recs:
        if r["rule_id"] not in placed:
            cards.append([f"rule:{r['rule_id']}", f"firm-{r['severity']}", r["rule_id"]])
            advised.append(r["rule_id"])
    asked = {str(f) for f in _list(plan.get("questions"))}
    questions = [_question(q, q.get("fact") in asked) for q in _list(data.get("ask_next")) if isinstance(q, Mapping)]
    if asked:
        first = next((q[0] for q in questions if q[3]), sorted(asked)[0])
        cards.append([f"ask:{first}", "questions", ""])
    if_shown = [c["rule_id"] for c in _list(data.get("conditional")) if c.get("shown", True) is not False]
    plan_items = [[str(i.get("decision", "")), str(i.get("rule_id")), str(i.get("status", ""))] for i in items]
    return {"firm": firm, "conditional": conditional, "advised": list(dict.fromkeys(advised)), "if_shown": if_shown,
            "questions": questions, "cards": cards, "items": plan_items}
