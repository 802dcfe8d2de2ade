"""The compiled rule pack: its rules, derived and temporal facts, preparations, decisions, bans, waivers and
references, frozen once loaded (:mod:`.evaluation.pack` builds it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .conditions import Condition, leaves
from .evaluation.memo import PackMemo

if TYPE_CHECKING:
    from .dosing_policy import DosingPolicy
    from .evaluation.parameters import Parameter, Profile


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
    #: (low, high) mmHg: a measured mean pressure outside it is treated as unknown (an arterial-line artefact)
    pressure_envelope: tuple[float, float] | None = None
    #: (per-kg fact, drug, the pack's dosing policy): the fact re-expressed per kg of the drug's dosing weight
    per_dosing_kg: "tuple[str, str, DosingPolicy] | None" = None
    weight_reads: frozenset[str] = frozenset()  # the facts that dosing weight reads
    file: str = ""
    line: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def reads(self) -> set[str]:
        """Fact paths this derived fact depends on directly."""
        out: set[str] = set(self.product or ()) | set(self.mean_pressure or ())
        if self.per_dosing_kg is not None:
            out |= {self.per_dosing_kg[0]} | self.weight_reads
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
    #: Which weight each drug's per-kg dose uses, and the fact giving each drug's bag in use.
    dosing: "DosingPolicy | None" = None
    #: What evaluation builds once per pack (the compiled engine); not part of the pack's identity.
    cache: PackMemo = field(default_factory=PackMemo, compare=False, repr=False)

    @property
    def release(self) -> str:
        """``validation`` when the pack is released for validation (its in-review rules in force), else ``clinical``."""
        return str(self.raw_pack.get("release", {}).get("stage", "clinical"))

    @property
    def in_force(self) -> frozenset[str]:
        """The statuses whose rules are shown by default: approved; and in-review too in a validation release
        (rules whose clinical sign-off is not recorded, for shadow and validation use)."""
        return frozenset({"approved", "in-review"}) if self.release == "validation" else frozenset({"approved"})

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
