"""Why each rule fired, did not fire, could not be decided, or was not evaluated.

:func:`explain` runs :func:`~pressor.engine.evaluation.evaluate.evaluate` for what the engine
actually did, and the reference logic (:mod:`pressor.engine.evaluation.logic`) for the detail
behind it: every comparison with the value seen and the threshold, and for derived
facts the input facts that decided them. If the two ever disagree about a rule, it
refuses to answer (:class:`EvaluationError`): an explanation of something the
engine did not do would be worse than none.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Mapping

from ..errors import EvaluationError
from .evaluate import ACTIVE_WITH_DRAFTS, completion_of, evaluate, flatten_state
from .load import Document
from .logic import Derivation, derive, set_aside_doubtful_pressures, truth, verdict
from .kleene import gather
from ..model import All, Compare, Condition, Evidence, Not, Rule, RulePack, condition_data, leaves
from .pack import find_rule
from ..report import because_text, ordered_evidence

#: Outcomes in the order explanations are grouped.
OUTCOMES = ("fired", "superseded", "not_fired", "not_evaluable", "inactive")


@dataclass(frozen=True)
class LeafTrace:
    """One comparison of a rule: the value seen, the threshold, its truth, and what lies behind a derived fact."""

    pointer: str  # JSON pointer into the rule's file
    condition: str
    fact: str
    op: str
    threshold: Any
    threshold_fact: str | None
    actual: Any
    known: bool
    truth: bool | None
    negated: bool
    inputs: tuple[Evidence, ...]
    missing: tuple[str, ...]
    #: The inputs in words, the deciding comparison first: "not ...", "... not recorded", "for any value of ...".
    because: tuple[str, ...] = ()
    #: The comparison's fact decided for every value of these missing inputs (completion.py), if it was.
    for_any_value_of: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (see ``schemas/explanation.schema.json``)."""
        out: dict[str, Any] = {
            "pointer": self.pointer, "condition": self.condition, "fact": self.fact, "op": self.op,
            "threshold": list(self.threshold) if isinstance(self.threshold, tuple) else self.threshold,
            "actual": self.actual, "known": self.known, "truth": self.truth,
            "inputs": [e.to_dict() for e in self.inputs], "because": list(self.because),
        }
        if self.for_any_value_of:
            out["for_any_value_of"] = list(self.for_any_value_of)
        if self.threshold_fact is not None:
            out["threshold_fact"] = self.threshold_fact
        if self.negated:
            out["negated"] = True
        if self.missing:
            out["missing"] = list(self.missing)
        return out


@dataclass(frozen=True)
class RuleExplanation:
    """One rule's outcome and the comparisons behind it.

    ``conditions`` holds, when fired, every comparison; when not fired, the ones that
    failed (for all() the first false child, for any() every child); when not
    evaluable, the undecided ones; when inactive, none.
    """

    rule_id: str
    rule_version: str
    status: str
    title: str
    outcome: str
    file: str
    conditions: tuple[LeafTrace, ...] = ()
    missing: tuple[str, ...] = ()
    reason: str | None = None
    #: not_evaluable only: {outcome: conditional | not_applicable | undecided, if, condition, because}.
    when_missing: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {
            "rule_id": self.rule_id, "rule_version": self.rule_version, "status": self.status,
            "title": self.title, "outcome": self.outcome, "file": self.file,
            "conditions": [c.to_dict() for c in self.conditions],
        }
        if self.outcome == "not_evaluable":
            out["missing"] = list(self.missing)
        if self.reason is not None:
            out["reason"] = self.reason
        if self.when_missing is not None:
            out["when_missing"] = dict(self.when_missing)
        return out


@dataclass(frozen=True)
class Explanation:
    """Every explained rule of one evaluation, in pack order."""

    pack: dict[str, Any]
    evaluated_at: str
    engine_version: str
    include_draft: bool
    derived: dict[str, Any]
    rules: tuple[RuleExplanation, ...]
    ask_next: tuple[dict[str, Any], ...] = ()

    def grouped(self) -> dict[str, list[RuleExplanation]]:
        """Rules by outcome, in :data:`OUTCOMES` order (every outcome present, maybe empty)."""
        groups: dict[str, list[RuleExplanation]] = {o: [] for o in OUTCOMES}
        for r in self.rules:
            groups[r.outcome].append(r)
        return groups

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (see ``schemas/explanation.schema.json``)."""
        return {
            "pack": dict(self.pack),
            "evaluated_at": self.evaluated_at,
            "engine_version": self.engine_version,
            "include_draft": self.include_draft,
            "counts": {o: len(rs) for o, rs in self.grouped().items()},
            "derived": dict(self.derived),
            "ask_next": list(self.ask_next),
            "rules": [r.to_dict() for r in self.rules],
        }


def explain(pack: RulePack, state: Mapping[str, Any], *, now: datetime, include_draft: bool = False,
            rule_id: str | None = None, document: Document | None = None) -> Explanation:
    """Explain every rule of ``pack`` (or only ``rule_id``) for the patient ``state`` at time ``now``.

    Raises :class:`~pressor.engine.errors.InputError` for an unknown ``rule_id`` (naming the
    closest), :class:`~pressor.engine.errors.PatientStateError` for an invalid state, and
    :class:`EvaluationError` if the engine and the reference logic disagree about any rule.
    """
    chosen = (find_rule(pack, rule_id),) if rule_id is not None else pack.rules
    result = evaluate(pack, state, now=now, include_draft=include_draft, document=document)
    fired = set(result.fired_ids())
    undecided = {n.rule_id: frozenset(n.missing) for n in result.not_evaluable}
    when_missing: dict[str, dict[str, Any]] = {
        c.rule_id: {"outcome": "conditional", "if": c.text, "condition": condition_data(c.condition)} for c in result.conditional}
    when_missing.update({n.rule_id: {"outcome": "not_applicable", "because": n.because} for n in result.not_applicable})
    facts = flatten_state(state)
    set_aside_doubtful_pressures(pack.derived, facts)  # as evaluate() does
    derivation = derive(pack.derived, facts)
    decided = completion_of(pack).decide(facts, derivation.missing_of)  # as evaluate() decides (decided_for_any_value)
    tracer = _Tracer(facts, derivation, _thresholds(pack), decided)
    active = ACTIVE_WITH_DRAFTS if include_draft else pack.in_force
    superseded_by = pack.superseded_by()
    explained = []
    for rule in chosen:
        if rule.status not in active:
            explained.append(_inactive(rule))
            continue
        explanation = _explain_rule(rule, tracer)
        winners = sorted(superseded_by.get(rule.id, frozenset()) & fired)
        if explanation.outcome == "fired" and winners and rule.id not in fired:
            # The condition held, but a shown rule that refines this one fired too (supersedes:).
            explanation = replace(explanation, outcome="superseded", reason=f"superseded by {', '.join(winners)}")
            explained.append(explanation)
            continue
        engine = "fired" if rule.id in fired else "not_evaluable" if rule.id in undecided else "not_fired"
        if engine != explanation.outcome or (engine == "not_evaluable" and undecided[rule.id] != frozenset(explanation.missing)):
            raise EvaluationError.single(
                f"the engine's outcome for '{rule.id}' ({engine}) disagrees with the reference logic "
                f"({explanation.outcome}); refusing to explain",
                rule_id=rule.id, file=rule.file, line=rule.line,
                suggestion="report this: the engine and the reference semantics disagree",
            )
        if engine == "not_evaluable":
            explanation = replace(explanation, when_missing=when_missing.get(rule.id, {"outcome": "undecided"}))
        explained.append(explanation)
    return Explanation(
        pack=dict(result.pack), evaluated_at=result.evaluated_at, engine_version=result.engine_version,
        include_draft=include_draft, derived=dict(result.derived), rules=tuple(explained),
        ask_next=tuple(q.to_dict() for q in result.ask_next if rule_id is None or rule_id in {r for r, _, _ in q.decides}),
    )


def _inactive(rule: Rule) -> RuleExplanation:
    if rule.status == "retired":
        reason = "status 'retired': never evaluated"
    else:
        reason = f"status '{rule.status}': evaluated only when drafts are included"
    return RuleExplanation(rule.id, rule.version, rule.status, rule.title, "inactive", rule.file, reason=reason)


def _explain_rule(rule: Rule, tracer: "_Tracer") -> RuleExplanation:
    v = verdict(rule.when, tracer.facts, tracer.derivation.missing_of)
    if v.truth is True:
        outcome, shown = "fired", _all_leaves(rule.when, False)
    else:
        outcome, shown = ("not_fired" if v.truth is False else "not_evaluable"), _deciding(rule.when, tracer.facts, False)
    return RuleExplanation(
        rule.id, rule.version, rule.status, rule.title, outcome, rule.file,
        conditions=tuple(tracer.trace(leaf, negated) for leaf, negated in shown),
        missing=tuple(sorted(v.missing)),
    )


def _all_leaves(cond: Condition, negated: bool) -> list[tuple[Compare, bool]]:
    """Every comparison in document order, with whether an odd number of not()s encloses it."""
    if isinstance(cond, Not):
        return _all_leaves(cond.child, not negated)
    if isinstance(cond, Compare):
        return [(cond, negated)]
    return [pair for child in cond.children for pair in _all_leaves(child, negated)]


def _deciding(cond: Condition, facts: Mapping[str, Any], negated: bool) -> list[tuple[Compare, bool]]:
    """The comparisons that decide ``cond``'s (Kleene) truth, in document order.

    False all(): its first false child. False any(): every child. Unknown: the unknown
    children. True all(): every child; true any(): the true children (both only reached
    under a not()). The truths come from :func:`~pressor.engine.evaluation.logic.truth`.
    """
    if isinstance(cond, Compare):
        return [(cond, negated)]
    if isinstance(cond, Not):
        return _deciding(cond.child, facts, not negated)
    _, chosen = gather(isinstance(cond, All), ((truth(child, facts), child) for child in cond.children))
    return [pair for child in chosen for pair in _deciding(child, facts, negated)]


def _thresholds(pack: RulePack) -> dict[str, str]:
    """Test text -> the fact it compares with, for the derived facts' fact-to-fact comparisons."""
    out: dict[str, str] = {}
    for d in pack.derived:
        for cond in ([d.when] if d.when is not None else []) + [c for c, _ in d.cases]:
            out.update((leaf.describe(), leaf.value_fact) for leaf in leaves(cond) if leaf.value_fact is not None)
    return out


@dataclass(frozen=True)
class _Tracer:
    """Builds :class:`LeafTrace` objects over one state's facts and derivation."""

    facts: Mapping[str, Any]
    derivation: Derivation
    thresholds: Mapping[str, str]
    decided: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def trace(self, leaf: Compare, negated: bool) -> LeafTrace:
        """The comparison with its value, threshold, truth and inputs."""
        facts = self.facts
        v = verdict(leaf, facts, self.derivation.missing_of)
        inputs = self.inputs(leaf)
        if leaf.value_fact is not None:
            threshold = facts.get(leaf.value_fact)
        elif leaf.op in ("known", "unknown"):
            threshold = None
        else:
            threshold = leaf.value
        return LeafTrace(
            pointer=leaf.pointer, condition=leaf.describe(), fact=leaf.fact, op=leaf.op, threshold=threshold,
            threshold_fact=leaf.value_fact, actual=facts.get(leaf.fact), known=leaf.fact in facts, truth=v.truth,
            negated=negated, inputs=inputs, missing=tuple(sorted(v.missing)),
            because=tuple(because_text(e, self.decided) for e in ordered_evidence([e.to_dict() for e in inputs])),
            for_any_value_of=tuple(self.decided.get(leaf.fact, self.decided.get(leaf.fact.removeprefix("derived."), ()))),
        )

    def inputs(self, leaf: Compare) -> tuple[Evidence, ...]:
        """The evidence behind the leaf's derived facts, down to patient-state facts.

        ``Derivation.expand`` follows the fact on the left of each comparison; a derived
        fact compared with another derived fact (MAP below *the MAP target*) also needs the
        right-hand one followed, so its evidence is added as a further root until nothing new appears.
        """
        own = tuple(Evidence(p, p, self.facts[p]) for p in leaf.facts() if self.derivation.decided(p))
        roots = list(own)
        while True:
            found = self.derivation.expand(tuple(roots))
            more = [Evidence(self.thresholds[e.test], e.test, self.facts[self.thresholds[e.test]])
                    for e in found if self.thresholds.get(e.test) in self.facts]
            more = [e for e in more if e not in roots]
            if not more:
                return tuple(e for e in found if e not in own)
            roots.extend(more)
