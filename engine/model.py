"""Frozen data: the compiled rule pack, and the result of one evaluation."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Union

from .evaluation.memo import PackMemo

if TYPE_CHECKING:
    from .evaluation.parameters import Parameter, Profile

# --- conditions -------------------------------------------------------------


@dataclass(frozen=True)
class Compare:
    """A leaf: ``fact op value`` (or ``fact op value_fact``), or ``fact known|unknown``."""

    fact: str
    op: str
    value: Any = None
    value_fact: str | None = None
    pointer: str = ""
    text: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", self._text())

    def facts(self) -> tuple[str, ...]:
        """Fact paths this leaf reads."""
        return (self.fact,) if self.value_fact is None else (self.fact, self.value_fact)

    def describe(self) -> str:
        """``vitals.sbp_mmhg < 70`` in text (computed once)."""
        return self.text

    def _text(self) -> str:
        if self.op in ("known", "unknown"):
            return f"{self.fact} is {self.op}"
        rhs = self.value_fact if self.value_fact is not None else _literal(self.value)
        return f"{self.fact} {self.op} {rhs}"


@dataclass(frozen=True)
class All:
    """Every child holds."""

    children: tuple["Condition", ...]
    pointer: str = ""


@dataclass(frozen=True)
class Any_:
    """At least one child holds."""

    children: tuple["Condition", ...]
    pointer: str = ""


@dataclass(frozen=True)
class Not:
    """The child does not hold."""

    child: "Condition"
    pointer: str = ""


Condition = Union[Compare, All, Any_, Not]


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return str(value)


def condition_data(cond: Condition) -> dict[str, Any]:
    """A condition as rule-file data (``{fact, op, value}``, ``{all: [...]}``, ``{any: [...]}``, ``{not: ...}``)."""
    if isinstance(cond, Compare):
        out: dict[str, Any] = {"fact": cond.fact, "op": cond.op}
        if cond.value_fact is not None:
            out["value_fact"] = cond.value_fact
        elif cond.op not in ("known", "unknown"):
            out["value"] = list(cond.value) if isinstance(cond.value, tuple) else cond.value
        return out
    if isinstance(cond, Not):
        return {"not": condition_data(cond.child)}
    return {"all" if isinstance(cond, All) else "any": [condition_data(c) for c in cond.children]}


def leaves(cond: Condition) -> list[Compare]:
    """Every comparison in a condition, in document order."""
    if isinstance(cond, Compare):
        return [cond]
    if isinstance(cond, Not):
        return leaves(cond.child)
    out: list[Compare] = []
    for child in cond.children:
        out.extend(leaves(child))
    return out


# --- the pack ---------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One numbered reference of the source document; ``resolved`` is False for a number the source cites but does not list."""

    number: int
    title: str
    resolved: bool = True
    kind: str | None = None
    publisher: str | None = None
    year: int | None = None
    note: str | None = None
    added_by: str | None = None  # "pack": beyond the source's own reference list

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Citation:
    """A rule's citation of one reference number, with an optional evidence note."""

    ref: int
    evidence: str | None = None


@dataclass(frozen=True)
class Quantity:
    """A dose quantity: a range (low..high) or a single value, in a unit like ``mcg/kg/min``."""

    unit: str
    low: float
    high: float
    label: str | None = None

    @property
    def is_range(self) -> bool:
        """True if low and high differ."""
        return self.low != self.high

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{low, high, unit}`` or ``{value, unit}``."""
        out: dict[str, Any] = {"low": self.low, "high": self.high} if self.is_range else {"value": self.low}
        out["unit"] = self.unit
        if self.label:
            out["label"] = self.label
        return out


@dataclass(frozen=True)
class DoseSpec:
    """A rule's dose, as authored."""

    drug: str
    range: Quantity
    typical: Quantity | None = None
    maximum: Quantity | None = None
    cap: Quantity | None = None
    alternative: Quantity | None = None
    remaining_after: str | None = None
    route: str | None = None
    frequency: str | None = None
    within: str | None = None
    pump_rate: bool = False
    step: bool = False  # the amount is a change to the running rate (titration), never a rate to order
    stated_equivalents: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Preparation:
    """A way of making up an infusion bag; ``amount_mg_per_kg`` makes it weight-dependent (rule of 6)."""

    id: str
    drug: str
    population: str
    volume_ml: float
    diluent: str
    amount_mg: float | None = None
    amount_mg_per_kg: float | None = None
    stated_concentration_mcg_ml: float | None = None
    citations: tuple[Citation, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    amount_units: float | None = None  # drugs dosed in units (vasopressin)
    standard: bool = False  # the pack's standard concentration for this drug and population
    max_weight_kg: float | None = None  # used only up to this weight

    def concentration_mcg_ml(self, weight_kg: float | None) -> float | None:
        """Concentration made up for this weight, in mcg/mL, or units/mL for a drug dosed in units
        (None if weight-dependent and weight unknown)."""
        if self.amount_units is not None:
            return self.amount_units / self.volume_ml
        if self.amount_mg is not None:
            return self.amount_mg * 1000.0 / self.volume_ml
        if weight_kg is None or self.amount_mg_per_kg is None:
            return None
        return self.amount_mg_per_kg * weight_kg * 1000.0 / self.volume_ml


@dataclass(frozen=True)
class Derived:
    """A derived fact, declared in the rule files: boolean from a condition, a number by cases, or a product of two facts."""

    name: str
    type: str
    description: str
    when: Condition | None = None
    cases: tuple[tuple[Condition, Any], ...] = ()
    default: Any = None
    product: tuple[str, str] | None = None
    status: str = "approved"
    #: (measured MAP, SBP, DBP): the measured MAP, else DBP + (SBP - DBP) / 3
    mean_pressure: tuple[str, str, str] | None = None
    file: str = ""
    line: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def reads(self) -> set[str]:
        """Fact paths this derived fact depends on directly."""
        out: set[str] = set(self.product or ()) | set(self.mean_pressure or ())
        conds = ([self.when] if self.when is not None else []) + [c for c, _ in self.cases]
        for cond in conds:
            for leaf in leaves(cond):
                out.update(leaf.facts())
        return out


#: Kinds of temporal fact (facts computed from a timeline): required and optional parameters, and
#: the unit of the value (None: a boolean). The computations are in ``pressor.engine.ehr.timeline``.
TEMPORAL_KINDS: dict[str, tuple[frozenset[str], frozenset[str], str | None]] = {
    "sustained_below": (frozenset({"series", "minutes"}), frozenset({"threshold", "threshold_fact", "unchanged_rate"}), None),
    "rising": (frozenset({"series", "min_gap_minutes"}), frozenset({"within_hours"}), None),
    "minutes_since_last_dose": (frozenset({"drug"}), frozenset(), "min"),
    "dose_given": (frozenset({"drug"}), frozenset(), None),
    "hours_since_first_rate": (frozenset({"drugs"}), frozenset(), "h"),
    "volume_per_kg_since": (frozenset({"fluid", "since"}), frozenset(), "mL/kg"),
    "hours_since": (frozenset({"marker"}), frozenset(), "h"),
}


@dataclass(frozen=True)
class TemporalFact:
    """A patient-state fact the pack computes from a timeline (FHIR record or timeline input), declared as data.

    A value given directly in the input wins over the computed one; the result says which was used.
    """

    fact: str
    kind: str
    description: str
    params: dict[str, Any]
    unit: str | None = None
    file: str = ""
    line: int | None = None


@dataclass(frozen=True)
class StatusChange:
    """One entry of a rule's status history: when it took which status, by whom, and why."""

    date: str
    status: str
    by: str
    comment: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; an absent comment is omitted."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Rule:
    """One rule of the pack, as loaded and checked."""

    id: str
    version: str
    status: str
    title: str
    when: Condition
    kind: str
    severity: str
    summary: str
    detail: str
    citations: tuple[Citation, ...]
    section: str
    paragraph: int | None = None
    drug: str | None = None
    dose: DoseSpec | None = None
    notes: tuple[str, ...] = ()
    author: str | None = None
    reviewers: tuple[str, ...] = ()
    effective: str | None = None
    status_history: tuple[StatusChange, ...] = ()
    source_sha256: str | None = None
    file: str = ""
    line: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: Rules this one refines: when both apply only this one is shown.
    supersedes: tuple[str, ...] = ()

    def provenance(self) -> dict[str, Any]:
        """Who wrote and reviewed the rule, its status history, and the exact source it encodes."""
        source: dict[str, Any] = {"section": self.section}
        if self.paragraph is not None:
            source["paragraph"] = self.paragraph
        if self.source_sha256 is not None:
            source["sha256"] = self.source_sha256
        return {
            "version": self.version, "status": self.status, "effective": self.effective, "author": self.author,
            "reviewers": list(self.reviewers), "status_history": [s.to_dict() for s in self.status_history],
            "source": source,
        }


@dataclass(frozen=True)
class Decision:
    """A question the pack answers for everyone in ``population`` with one of ``rules``.

    ``hit_policy`` (the DMN idea): ``unique``, at most one rule applies (the lint proves no overlap), or
    ``priority``, the first rule that applies in ``rules`` order wins and the others are set aside.
    ``supporting`` rules (preparation, access, monitoring) are shown under the decision's answer.
    """

    id: str
    description: str
    population: Condition
    rules: tuple[str, ...]
    file: str = ""
    line: int | None = None
    title: str = ""
    hit_policy: str = "unique"
    supporting: tuple[str, ...] = ()
    in_plan: bool = False  # an item of the patient's plan (else a decision the lint proves, nothing more)
    complete: bool = True  # every patient of the population gets an answer (the lint proves no gap); False: "none" is an answer


@dataclass(frozen=True)
class Ban:
    """A rule that forbids something, shown only when ``relevant_when`` holds (None: whenever it fires)."""

    rule: str
    relevant_when: Condition | None = None
    because: str = ""


@dataclass(frozen=True)
class QuestionRelevance:
    """When a missing fact is worth asking about, declared in the pack: only when ``relevant_when`` holds
    (None: only when its answer would change a plan item), and not when a question in ``covered_by`` is asked."""

    fact: str
    relevant_when: Condition | None = None
    covered_by: tuple[str, ...] = ()
    because: str = ""


@dataclass(frozen=True)
class Waiver:
    """A lint finding reviewed and accepted, with its reason; it is still reported, as a warning."""

    code: str
    reason: str
    rules: tuple[str, ...] = ()
    decision: str | None = None
    when: Condition | None = None
    file: str = ""
    line: int | None = None


@dataclass(frozen=True)
class AbsentMeans:
    """A pack declaration: when these facts are absent (and ``when`` holds), rules that need them
    are not applicable, rather than undecided (no ``order`` section: no order is proposed)."""

    facts: tuple[str, ...]
    meaning: str
    section: str | None = None
    fact: str | None = None
    none: Any = None
    when: Condition | None = None
    file: str = ""
    line: int | None = None
    pointer: str = ""

    @property
    def name(self) -> str:
        """The section or fact declared."""
        return self.section or self.fact or ""


@dataclass(frozen=True)
class RulePack:
    """A loaded, validated pack. Build with :func:`pressor.engine.evaluation.pack.load_pack`."""

    name: str
    version: str
    title: str
    sha256: str
    directory: str
    rules: tuple[Rule, ...]
    derived: tuple[Derived, ...]
    preparations: tuple[Preparation, ...]
    references: dict[int, Reference]
    document: dict[str, Any]
    files: dict[str, str]
    warnings: tuple[Any, ...] = ()
    array_members: dict[str, tuple[str, ...]] = field(default_factory=dict)
    raw_pack: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    decisions: tuple[Decision, ...] = ()
    bans: tuple[Ban, ...] = ()
    question_relevance: tuple[QuestionRelevance, ...] = ()
    waivers: tuple[Waiver, ...] = ()
    absent_means: tuple[AbsentMeans, ...] = ()
    temporal: tuple[TemporalFact, ...] = ()
    #: The pack's parameters with the values in force, and the site profile that set them (if any).
    parameters: tuple["Parameter", ...] = ()
    profile: "Profile | None" = None
    #: What evaluation builds once per pack (the compiled engine); not part of the pack's identity.
    cache: PackMemo = field(default_factory=PackMemo, compare=False, repr=False)

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id (KeyError if none)."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def manifest(self) -> dict[str, Any]:
        """The pack's identity: name, version, the SHA-256 of every file and of the whole pack."""
        meta: dict[str, Any] = {k: self.raw_pack[k] for k in ("author", "effective") if k in self.raw_pack}
        return {
            "name": self.name, "version": self.version, "title": self.title, **meta,
            "sha256": self.sha256, "directory": self.directory, "rules": len(self.rules),
            "files": [{"name": name, "sha256": digest} for name, digest in sorted(self.files.items())],
        }

    def superseded_by(self) -> dict[str, frozenset[str]]:
        """Rule id -> every rule that supersedes it, directly or through a chain."""
        direct: dict[str, set[str]] = {}
        for rule in self.rules:
            for old in rule.supersedes:
                direct.setdefault(old, set()).add(rule.id)
        closed: dict[str, frozenset[str]] = {}
        for old in direct:
            seen: set[str] = set()
            todo = list(direct[old])
            while todo:
                new = todo.pop()
                if new not in seen:
                    seen.add(new)
                    todo.extend(direct.get(new, ()))
            closed[old] = frozenset(seen)
        return closed


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


@dataclass(frozen=True)
class NotEvaluable:
    """A rule that could not be decided because facts it needs are unknown."""

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


def render_condition(cond: Condition, indent: str = "") -> list[str]:
    """A condition as indented text lines (for ``rules show`` and explanations)."""
    if isinstance(cond, Compare):
        return [indent + cond.describe()]
    if isinstance(cond, Not):
        return [indent + "not:"] + render_condition(cond.child, indent + "  ")
    head = "all of:" if isinstance(cond, All) else "any of:"
    out = [indent + head]
    for child in cond.children:
        out.extend(render_condition(child, indent + "  "))
    return out
