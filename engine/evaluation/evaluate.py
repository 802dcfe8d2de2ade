"""``evaluate(pack, state, *, now)``: the one way anything is evaluated.

The CLI, the tests and any service call it. The pack is loaded and compiled once
(:func:`pressor.engine.evaluation.pack.load_pack`); this module only does per-patient work.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Mapping

from ._durable import Matcher
from .compiled import compiled_pack
from .compile import engine_name, member_name, to_engine
from .. import __version__
from ..errors import EvaluationError, PatientStateError, Problem
from .load import Document
from .doses import compute_dose
from .plan import build_plan
from .logic import set_aside_doubtful_pressures
from ..model import (AskNext, Conditional, NotApplicable, NotEvaluable, Recommendation, Result, Rule, RulePack)
from .validate import check_state
from .memo import BUILD_LOCK, superseded_by

ACTIVE_WITH_DRAFTS = frozenset({"approved", "draft", "in-review"})
#: Among conditional advice for the same answer: acting before avoiding, considering and watching.


def engine_version() -> str:
    """``pressor X; durable-rules Y`` (both matter when replaying a result)."""
    # From the package itself, not importlib.metadata: importing that costs ~15 ms of every start.
    return f"pressor {__version__}; durable-rules 2.0.28"


_ENGINE_VERSION = engine_version()


class Evaluator:
    """The compiled engine for one pack: every rule (of every status) in durable-rules, sharded."""

    def __init__(self, rules: tuple[Rule, ...], matcher: Matcher) -> None:
        self.rules = rules
        self.matcher = matcher

    @classmethod
    def build(cls, rules: list[Rule] | tuple[Rule, ...], prepared: Any = None) -> "Evaluator":
        """Compile the rules' conditions and create the engine's rulesets (from ``prepared``, what
        :func:`~._durable.rulesets` made of these rules before, when given)."""
        rules = tuple(rules)
        if prepared is not None:
            return cls(rules, Matcher(prepared=prepared))
        return cls(rules, Matcher({r.id: to_engine(r.when) for r in rules}))

    def close(self) -> None:
        """Free the engine's memory."""
        self.matcher.close()


class EngineSlot:
    """Holds a pack's evaluator; rebuilt after an engine failure, shared by threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._evaluator: Evaluator | None = None

    def get(self, pack: RulePack) -> Evaluator:
        with self._lock:
            if self._evaluator is None:
                self._evaluator = Evaluator.build(pack.rules, pack.cache.rulesets)
                pack.cache.rulesets = self._evaluator.matcher.rulesets
            return self._evaluator

    def discard(self, evaluator: Evaluator) -> None:
        with self._lock:
            if self._evaluator is evaluator:
                self._evaluator = None
        evaluator.close()


def engine_slot(pack: RulePack) -> EngineSlot:
    """The slot holding the pack's evaluator (made on first use, kept with the pack)."""
    slot = pack.cache.engine
    if slot is None:
        with BUILD_LOCK:
            slot = pack.cache.engine
            if slot is None:
                slot = pack.cache.engine = EngineSlot()
    return slot


def prepare(pack: RulePack) -> None:
    """Build the pack's engine, its compiled conditions and what the residuals of undecided rules
    need (see residual.py) now (load time), so that anything refused fails before any patient."""
    from .residual import context

    engine_slot(pack).get(pack)
    compiled_pack(pack)
    context(pack)


def freeze_long_lived() -> None:
    """Move everything alive now (the pack, the compiled rules, the imported modules) out of the cyclic
    garbage collector's reach: a process that only evaluates then spends far less time in collections,
    which otherwise rescan those objects as each evaluation's short-lived ones trigger them. And collect
    less often: an evaluation allocates thousands of short-lived objects, while what survives (the bounded
    analysis caches) is rescanned by every full collection (measured, issue 21: first-sight evaluations of
    512 rules 5-20% faster with thresholds of 20,000/20/20 than with Python's 700/10/10)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def release(pack: RulePack) -> None:
    """Free the engine built for ``pack`` (on reload: build the new pack first, then release the old)."""
    slot, pack.cache.engine = pack.cache.engine, None
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


_NAMES: dict[str, str] = {}  # fact path -> engine property name (a few dozen, shared by every pack)


def _engine_fact(facts: Mapping[str, Any], array_members: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    names = _NAMES
    for path, value in facts.items():
        if value.__class__ is list:
            for member in array_members.get(path, ()):
                flat[member_name(path, member)] = member in value
        else:
            name = names.get(path)
            if name is None:
                name = names[path] = engine_name(path)
            flat[name] = value
    return flat


def evaluate(pack: RulePack, state: Mapping[str, Any], *, now: datetime, include_draft: bool = False,
             document: Document | None = None, advice: bool = True) -> Result:
    """Every applicable recommendation of ``pack`` for the patient ``state`` at time ``now``.

    ``advice`` (the default; the CLI, the service and the web app ask): also the advice about what is not
    known: conditional advice, the questions that decide it, the rules that cannot apply, and each undecided
    rule's missing facts. ``advice=False`` (a batch may not need it) decides the same rules, verdicts and
    evidence without them (and says so: ``advice: false``); a result with advice is the same either way.

    Raises :class:`PatientStateError` if the state is invalid (nothing is evaluated),
    :class:`EvaluationError` if the engine fails (the engine is rebuilt for the next call).
    """
    if not isinstance(state, Mapping):
        where = document.where("") if document is not None else {"pointer": ""}
        raise PatientStateError([Problem("a patient state must be a mapping of sections (patient, vitals, ...)", **where)])
    check_state(state, document)
    compiled = compiled_pack(pack)
    facts = flatten_state(state)
    doubts = set_aside_doubtful_pressures(pack.derived, facts)
    derivation = compiled.derive(facts)
    missing_of = derivation.missing_of
    decided = completion_of(pack).decide(facts, missing_of)
    slot = engine_slot(pack)
    evaluator = slot.get(pack)
    try:
        fired = evaluator.matcher.match(_engine_fact(facts, pack.array_members))
    except EvaluationError:
        slot.discard(evaluator)
        raise
    recommendations: list[Recommendation] = []
    not_evaluable: list[NotEvaluable] = []
    undecided: list[Rule] = []
    active = compiled.active(ACTIVE_WITH_DRAFTS if include_draft else pack.in_force)
    for rule in active.fired(fired):
        # Every rule the engine fires must be TRUE under the reference semantics (compiled).
        truth, evidence = rule.verdict(facts)
        if truth is not True:
            raise EvaluationError.single(
                f"engine fired '{rule.id}' but its condition is {truth}; refusing to answer",
                rule_id=rule.id, suggestion="report this: the engine and the reference semantics disagree",
            )
        recommendations.append(rule.recommendation(evidence if rule.plain_evidence else derivation.expand(evidence),
                                                   facts, pack))
    # A rule not fired is false if it knows all its facts; unknown or false otherwise: ask the reference.
    for rule in active.reading_absent(facts.keys()):
        if rule.id in fired:
            continue
        truth = rule.truth(facts)
        if truth is None:
            not_evaluable.append(rule.not_evaluable(rule.missing(facts, missing_of) if advice else frozenset()))
            undecided.append(rule.rule)
        elif truth:
            raise EvaluationError.single(
                f"engine did not fire '{rule.id}' although its condition holds; refusing to answer",
                rule_id=rule.id, suggestion="report this: the engine and the reference semantics disagree",
            )
    recommendations, superseded = _drop_superseded(pack, recommendations)
    recommendations.sort(key=Recommendation.sort_key)
    conditional, ask_next, not_applicable = (
        _when_missing(pack, undecided, facts, recommendations) if undecided and advice else ((), (), ()))
    plan = build_plan(pack, recommendations, conditional, ask_next, facts)
    derived_out = {d.name: facts.get(d.name) for d in pack.derived}
    unresolved = sorted({c.number for r in recommendations for c in r.citations if not c.resolved})
    warnings = doubts + _measurement_warnings(pack, facts) + superseded + tuple(
        f"reference [{n}] is cited by the source but missing from its reference list; treat its claims as unverified"
        for n in unresolved
    )
    identity: dict[str, Any] = {"name": pack.name, "version": pack.version, "sha256": pack.sha256}
    if pack.profile is not None:
        identity["profile"] = pack.profile.to_dict()
    if pack.release == "validation":
        identity["release"] = "validation"
    return Result.of(dict(
        pack=identity,
        evaluated_at=now.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
        engine_version=_ENGINE_VERSION,
        recommendations=tuple(recommendations),
        not_evaluable=tuple(not_evaluable),
        derived=derived_out,
        warnings=warnings,
        include_draft=include_draft,
        conditional=conditional,
        ask_next=ask_next,
        not_applicable=not_applicable,
        decided_for_any_value=decided,
        plan=plan,
        advice=advice,
    ))


def completion_of(pack: RulePack) -> Any:
    """The pack's :class:`~.completion.Completion` (built on first use, kept with the pack)."""
    found = pack.cache.completion
    if found is None:
        from .completion import Completion

        with BUILD_LOCK:
            found = pack.cache.completion
            if found is None:
                found = pack.cache.completion = Completion(pack, compiled_pack(pack).derived)
    return found


def _when_missing(pack: RulePack, undecided: list[Rule], facts: Mapping[str, Any], shown: list[Recommendation]
                  ) -> tuple[tuple[Conditional, ...], tuple[AskNext, ...], tuple[NotApplicable, ...]]:
    """Conditional advice, the questions that decide it, and the rules that cannot apply (see residual.py).

    What is assembled from an analysis depends on nothing but its key, so it is kept with the pack's residual
    context; only the doses of conditional dose rules (which read the patient's weight) are computed per call.
    """
    from .residual import analyse, context

    ctx = context(pack)
    analysis = analyse(pack, undecided, facts, frozenset(r.rule_id for r in shown))
    assembled = ctx.assembled.get(analysis.key)
    if assembled is None:
        assembled = ctx.remember(analysis.key, _assemble(pack, analysis), ctx.assembled)
    conditional, ask, not_applicable, dosed = assembled
    if dosed:
        conditional = list(conditional)
        for i, spec in dosed:
            dose = compute_dose(spec, facts, pack.preparations, pack.dosing)
            if dose is not None:
                conditional[i] = replace(conditional[i], dose=dose)
        conditional = tuple(conditional)
    return conditional, ask, not_applicable


def _assemble(pack: RulePack, analysis: Any) -> tuple[tuple[Conditional, ...], tuple[AskNext, ...],
                                                 tuple[NotApplicable, ...], tuple[tuple[int, Any], ...]]:
    """The advice lists of one analysis, ordered (severity, kind, then the rules' places in the pack), without
    doses; and (position, dose spec) of each dose rule."""
    from .wording import question

    shown = analysis.key[1]
    asked = {q.fact: i for i, q in enumerate(analysis.questions)}
    compiled = compiled_pack(pack).by_id
    # by the residual's words: each group's best-ranked member (its rank and outcome) and its advice, ranked
    groups: dict[str, list[tuple[tuple[int, int, int], Conditional]]] = {}
    best: dict[str, tuple[tuple[int, int, int], Any]] = {}
    not_applicable: list[NotApplicable] = []
    for item in analysis.undecided:
        rule = item.rule
        if item.outcome == "conditional":
            rank = compiled[rule.id].rank
            members = groups.get(item.text)
            if members is None:
                groups[item.text] = [(rank, item.advice)]
                best[item.text] = (rank, item)
            else:
                members.append((rank, item.advice))
                if rank < best[item.text][0]:
                    best[item.text] = (rank, item)
        elif item.outcome == "superseded":
            winners = sorted(superseded_by(pack)[rule.id] & shown)
            not_applicable.append(NotApplicable(rule.id, rule.version, rule.title, f"superseded by {', '.join(winners)}"))
        elif item.outcome == "not_applicable":
            if item.because:
                because, declared = "; ".join(d.meaning for d in item.because), tuple(d.name for d in item.because)
            else:
                because, declared = "no value of the missing facts makes it apply", ()
            not_applicable.append(NotApplicable(rule.id, rule.version, rule.title, because, declared))
    unasked = len(asked)

    def group_key(text: str) -> tuple:
        # The answer to the best question first; among its answers, the one that makes the most advice firm
        # (advice that holds whatever the answer comes last), then the most severe, acting before watching.
        (severity, kind, place), first = best[text]
        return (min(asked.get(f, unasked) for f in first.needs), len(first.needs), first.whatever, -len(groups[text]),
                (severity, kind), place)

    conditional = tuple(advice for text in sorted(groups, key=group_key)
                        for _, advice in (sorted(groups[text]) if len(groups[text]) > 1 else groups[text]))
    specs = compiled_pack(pack).dose_specs
    dosed = tuple((i, specs[c.rule_id]) for i, c in enumerate(conditional) if c.rule_id in specs)
    ask = tuple(AskNext(q.fact, question(q.fact), tuple(compiled[r.id].named for r in q.decides))
                for q in analysis.questions)
    return conditional, ask, tuple(not_applicable), dosed


def _measurement_warnings(pack: RulePack, facts: Mapping[str, Any]) -> tuple[str, ...]:
    """Say when a mean pressure was estimated, and when a recorded flag contradicts the derived fact the pack
    says it should agree with (``agrees_with``: the hypotension flag against "below target").

    The derived fact decides; the flag never overrides it, but a disagreement is worth a look (a stale flag,
    or a wrong reading). The facts are the pack's (``mean_pressure``, ``agrees_with``): the engine names none.
    """
    out: list[str] = []
    pressures = [d for d in pack.derived if d.mean_pressure is not None]
    for d in pressures:
        m, sbp, dbp = d.mean_pressure  # type: ignore[misc]
        if d.name in facts and m not in facts:
            out.append(f"MAP not measured: ESTIMATED as {facts[d.name]:g} mmHg from SBP {facts[sbp]:g} and DBP "
                       f"{facts[dbp]:g} (DBP + (SBP - DBP) / 3); rules that compare the MAP used this estimate")
    for d in pack.derived:
        agree = d.raw.get("agrees_with")
        if not agree:
            continue
        value, flag = facts.get(d.name), facts.get(agree["fact"])
        if value is None or flag is None or value == flag:
            continue
        side = "below" if value else "not below"
        mean = next((p for p in pressures if p.name in facts), None)
        target = agree.get("target")
        if mean is not None and target in facts:
            measured = "measured" if mean.mean_pressure and mean.mean_pressure[0] in facts else "estimated"
            shown = f"the {measured} MAP is {facts[mean.name]:g} mmHg against a target of {facts[target]:g} mmHg"
        else:
            sbp = pressures[0].mean_pressure[1] if pressures and pressures[0].mean_pressure else None
            shown = f"the pressure ({sbp} {facts.get(sbp, 'unknown') if sbp else ''}) is {side} the target for age"
        out.append(f"{agree['fact']} is {str(flag).lower()} but {shown} ({side} target): the "
                   f"recommendations follow the measured pressure; check the flag and the reading")
    return tuple(out)


def _drop_superseded(pack: RulePack, recs: list[Recommendation]) -> tuple[list[Recommendation], tuple[str, ...]]:
    """A rule that another shown rule supersedes (``supersedes:``) is left out, and the result says so."""
    by = superseded_by(pack)
    if not by:
        return recs, ()
    shown = {r.rule_id for r in recs}
    kept: list[Recommendation] = []
    left_out: dict[tuple[str, ...], list[str]] = {}  # the same winners: one note (a scope rule supersedes all)
    for rec in recs:
        winners = tuple(sorted(by.get(rec.rule_id, frozenset()) & shown))
        if winners:
            left_out.setdefault(winners, []).append(rec.rule_id)
        else:
            kept.append(rec)
    notes = tuple(f"{', '.join(ids)} {'is' if len(ids) == 1 else 'are'} not shown: superseded by {', '.join(winners)}"
                  for winners, ids in left_out.items())
    return kept, notes


def superseded_notes(warnings: tuple[str, ...]) -> dict[str, str]:
    """Rule id -> the result's note saying it fired but is not shown (a shown rule supersedes it)."""
    out: dict[str, str] = {}
    for note in warnings:
        for verb in (" is not shown: superseded by ", " are not shown: superseded by "):
            if verb in note:
                for rule_id in note.split(verb)[0].split(", "):
                    out[rule_id] = note
    return out
