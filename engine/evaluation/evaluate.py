"""``evaluate(pack, state, *, now)``: the one way anything is evaluated.

The CLI, the tests and any service call it. The pack is loaded and compiled once
(:func:`pressor.engine.evaluation.pack.load_pack`); this module only does per-patient work.
"""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any, Mapping

from ._durable import Matcher
from .compile import engine_name, member_name, to_engine
from .doses import compute_dose
from ..errors import EvaluationError, PatientStateError, Problem
from .load import Document
from .logic import derive, unknowns, verdict
from ..model import NotEvaluable, Recommendation, Result, Rule, RulePack, leaves
from .validate import check_state

ACTIVE_BY_DEFAULT = frozenset({"approved"})
ACTIVE_WITH_DRAFTS = frozenset({"approved", "draft", "in-review"})


def engine_version() -> str:
    """``pressor X; durable-rules Y`` (both matter when replaying a result)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("pressor")
    except PackageNotFoundError:  # running from a source tree that was never installed
        own = "unknown"
    return f"pressor {own}; durable-rules 2.0.28"


_ENGINE_VERSION = engine_version()


class Evaluator:
    """The compiled engine for one pack: every rule (of every status) in durable-rules, sharded."""

    def __init__(self, rules: tuple[Rule, ...], matcher: Matcher) -> None:
        self.rules = rules
        self.matcher = matcher
        self.reads = {r.id: frozenset(p for leaf in leaves(r.when) for p in leaf.facts()) for r in rules}

    @classmethod
    def build(cls, rules: list[Rule] | tuple[Rule, ...]) -> "Evaluator":
        """Compile the rules' conditions and create the engine's rulesets."""
        rules = tuple(rules)
        return cls(rules, Matcher({r.id: to_engine(r.when) for r in rules}))

    def close(self) -> None:
        """Free the engine's memory."""
        self.matcher.close()


class _EngineSlot:
    """Holds a pack's evaluator; rebuilt after an engine failure, shared by threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._evaluator: Evaluator | None = None

    def get(self, pack: RulePack) -> Evaluator:
        with self._lock:
            if self._evaluator is None:
                self._evaluator = Evaluator.build(pack.rules)
            return self._evaluator

    def discard(self, evaluator: Evaluator) -> None:
        with self._lock:
            if self._evaluator is evaluator:
                self._evaluator = None
        evaluator.close()


def _slot(pack: RulePack) -> _EngineSlot:
    slot = pack.cache.get("engine")
    if slot is None:
        slot = pack.cache.setdefault("engine", _EngineSlot())
    return slot


def prepare(pack: RulePack) -> None:
    """Build the pack's engine now (load time), so that anything it refuses fails before any patient."""
    _slot(pack).get(pack)


def release(pack: RulePack) -> None:
    """Free the engine built for ``pack`` (on reload: build the new pack first, then release the old)."""
    slot = pack.cache.pop("engine", None)
    if slot is not None and slot._evaluator is not None:
        slot._evaluator.close()


def flatten_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """``{"vitals": {"map_mmhg": 60}}`` -> ``{"vitals.map_mmhg": 60}``; lists stay whole."""
    facts: dict[str, Any] = {}
    for section, value in state.items():
        if isinstance(value, dict):
            for key, inner in value.items():
                facts[f"{section}.{key}"] = inner
        else:
            facts[section] = value
    return facts


def _engine_fact(facts: Mapping[str, Any], array_members: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for path, value in facts.items():
        if isinstance(value, list):
            for member in array_members.get(path, ()):
                flat[member_name(path, member)] = member in value
        else:
            flat[engine_name(path)] = value
    return flat


def evaluate(pack: RulePack, state: Mapping[str, Any], *, now: datetime, include_draft: bool = False,
             document: Document | None = None) -> Result:
    """Every applicable recommendation of ``pack`` for the patient ``state`` at time ``now``.

    Raises :class:`PatientStateError` if the state is invalid (nothing is evaluated),
    :class:`EvaluationError` if the engine fails (the engine is rebuilt for the next call).
    """
    if not isinstance(state, Mapping):
        where = document.where("") if document is not None else {"pointer": ""}
        raise PatientStateError([Problem("a patient state must be a mapping of sections (patient, vitals, ...)", **where)])
    check_state(state, document)
    facts = flatten_state(state)
    derivation = derive(pack.derived, facts)
    missing_of = derivation.missing_of
    slot = _slot(pack)
    evaluator = slot.get(pack)
    try:
        fired = evaluator.matcher.match(_engine_fact(facts, pack.array_members))
    except EvaluationError:
        slot.discard(evaluator)
        raise
    active = ACTIVE_WITH_DRAFTS if include_draft else ACTIVE_BY_DEFAULT
    recommendations: list[Recommendation] = []
    not_evaluable: list[NotEvaluable] = []
    for rule in pack.rules:
        if rule.status not in active:
            continue
        if rule.id in fired:
            v = verdict(rule.when, facts, missing_of)
            if v.truth is not True:
                raise EvaluationError.single(
                    f"engine fired '{rule.id}' but its condition is {v.truth}; refusing to answer",
                    rule_id=rule.id, suggestion="report this: the engine and the reference semantics disagree",
                )
            recommendations.append(_recommendation(pack, rule, derivation.expand(v.evidence), facts))
        elif not evaluator.reads[rule.id] <= facts.keys():
            t, missing = unknowns(rule.when, facts, missing_of)
            if t is None:
                not_evaluable.append(NotEvaluable(rule.id, rule.version, rule.title, tuple(sorted(missing))))
            elif t:
                raise EvaluationError.single(
                    f"engine did not fire '{rule.id}' although its condition holds; refusing to answer",
                    rule_id=rule.id, suggestion="report this: the engine and the reference semantics disagree",
                )
    recommendations, superseded = _drop_superseded(pack, recommendations)
    recommendations.sort(key=Recommendation.sort_key)
    derived_out = {d.name: facts.get(d.name) for d in pack.derived}
    unresolved = sorted({c.number for r in recommendations for c in r.citations if not c.resolved})
    warnings = _measurement_warnings(facts) + superseded + tuple(
        f"reference [{n}] is cited by the source but missing from its reference list; treat its claims as unverified"
        for n in unresolved
    )
    identity: dict[str, Any] = {"name": pack.name, "version": pack.version, "sha256": pack.sha256}
    if pack.profile is not None:
        identity["profile"] = pack.profile.to_dict()
    return Result(
        pack=identity,
        evaluated_at=now.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
        engine_version=_ENGINE_VERSION,
        recommendations=tuple(recommendations),
        not_evaluable=tuple(not_evaluable),
        derived=derived_out,
        warnings=warnings,
        include_draft=include_draft,
    )


MAP, SBP, DBP = "vitals.map_mmhg", "vitals.sbp_mmhg", "vitals.dbp_mmhg"
MAP_USED, MAP_TARGET = "derived.map_mmhg", "derived.map_target_mmhg"
BELOW_TARGET, FLAG = "derived.below_map_target", "findings.hypotension_persists"


def _measurement_warnings(facts: Mapping[str, Any]) -> tuple[str, ...]:
    """Say when the MAP was estimated, and when the hypotension flag contradicts the measured pressure.

    The pack decides "below target" from the pressure (``derived.below_map_target``); the flag never
    overrides it, but a disagreement is worth a look (a stale flag, or a wrong reading).
    """
    out: list[str] = []
    if MAP_USED in facts and MAP not in facts:
        out.append(f"MAP not measured: ESTIMATED as {facts[MAP_USED]:g} mmHg from SBP {facts[SBP]:g} and DBP "
                   f"{facts[DBP]:g} (DBP + (SBP - DBP) / 3); rules that compare the MAP used this estimate")
    below, flag = facts.get(BELOW_TARGET), facts.get(FLAG)
    if below is not None and flag is not None and below != flag:
        if MAP_USED in facts and MAP_TARGET in facts:
            shown = (f"the {'measured' if MAP in facts else 'estimated'} MAP is {facts[MAP_USED]:g} mmHg against a "
                     f"target of {facts[MAP_TARGET]:g} mmHg")
        else:
            shown = f"the pressure ({SBP} {facts.get(SBP, 'unknown')}) is {'below' if below else 'not below'} the target for age"
        out.append(f"{FLAG} is {str(flag).lower()} but {shown} ({'below' if below else 'not below'} target): the "
                   f"recommendations follow the measured pressure; check the flag and the reading")
    return tuple(out)


def _drop_superseded(pack: RulePack, recs: list[Recommendation]) -> tuple[list[Recommendation], tuple[str, ...]]:
    """A rule that another shown rule supersedes (``supersedes:``) is left out, and the result says so."""
    by = pack.cache.get("superseded_by")
    if by is None:
        by = pack.cache.setdefault("superseded_by", pack.superseded_by())
    if not by:
        return recs, ()
    shown = {r.rule_id for r in recs}
    kept, notes = [], []
    for rec in recs:
        winners = sorted(by.get(rec.rule_id, frozenset()) & shown)
        if winners:
            notes.append(f"{rec.rule_id} is not shown: superseded by {', '.join(winners)}")
        else:
            kept.append(rec)
    return kept, tuple(notes)


def _citations(pack: RulePack, rule: Rule) -> tuple:
    """The rule's citations resolved against the pack's references (computed once per pack)."""
    resolved = pack.cache.get("citations")
    if resolved is None:
        resolved = pack.cache.setdefault(
            "citations", {r.id: tuple(pack.references[c.ref] for c in r.citations) for r in pack.rules})
    return resolved[rule.id]


def _recommendation(pack: RulePack, rule: Rule, evidence: tuple, facts: Mapping[str, Any]) -> Recommendation:
    dose = compute_dose(rule.dose, facts, pack.preparations) if rule.dose is not None else None
    return Recommendation(
        rule_id=rule.id, rule_version=rule.version, status=rule.status, kind=rule.kind, severity=rule.severity,
        title=rule.title, summary=rule.summary, detail=rule.detail,
        citations=_citations(pack, rule), evidence=evidence,
        source_section=rule.section, dose=dose, drug=rule.drug or (rule.dose.drug if rule.dose else None),
    )
