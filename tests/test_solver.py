"""The solver against the reference semantics: what it says is possible has a witness, what it rules out never happens."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pressor.engine.errors import PatientStateError
from pressor.engine.evaluation.evaluate import flatten_state
from pressor.engine.evaluation.logic import derive, truth
from pressor.engine.model import All, Any_, Compare, Not
from pressor.engine.authoring.solver import Interval, Space, complement, meet, op_span, points
from pressor.engine.evaluation.validate import STATE_SCHEMA, check_state, schema

POLARITY = {"T": True, "F": False, "U": None}


@pytest.fixture(scope="module")
def space(pack):
    return Space(pack, schema(STATE_SCHEMA))


def _truth_of(pack, state, cond):
    facts = flatten_state(state)
    derive(pack.derived, facts)
    return truth(cond, facts)


def _valid(state):
    try:
        check_state(state)
    except PatientStateError:
        return False
    return True


def _goal(space, cond, pol):
    return space.unknown(cond) if pol == "U" else space.formula(cond, pol)


def test_strict_and_non_strict_bounds(space, pack):
    below = Compare("vitals.map_mmhg", "<", 65)
    at_least = Compare("vitals.map_mmhg", ">=", 65)
    at_most = Compare("vitals.map_mmhg", "<=", 65)
    assert not space.satisfiable(space.formula(All((below, at_least)), "T"))
    store = next(space.solutions(space.formula(All((at_most, at_least)), "T")))
    (state,) = list(space.witnesses(store))[:1]
    assert state == {"vitals": {"map_mmhg": 65}}


def test_schema_range_bounds_the_space(space):
    assert not space.satisfiable(space.formula(Compare("vitals.map_mmhg", "<", 10), "T"))
    assert space.satisfiable(space.formula(Compare("vitals.map_mmhg", "<=", 10), "T"))
    # exclusiveMinimum: a concentration of exactly 0 is outside the schema
    conc = "infusions.norepinephrine_concentration_mcg_ml"
    assert space.variables[conc].span[0].lo_in is (schema(STATE_SCHEMA)["properties"]["infusions"]["properties"]
                                                    ["norepinephrine_concentration_mcg_ml"].get("minimum") is not None)


def test_unknown_is_neither_true_nor_false(space, pack):
    cond = Compare("derived.below_map_target", "==", True)
    store = next(space.solutions(space.unknown(cond)))
    state = next(space.witnesses(store))
    assert _truth_of(pack, state, cond) is None


def test_derived_map_target_is_expanded_by_cases(space, pack):
    # MAP 67 is below target only with chronic hypertension (target 70).
    cond = All((Compare("derived.below_map_target", "==", True), Compare("vitals.map_mmhg", ">=", 67)))
    store = next(space.solutions(space.formula(cond, "T")))
    state = next(space.witnesses(store))
    assert state["patient"]["chronic_hypertension"] is True and 67 <= state["vitals"]["map_mmhg"] < 70


def test_product_is_realised_through_its_factors(space, pack):
    cond = All((Compare("derived.crystalloid_ml", ">=", 1000), Compare("fluids.crystalloid_ml_kg", "<", 15)))
    store = next(space.solutions(space.formula(cond, "T")))
    state = next(space.witnesses(store, typical={"patient.weight_kg": [70]}))
    assert state["fluids"]["crystalloid_ml_kg"] * state["patient"]["weight_kg"] >= 1000
    assert _truth_of(pack, state, cond) is True


def test_interval_algebra():
    a = op_span("<", 5)
    assert meet(a, op_span(">=", 5)) == ()
    assert meet(op_span("<=", 5), op_span(">=", 5)) == (Interval(5, 5),)
    assert complement(points([1, 2])) == (Interval(-float("inf"), 1, False, False), Interval(1, 2, False, False),
                                          Interval(2, float("inf"), False, False))


# --- differential: random conditions -------------------------------------------

LEAVES = [
    *(Compare("vitals.map_mmhg", op, v) for op in ("<", "<=", ">", ">=", "==", "!=") for v in (60, 65, 70)),
    *(Compare("infusions.norepinephrine_mcg_kg_min", op, v) for op in ("<", ">=", ">") for v in (0, 0.1)),
    Compare("patient.chronic_hypertension", "==", True),
    Compare("patient.chronic_hypertension", "!=", True),
    Compare("shock.type", "in", ("septic", "cardiogenic")),
    Compare("shock.type", "==", "hepatorenal"),
    Compare("shock.type", "!=", "septic"),
    Compare("line_coinfusions", "includes", "sodium_bicarbonate"),
    Compare("line_coinfusions", "includes", "tromethamine"),
    Compare("vitals.map_mmhg", "known"),
    Compare("patient.age_years", "unknown"),
    Compare("derived.below_map_target", "==", True),
    Compare("derived.below_map_target", "==", False),
    Compare("derived.pediatric", "==", True),
    Compare("derived.on_norepinephrine", "==", False),
    Compare("derived.crystalloid_ml", ">=", 1000),
    Compare("derived.fluids_adequate", "==", True),
]


def conditions(depth: int = 3):
    leaf = st.sampled_from(LEAVES)
    return st.recursive(leaf, lambda kids: st.one_of(
        st.lists(kids, min_size=1, max_size=3).map(lambda xs: All(tuple(xs))),
        st.lists(kids, min_size=1, max_size=3).map(lambda xs: Any_(tuple(xs))),
        kids.map(Not),
    ), max_leaves=6)


def _random_states(n: int, seed: int = 7):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        state: dict = {}
        if rng.random() < 0.8:
            m = rng.choice([55, 60, 64.9, 65, 66, 69.9, 70, 72, 90])
            state["vitals"] = {"map_mmhg": m}
        if rng.random() < 0.8:
            state["infusions"] = {"norepinephrine_mcg_kg_min": rng.choice([0, 0.05, 0.1, 0.2])}
        patient = {}
        if rng.random() < 0.7:
            patient["chronic_hypertension"] = rng.random() < 0.5
        if rng.random() < 0.7:
            patient["age_years"] = rng.choice([5, 17, 18, 40])
        if rng.random() < 0.6:
            patient["weight_kg"] = rng.choice([20, 70, 90])
        if rng.random() < 0.6:
            patient["pregnant"] = rng.random() < 0.3
        if patient:
            state["patient"] = patient
        if rng.random() < 0.8:
            state["shock"] = {"type": rng.choice(["septic", "cardiogenic", "hepatorenal", "other", "none"])}
        if rng.random() < 0.7:
            state["fluids"] = {"crystalloid_ml_kg": rng.choice([0, 10, 14.3, 29, 30, 40])}
        if rng.random() < 0.6:
            state["line_coinfusions"] = rng.sample(["sodium_bicarbonate", "tromethamine", "dextrose_5"], rng.randint(0, 2))
        if _valid(state):
            out.append(state)
    return out


STATES = _random_states(400)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cond=conditions(), pol=st.sampled_from(["T", "F", "U"]))
def test_solver_agrees_with_the_reference_semantics(space, pack, cond, pol):
    want = POLARITY[pol]
    stores = space.solutions(_goal(space, cond, pol))
    store = next(stores, None)
    if store is None:
        assert all(_truth_of(pack, s, cond) is not want for s in STATES), "solver ruled out a state that exists"
        return
    for state in space.witnesses(store, typical={"patient.weight_kg": [70]}, valid=_valid):
        assert _truth_of(pack, state, cond) is want
        break
