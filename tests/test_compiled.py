"""The compiled conditions (engine/evaluation/compiled.py) against the reference evaluator (logic.py).

logic.py is the oracle: on random nested conditions over random facts (absent facts included)
and on generated patient states for the shipped pack, the compiled truth, missing facts,
evidence and derived facts must equal the reference's exactly.
"""
from __future__ import annotations

import random
from dataclasses import fields

from hypothesis import HealthCheck, given, settings

from pressor.engine.evaluation.compiled import CompiledPack, compile_truths, compiled_pack
from pressor.engine.evaluation.evaluate import evaluate, flatten_state
from pressor.engine.evaluation.logic import derive, unknowns, verdict
from pressor.engine.model import All, Compare, Recommendation

from .strategies import patient_states
from .test_engine import _random_condition, _random_facts


def _reference(cond, facts, missing_of):
    v = verdict(cond, facts, missing_of)
    return v.truth, (v.missing if v.truth is None else frozenset()), (v.evidence if v.truth is not None else ())


def test_compiled_conditions_equal_reference_on_random_rules_and_facts():
    """400 random conditions (nested all/any/not, every operator, fact-to-fact) x 500 random fact sets."""
    from pressor.engine.evaluation.compiled import _Conditions, compile_missing, compile_verdict

    rng = random.Random(20261130)
    conds = [_random_condition(rng) for _ in range(400)]
    # fact-to-fact comparisons (only derived facts use them) and a value that is a list
    conds += [Compare("vitals.a", op, value_fact="vitals.b") for op in ("<", "<=", ">", ">=", "==", "!=")]
    conds += [All((Compare("vitals.a", "<", value_fact="vitals.c"), Compare("flags.x", "==", True)))]
    compiled = _Conditions(conds)
    missing = [compile_missing(c, compiled.truth) for c in conds]
    verdicts = [compile_verdict(c) for c in conds]
    checked = {True: 0, False: 0, None: 0}
    for _ in range(500):
        facts = _random_facts(rng)
        missing_of = {"vitals.c": frozenset({"patient.weight_kg"})} if "vitals.c" not in facts else {}
        for cond, miss, verd in zip(conds, missing, verdicts):
            truth, want_missing, want_evidence = _reference(cond, facts, missing_of)
            assert compiled.truth(cond)(facts) is truth, (cond, facts)
            assert unknowns(cond, facts, missing_of) == (truth, want_missing)
            if truth is None:
                assert miss(facts, missing_of) == want_missing, (cond, facts)
            assert verd(facts) == (truth, want_evidence), (cond, facts)
            checked[truth] += 1
    assert min(checked.values()) > 10_000  # every outcome, including unknown, is exercised


def test_generated_source_holds_no_authored_text():
    """Fact names and constants are bound by name, never pasted into the generated source."""
    truth = compile_truths([Compare("shock.type", "==", "x') or __import__('os') or ('")])[0]
    assert truth({"shock.type": "septic"}) is False
    assert truth({}) is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=patient_states())
def test_compiled_pack_equals_reference_on_patient_states(pack, state):
    """Shipped pack, generated states (many facts unknown): derived facts, truth, missing facts, evidence."""
    compiled = CompiledPack(pack)
    ref_facts = flatten_state(state)
    ref = derive(pack.derived, ref_facts)
    facts = flatten_state(state)
    got = compiled.derive(facts)
    assert facts == ref_facts
    assert got.missing_of == ref.missing_of
    for rule in compiled.rules:
        truth, want_missing, want_evidence = _reference(rule.rule.when, facts, ref.missing_of)
        assert rule.truth(facts) is truth, rule.id
        if truth is None:
            assert rule.missing(facts, ref.missing_of) == want_missing, rule.id
        assert rule.verdict(facts) == (truth, want_evidence), rule.id
        if truth:
            assert got.expand(want_evidence) == ref.expand(want_evidence), rule.id
    for d in pack.derived:
        assert got.why(d.name) == ref.why(d.name), d.name


def test_recommendations_built_from_static_parts_equal_the_dataclass(pack, now):
    """The per-rule static part plus evidence and dose is the same object __init__ would build."""
    from pressor.engine.authoring.scenarios import load_scenarios

    from .test_scenarios import SCENARIOS  # the corpus fires every rule

    for scenario in load_scenarios([SCENARIOS], pack):
        result = evaluate(pack, scenario.state, now=now, include_draft=True)
        for rec in result.recommendations:
            rebuilt = Recommendation(**{f.name: getattr(rec, f.name) for f in fields(Recommendation)})
            assert rebuilt == rec and rebuilt.to_dict() == rec.to_dict()


def test_compiled_form_is_built_once_per_pack(pack):
    assert compiled_pack(pack) is compiled_pack(pack)
