"""The durable-rules adapter against the plain-Python reference semantics."""
from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings

from pressor.engine.evaluation import _durable
from pressor.engine.evaluation.compile import to_engine
from pressor.engine.errors import RuleFileError
from pressor.engine.evaluation.evaluate import _engine_fact, completion_of, engine_slot, evaluate, flatten_state
from pressor.engine.evaluation.logic import derive, set_aside_doubtful_pressures, truth
from pressor.engine.model import All, Any_, Compare, Not

from .strategies import patient_states

NUMS = ["vitals__a", "vitals__b", "vitals__c"]
BOOLS = ["flags__x", "flags__y"]
ENUM = ("septic", "cardiogenic", "none")


def _random_leaf(rng: random.Random) -> Compare:
    kind = rng.choice(["num", "num", "bool", "enum", "known"])
    if kind == "num":
        op = rng.choice(["<", "<=", ">", ">=", "==", "!=", "in"])
        value = tuple(rng.sample([0, 1, 2.5, 65, 70], 2)) if op == "in" else rng.choice([0, 1, 2.5, 65, 70, 1.0e-05])
        return Compare(rng.choice(NUMS).replace("__", "."), op, value)
    if kind == "bool":
        return Compare(rng.choice(BOOLS).replace("__", "."), rng.choice(["==", "!="]), rng.choice([True, False]))
    if kind == "enum":
        op = rng.choice(["==", "!=", "in"])
        return Compare("shock.type", op, tuple(rng.sample(ENUM, 2)) if op == "in" else rng.choice(ENUM))
    return Compare(rng.choice(NUMS + BOOLS).replace("__", "."), rng.choice(["known", "unknown"]))


def _random_condition(rng: random.Random, depth: int = 0):
    if depth >= 3 or rng.random() < 0.35:
        return _random_leaf(rng)
    roll = rng.random()
    if roll < 0.2:
        return Not(_random_condition(rng, depth + 1))
    kids = tuple(_random_condition(rng, depth + 1) for _ in range(rng.randint(1, 3)))
    return All(kids) if roll < 0.6 else Any_(kids)


def _random_facts(rng: random.Random) -> dict:
    facts: dict = {}
    for name in NUMS:
        if rng.random() < 0.75:
            facts[name.replace("__", ".")] = rng.choice([0, 1, 2.5, 65, 70, 64.99, 70.01, 1.0e-05, 3])
    for name in BOOLS:
        if rng.random() < 0.75:
            facts[name.replace("__", ".")] = rng.choice([True, False])
    if rng.random() < 0.75:
        facts["shock.type"] = rng.choice(ENUM)
    return facts


def _shown(pack, fired: set[str]) -> set[str]:
    """The fired rules a result shows: those superseded by another fired rule are left out."""
    by = pack.superseded_by()
    return {rid for rid in fired if not (by.get(rid, frozenset()) & fired)}


def test_engine_matches_reference_on_random_rules_and_facts():
    """300 random rules (nested all/any/not, every operator) x 1,000 random facts: zero mismatches."""
    rng = random.Random(20261124)
    rules = {f"r{i}": _random_condition(rng) for i in range(300)}
    matcher = _durable.Matcher({k: to_engine(c) for k, c in rules.items()})
    try:
        assert len(matcher.shard_sizes) > 1  # the generated set must exercise sharding
        for _ in range(1000):
            facts = _random_facts(rng)
            expected = {k for k, c in rules.items() if truth(c, facts) is True}
            assert matcher.match(_engine_fact(facts, {})) == expected, facts
    finally:
        matcher.close()


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=patient_states())
def test_pack_firings_equal_reference_semantics(pack, now, state):
    """For the shipped pack, what durable-rules fires is exactly what Kleene logic says is TRUE (over the facts
    with the derived facts every completion decides: tests/test_completion.py checks those by enumeration)."""
    facts = flatten_state(state)
    set_aside_doubtful_pressures(pack.derived, facts)  # as evaluate() does: a MAP a line artefact explains
    completion_of(pack).decide(facts, derive(pack.derived, facts).missing_of)
    expected = {r.id for r in pack.rules if truth(r.when, facts) is True}
    matcher = engine_slot(pack).get(pack).matcher
    assert matcher.match(_engine_fact(facts, pack.array_members)) == expected
    result = evaluate(pack, state, now=now, include_draft=True)
    assert set(result.fired_ids()) == _shown(pack, {r.id for r in pack.rules if r.id in expected and r.status != "retired"})


def test_stress_more_alpha_tests_on_one_fact_than_one_ruleset_allows():
    """640 rules on one fact, all satisfied at once: sharding keeps every ruleset under error 303."""
    rules = {f"t{i}": Compare("vitals.map_mmhg", ">", float(i) / 10) for i in range(640)}
    matcher = _durable.Matcher({k: to_engine(c) for k, c in rules.items()})
    try:
        # 640 distinct tests, one a rule: at most 400 distinct tests and 256 rules a shard, so 3 shards,
        # each matching more alpha tests at once (up to 214) than upstream's fixed stack of 64 held
        assert len(matcher.shard_sizes) == 3 and max(matcher.shard_sizes) <= _durable.MAX_RULES_PER_SHARD
        assert max(matcher.shard_sizes) > 64
        assert matcher.match({"vitals__map_mmhg": 100}) == set(rules)
        assert matcher.match({"vitals__map_mmhg": 0}) == set()
    finally:
        matcher.close()


def test_one_rule_of_many_distinct_comparisons_fires_only_when_all_hold():
    """Past upstream's 64 alpha tests on one fact (pressor's build takes 1,024): a rule of 150 comparisons, one
    of them false by 0.01, does not fire; with all true it does."""
    rule = All(tuple(Compare("vitals.map_mmhg", ">", float(i) / 10) for i in range(150)))
    matcher = _durable.Matcher({"many": to_engine(rule)})
    try:
        assert matcher.match({"vitals__map_mmhg": 100}) == {"many"}
        assert matcher.match({"vitals__map_mmhg": 14.89}) == set()
        assert matcher.match({"vitals__map_mmhg": 0.05}) == set()
    finally:
        matcher.close()


def _greedy_state(pack) -> tuple[dict, int, int]:
    """A state that satisfies as many of the pack's comparisons on input facts as one state can.

    For each input fact, pick the candidate value (each threshold and either side of it)
    that makes the most comparisons true. Returns the state, the comparisons it satisfies
    and the number of comparisons on input facts.
    """
    from pressor.engine.evaluation.logic import compare
    from pressor.engine.model import leaves

    from pressor.engine.evaluation.compile import state_vocabulary
    from pressor.engine.evaluation.validate import STATE_SCHEMA, schema

    VOCAB = state_vocabulary(schema(STATE_SCHEMA))

    by_fact: dict[str, list] = {}
    for rule in pack.rules:
        for leaf in leaves(rule.when):
            if leaf.fact in VOCAB and leaf.op not in ("known", "unknown"):
                by_fact.setdefault(leaf.fact, []).append(leaf)
    state: dict = {}
    satisfied = 0
    for fact, tests in by_fact.items():
        ft = VOCAB[fact]
        if ft.kind == "boolean":
            options = [True, False]
        elif ft.kind == "enum":
            options = list(ft.values)
        elif ft.kind == "array":
            options = [list(ft.values)]
        else:
            points = {v for t in tests for v in (t.value if isinstance(t.value, tuple) else (t.value,))}
            options = [p + d for p in points for d in (-0.01, 0, 0.01) if ft.minimum < p + d <= ft.maximum]
        best = max(options, key=lambda o: sum(bool(compare(t, {fact: o})) for t in tests))
        satisfied += sum(bool(compare(t, {fact: best})) for t in tests)
        section, _, key = fact.partition(".")
        if key:
            state.setdefault(section, {})[key] = best
        else:
            state[section] = best
    state.get("vitals", {}).pop("map_mmhg", None)  # keep the pressures consistent with each other
    return state, satisfied, sum(len(t) for t in by_fact.values())


def test_stress_state_satisfying_as_many_conditions_as_possible(pack, now):
    """The state matching the most comparisons at once fires exactly what the reference says."""
    state, satisfied, total = _greedy_state(pack)
    assert satisfied >= total // 2
    facts = flatten_state(state)
    derive(pack.derived, facts)
    expected = {r.id for r in pack.rules if truth(r.when, facts) is True}
    result = evaluate(pack, state, now=now, include_draft=True)
    assert set(result.fired_ids()) == _shown(pack, expected)
    assert len(expected) >= 10


def test_fnv_collisions_are_detected_at_build_time():
    assert _durable.fnv1a_32("lab_512789") == _durable.fnv1a_32("lab_749192")
    assert _durable.check_name_hashes(["lab_512789", "lab_749192", "other"]) == [("lab_512789", "lab_749192")]
    with pytest.raises(RuleFileError, match="share a 32-bit hash"):
        _durable.Matcher({"a": {"lab_512789": 1}, "b": {"lab_749192": 1}})


@pytest.mark.parametrize("value, text", [(1e-05, "1.0e-05"), (1e16, "1.0e+16"), (0.1, "0.1"), (65, "65"), (True, "true")])
def test_numbers_reach_the_engine_without_bare_exponents(value, text):
    assert _durable.number_json(value) == text


def test_identical_comparisons_are_shared_and_do_not_need_another_shard():
    """40 rules over the same two comparisons fit one shard (the engine shares identical tests)."""
    rules = {f"s{i}": All((Compare("vitals.map_mmhg", "<", 65), Compare("flags.x", "==", True))) for i in range(40)}
    matcher = _durable.Matcher({k: to_engine(c) for k, c in rules.items()})
    try:
        assert matcher.shard_sizes == [40]
        assert matcher.match({"vitals__map_mmhg": 60, "flags__x": True}) == set(rules)
    finally:
        matcher.close()


def test_empty_groups_never_reach_the_engine():
    with pytest.raises(ValueError, match="empty group"):
        _durable.group("$and", [])


def test_no_module_but_the_adapter_imports_durable_rules():
    from pathlib import Path

    engine_dir = Path(_durable.__file__).parent
    importers = [p.name for p in engine_dir.glob("*.py") if "durable_rules" in p.read_text() and p.name != "_durable.py"]
    assert importers == []


def test_evidence_of_a_true_negation_inside_any_is_kept():
    from pressor.engine.evaluation.logic import verdict

    cond = Any_((Not(Compare("vitals.map_mmhg", "<", 65)), Compare("vitals.sbp_mmhg", "<", 70)))
    v = verdict(cond, {"vitals.map_mmhg": 70, "vitals.sbp_mmhg": 90}, {})
    assert v.truth is True
    assert [(e.fact, e.holds) for e in v.evidence] == [("vitals.map_mmhg", False)]
    v = verdict(All((Compare("vitals.map_mmhg", "<", 65), Compare("vitals.sbp_mmhg", "<", 70))), {"vitals.map_mmhg": 70}, {})
    assert v.truth is False and v.evidence[0].fact == "vitals.map_mmhg"


def test_fact_json_never_writes_a_bare_exponent():
    fact = {"vitals__a": 1e-05, "flags__x": True, "shock__type": "septic e-5", "e__b": 1e16, "n": 2.5e-07, "m": 3e-9}
    text = _durable.fact_json(fact)
    assert not re.search(r'":-?\d+[eE]', text), text  # every exponent has a dot before it (the engine's error 204)
    assert '"e__b":1.0e+16' in text and '"shock__type":"septic e-5"' in text  # strings untouched
    assert {k: v for k, v in json.loads(text).items() if k in fact} == fact  # the same numbers
    assert text.endswith(',"sid":"pressor","id":"pressor-state","_ps":1}')
    with pytest.raises(ValueError):  # orjson would write null: refused, never sent as a missing value
        _durable.fact_json({"a": float("nan")})
    assert _durable.fact_json({}) == '{"sid":"pressor","id":"pressor-state","_ps":1}'


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=patient_states())
def test_unknowns_agrees_with_verdict(pack, state):
    from pressor.engine.evaluation.logic import unknowns, verdict

    facts = flatten_state(state)
    missing_of = derive(pack.derived, facts).missing_of
    for rule in pack.rules:
        v = verdict(rule.when, facts, missing_of)
        assert unknowns(rule.when, facts, missing_of) == (v.truth, v.missing), rule.id


def test_each_match_retracts_its_fact_by_session_and_id_so_nothing_reaches_the_next():
    """The fact is retracted by its session and id alone (durable-rules finds the stored fact by them): a
    fact that fired every rule is gone before the next match, and one that fires nothing leaves no trace."""
    rules = {"low": Compare("vitals.map_mmhg", "<", 65.0), "high": Compare("vitals.map_mmhg", ">=", 65.0),
             "known": Compare("vitals.map_mmhg", ">", 0.0)}
    matcher = _durable.Matcher({k: to_engine(c) for k, c in rules.items()})
    try:
        for value, expected in ((50.0, {"low", "known"}), (80.0, {"high", "known"}), (50.0, {"low", "known"})):
            assert matcher.match(_engine_fact({"vitals.map_mmhg": value}, {})) == expected
            assert matcher.match(_engine_fact({}, {})) == set()
    finally:
        matcher.close()
