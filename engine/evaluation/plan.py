"""One coherent plan per patient, from what the rules said.

Every applicable rule speaks for itself in ``Result.recommendations``; a clinician needs one plan. The
pack declares the plan's decisions (``decisions:`` with ``plan: true``, in the order one acts on them),
each with a hit policy: ``priority`` takes the first of its rules that applies and sets the others aside
with the reason; ``unique`` expects one (the lint proves it). While a rule above the answer is
undecided, the answer is conditional ("unless ..."); with no answer yet, the item is undecided and lists
what each candidate waits on. Supporting rules (preparation, access, monitoring) are shown under their
decision's answer; bans only where the pack says they are relevant.

Questions are asked only when their answer would change a plan item, or (for facts whose relevance the
pack declares in ``questions:``) when the declared situation holds and no covering question is asked; at
most :data:`MAX_QUESTIONS`. A scope rule that fires (``supersedes: ["*"]``) is the whole plan: the
patient is outside this protocol.

Nothing here decides anything clinical that the rules did not: it selects and orders what they said.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from ..model import AskNext, Conditional, Plan, PlanItem, Recommendation, RulePack, leaves
from .logic import truth

#: At most this many questions are shown, ranked as the residual analysis ranked them.
MAX_QUESTIONS = 3


def scope_rules(pack: RulePack) -> frozenset[str]:
    """The pack's scope rules: those that supersede every other (``supersedes: ["*"]``)."""
    found = pack.cache.scope_rules
    if found is None:  # plain data: two threads that both build it build the same
        found = pack.cache.scope_rules = frozenset(r.id for r in pack.rules if r.raw.get("supersedes") == ["*"])
    return found


def build_plan(pack: RulePack, recommendations: Sequence[Recommendation], conditional: Sequence[Conditional],
               ask_next: Sequence[AskNext], facts: Mapping[str, Any]) -> Plan | None:
    """The plan for one patient (None when the pack declares no plan decisions)."""
    decisions = [d for d in pack.decisions if d.in_plan]
    if not decisions:
        return None
    fired = {r.rule_id: r for r in recommendations}
    waiting = {c.rule_id: c for c in conditional}
    outside = [rid for rid in fired if rid in scope_rules(pack)]
    if outside:
        return Plan(items=(), bans=(), questions=(), shown_rules=frozenset(outside), shown_conditional=frozenset(),
                    set_aside_count=len(recommendations) - len(outside) + len(conditional), outside=outside[0])
    relevance = {q.fact: q.relevant_when for q in pack.question_relevance if q.relevant_when is not None}

    def askable(fact: str) -> bool:
        """A fact whose relevance the pack declares is worth asking only where it holds."""
        when = relevance.get(fact)
        return when is None or truth(when, facts) is True

    items: list[PlanItem] = []
    placed: set[str] = set()
    pending: set[str] = set()  # undecided rules whose answer would change a plan item
    population_facts: set[str] = set()  # missing facts that decide whether a decision applies at all
    derived = {d.name: d for d in pack.derived}
    for d in decisions:
        placed.update(d.rules)
        placed.update(d.supporting)
        population = truth(d.population, facts)
        if population is False:
            continue
        item = _answer(d, fired, waiting, askable)
        if item is None:
            continue
        if item.rule_id is not None or population is True:
            items.append(item)
            pending.update(u["rule_id"] for u in item.unless)
        else:  # neither its answer nor its population known: not an item yet; what decides the population is worth asking
            population_facts.update(_absent_inputs(d.population, facts, derived))
    shown_rules = {i.rule_id for i in items if i.rule_id is not None}
    shown_rules.update(rid for i in items for rid in i.supporting)
    bans = []
    for ban in pack.bans:
        placed.add(ban.rule)
        if ban.rule in fired and (ban.relevant_when is None or truth(ban.relevant_when, facts) is True):
            bans.append(ban.rule)
    shown_rules.update(bans)
    others = tuple(r.rule_id for r in recommendations if r.rule_id not in placed)  # never hidden
    shown_rules.update(others)
    questions = _questions(pack, ask_next, pending, population_facts, waiting, facts)
    shown_conditional = {u["rule_id"] for i in items for u in i.unless}
    asked = set(questions)
    for c in conditional:  # a critical rule the asked questions decide, outside the plan's items
        if c.severity == "critical" and c.rule_id not in placed and set(c.facts) <= asked:
            shown_conditional.add(c.rule_id)
    hidden = sum(1 for r in recommendations if r.rule_id not in shown_rules)
    hidden += sum(1 for c in conditional if c.rule_id not in shown_conditional)
    return Plan(items=tuple(items), bans=tuple(bans), questions=tuple(questions), shown_rules=frozenset(shown_rules),
                shown_conditional=frozenset(shown_conditional), set_aside_count=hidden, others=others)


def _answer(d: Any, fired: Mapping[str, Recommendation], waiting: Mapping[str, Conditional],
            askable: Callable[[str], bool]) -> PlanItem | None:
    """One decision's answer: the first rule that fired (priority), the undecided rules above it (those that a
    question worth asking here could decide), those set aside."""
    winner: Recommendation | None = None
    unless: list[dict[str, Any]] = []
    set_aside: list[dict[str, str]] = []
    for rid in d.rules:
        if rid in fired:
            if winner is None:
                winner = fired[rid]
            else:
                how = "comes first (priority)" if d.hit_policy == "priority" else "applies too (a unique decision: see lint)"
                set_aside.append({"rule_id": rid, "by": winner.rule_id,
                                  "because": f"{winner.title} {how} in '{d.title}'"})
        elif winner is None and rid in waiting and any(askable(f) for f in waiting[rid].facts):
            c = waiting[rid]
            unless.append({"rule_id": rid, "summary": c.summary, "severity": c.severity, "if": c.text,
                           "facts": list(c.facts)})
    if winner is None and not unless:
        return None
    supporting = tuple(rid for rid in d.supporting if rid in fired) if winner is not None else ()
    if winner is not None:
        return PlanItem(d.id, d.title, "conditional" if unless else "firm", winner.rule_id, winner.summary,
                        winner.severity, tuple(unless), tuple(set_aside), supporting)
    first = unless[0]
    return PlanItem(d.id, d.title, "undecided", None, first["summary"], first["severity"], tuple(unless), (), ())


def _absent_inputs(cond: Any, facts: Mapping[str, Any], derived: Mapping[str, Any]) -> set[str]:
    """The input facts ``cond`` reads, through derived facts, that the patient state lacks."""
    out: set[str] = set()
    todo, seen = list(leaves(cond)), set()
    while todo:
        leaf = todo.pop()
        for path in leaf.facts():
            if path in facts or path in seen:
                continue
            seen.add(path)
            d = derived.get(path)
            if d is None:
                out.add(path)
            else:
                for c in ([d.when] if d.when is not None else []) + [c for c, _ in d.cases]:
                    todo.extend(leaves(c))
    return out


def _questions(pack: RulePack, ask_next: Sequence[AskNext], pending: set[str], population_facts: set[str],
               waiting: Mapping[str, Conditional], facts: Mapping[str, Any]) -> list[str]:
    """The missing facts worth asking, best first: those whose answer changes a plan item or decides whether a
    decision applies, or that the pack declares relevant here (and no asked question covers)."""
    declared = {q.fact: q for q in pack.question_relevance}
    eligible: list[str] = []
    for ask in ask_next:
        decides = [rid for rid, _, _ in ask.decides]
        changes_plan = any(rid in pending for rid in decides) or ask.fact in population_facts
        decl = declared.get(ask.fact)
        if decl is not None and decl.relevant_when is not None:
            critical = any(waiting[rid].severity == "critical" for rid in decides if rid in waiting)
            if truth(decl.relevant_when, facts) is True and (changes_plan or critical):
                eligible.append(ask.fact)
        elif changes_plan:
            eligible.append(ask.fact)
    chosen = set(eligible)
    kept = [f for f in eligible if not (f in declared and set(declared[f].covered_by) & (chosen - {f}))]
    return kept[:MAX_QUESTIONS]
