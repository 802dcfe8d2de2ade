"""Frozen data: the result of one evaluation; with the compiled rule pack (:mod:`.rule_pack`) and conditions
(:mod:`.conditions`), whose names are importable from here too."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from .conditions import All, Any_, Compare, Condition, Not, condition_data, leaves, render_condition  # noqa: F401
from .rule_pack import (  # noqa: F401 (the pack's names, importable from here as before)
    TEMPORAL_KINDS, AbsentMeans, Ban, Citation, Decision, DoseSpec, Derived, Preparation, Quantity, QuestionRelevance,
    Reference, Rule, RulePack, StatusChange, TemporalFact, Waiver,
)

# --- results ----------------------------------------------------------------

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


class Evidence(NamedTuple):
    """One fact that decided a comparison: its path, the test, the value seen, and whether the test held.

    A named tuple, not a dataclass: dozens are made per evaluation, and this is the cheap immutable kind.
    """

    fact: str
    test: str
    value: Any
    holds: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"fact": self.fact, "test": self.test, "value": self.value, "holds": self.holds}


@dataclass(frozen=True)
class Recommendation:
    """What one fired rule recommends, with its provenance."""

    rule_id: str
    rule_version: str
    status: str
    kind: str
    severity: str
    title: str
    summary: str
    detail: str
    citations: tuple[Reference, ...]
    evidence: tuple[Evidence, ...]
    source_section: str
    dose: dict[str, Any] | None = None
    drug: str | None = None

    def sort_key(self) -> tuple[int, str]:
        """Critical first, then warning, then info; then rule id."""
        return (SEVERITY_ORDER[self.severity], self.rule_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (see ``schemas/result.schema.json``)."""
        return _advice_dict(self, "evidence", [e.to_dict() for e in self.evidence])


def _advice_dict(item: "Recommendation | Conditional", key: str, value: Any) -> dict[str, Any]:
    """The JSON form a recommendation and a conditional one share: the rule's advice and citations, then ``key``
    (the evidence that fired it, or the condition it waits on), then its drug and dose when it has them."""
    out: dict[str, Any] = {
        "rule_id": item.rule_id, "rule_version": item.rule_version, "status": item.status, "kind": item.kind,
        "severity": item.severity, "title": item.title, "summary": item.summary, "detail": item.detail,
        "citations": [c.to_dict() for c in item.citations], "source_section": item.source_section, key: value,
    }
    if item.drug:
        out["drug"] = item.drug
    if item.dose is not None:
        out["dose"] = item.dose
    return out


class NotEvaluable(NamedTuple):
    """A rule that could not be decided because facts it needs are unknown.

    A named tuple, not a dataclass: one is made per undecided rule per evaluation (about 48 a state on a
    512-rule pack), and a frozen dataclass's ``__init__`` cost four times as much.
    """

    rule_id: str
    rule_version: str
    title: str
    missing: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"rule_id": self.rule_id, "rule_version": self.rule_version, "title": self.title, "missing": list(self.missing)}


@dataclass(frozen=True)
class Conditional:
    """A rule that would fire if the missing facts turn out as ``condition`` says (its residual)."""

    rule_id: str
    rule_version: str
    status: str
    kind: str
    severity: str
    title: str
    summary: str
    detail: str
    citations: tuple[Reference, ...]
    source_section: str
    condition: Condition
    text: str
    facts: tuple[str, ...]
    dose: dict[str, Any] | None = None
    drug: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (see ``schemas/result.schema.json``)."""
        return _advice_dict(self, "if", {"condition": condition_data(self.condition), "text": self.text, "facts": list(self.facts)})


@dataclass(frozen=True)
class AskNext:
    """A missing fact worth asking for, and the conditional rules its answer decides (most severe first)."""

    fact: str
    question: str
    decides: tuple[tuple[str, str, str], ...]  # (rule id, severity, title)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"fact": self.fact, "question": self.question,
                "decides": [{"rule_id": r, "severity": s, "title": t} for r, s, t in self.decides]}


@dataclass(frozen=True)
class NotApplicable:
    """An undecided rule that cannot apply: no value of the missing facts makes it fire, or the pack
    declares what their absence means (``declared``)."""

    rule_id: str
    rule_version: str
    title: str
    because: str
    declared: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {"rule_id": self.rule_id, "rule_version": self.rule_version, "title": self.title,
                               "because": self.because}
        if self.declared:
            out["declared"] = list(self.declared)
        return out


@dataclass(frozen=True)
class Result:
    """Everything one evaluation produced."""

    pack: dict[str, str]
    evaluated_at: str
    engine_version: str
    recommendations: tuple[Recommendation, ...]
    not_evaluable: tuple[NotEvaluable, ...]
    derived: dict[str, Any]
    warnings: tuple[str, ...] = ()
    include_draft: bool = False
    conditional: tuple[Conditional, ...] = ()
    ask_next: tuple[AskNext, ...] = ()
    not_applicable: tuple[NotApplicable, ...] = ()
    #: Derived facts decided for every value of their missing inputs (see completion.py): name -> those inputs.
    decided_for_any_value: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: One coherent plan (see plan.py); None for a pack that declares no plan decisions.
    plan: "Plan | None" = None
    #: False when the caller did not ask for the advice about unknowns (evaluate(advice=False)): no conditional
    #: advice, questions, not-applicable list or missing facts were computed, whatever the state.
    advice: bool = True

    @classmethod
    def of(cls, values: dict[str, Any]) -> "Result":
        """The result holding ``values`` (every field named): what ``Result(**values)`` makes, without the frozen
        dataclass's ``__init__`` (one ``object.__setattr__`` per field, 1.7 µs of every evaluation)."""
        if values.keys() != _RESULT_FIELDS:
            raise TypeError(f"Result.of needs exactly the fields {sorted(_RESULT_FIELDS)}")
        result = object.__new__(cls)
        result.__dict__.update(values)
        return result

    def fired_ids(self) -> list[str]:
        """Ids of the rules that fired, in output order."""
        return [r.rule_id for r in self.recommendations]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (see ``schemas/result.schema.json``)."""
        plan = self.plan
        recommendations = [r.to_dict() for r in self.recommendations]
        conditional = [c.to_dict() for c in self.conditional]
        ask_next = [q.to_dict() for q in self.ask_next]
        if plan is not None:  # what the default view shows (the plan); the rest is kept, marked shown: false
            for item in recommendations:
                item["shown"] = item["rule_id"] in plan.shown_rules
            for item in conditional:
                item["shown"] = item["rule_id"] in plan.shown_conditional
            for item in ask_next:
                item["shown"] = item["fact"] in plan.questions
        return {
            "pack": dict(self.pack),
            "evaluated_at": self.evaluated_at,
            "engine_version": self.engine_version,
            "include_draft": self.include_draft,
            "recommendations": recommendations,
            "not_evaluable": [n.to_dict() for n in self.not_evaluable],
            "derived": dict(self.derived),
            "warnings": list(self.warnings),
            "conditional": conditional,
            "ask_next": ask_next,
            "not_applicable": [n.to_dict() for n in self.not_applicable],
            "decided_for_any_value": {name: list(inputs) for name, inputs in self.decided_for_any_value.items()},
            **({"plan": self.plan.to_dict()} if self.plan is not None else {}),
            **({} if self.advice else {"advice": False}),
        }


_RESULT_FIELDS = {f.name for f in fields(Result)}


@dataclass(frozen=True)
class PlanItem:
    """The answer to one decision of the plan.

    ``status``: ``firm`` (the winning rule fired and no rule above it is undecided), ``conditional`` (it fired,
    but a rule above it would win if ``unless`` holds), ``undecided`` (no rule fired; ``unless`` lists the
    candidates and what each waits on). ``set_aside``: rules that fired too but lost to the answer (priority).
    """

    decision: str
    title: str
    status: str
    rule_id: str | None
    summary: str
    severity: str
    unless: tuple[dict[str, Any], ...] = ()
    set_aside: tuple[dict[str, str], ...] = ()
    supporting: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (see ``schemas/result.schema.json``, ``plan``)."""
        return {"decision": self.decision, "title": self.title, "status": self.status, "rule_id": self.rule_id,
                "summary": self.summary, "severity": self.severity, "unless": [dict(u) for u in self.unless],
                "set_aside": [dict(s) for s in self.set_aside], "supporting": list(self.supporting)}


@dataclass(frozen=True)
class Plan:
    """One plan per patient: an answer per decision, the bans that matter, the questions that change it.

    ``shown`` names every rule (fired or conditional) and every question the default view shows; the result
    keeps the rest, marked ``shown: false``. ``outside`` is set when a scope rule fired: nothing else is advised.
    """

    items: tuple[PlanItem, ...]
    bans: tuple[str, ...]
    questions: tuple[str, ...]
    shown_rules: frozenset[str]
    shown_conditional: frozenset[str]
    set_aside_count: int
    outside: str | None = None
    #: Fired rules no plan decision or ban places (a plausibility warning, a perfusion flag): always shown.
    others: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (see ``schemas/result.schema.json``, ``plan``)."""
        return {"outside_protocol": self.outside, "items": [i.to_dict() for i in self.items], "bans": list(self.bans),
                "questions": list(self.questions), "set_aside_count": self.set_aside_count, "others": list(self.others)}
