"""The patient-state acceptor generated from the schema (issue 21, item 3) may only be wrong in the safe
direction: whatever it accepts, fastjsonschema accepts and every number in it is finite; and it accepts
the valid states the property tests generate (else it would be no fast path)."""
from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pressor.engine.errors import PatientStateError
from pressor.engine.evaluation.state_check import acceptor
from pressor.engine.evaluation.validate import STATE_SCHEMA, _acceptor, _fast_validator, check_state, schema

from .strategies import patient_states


def fast_accepts(state) -> bool:
    try:
        _fast_validator(STATE_SCHEMA)(state)
    except Exception:  # noqa: BLE001
        return False
    return all(not (isinstance(v, float) and not math.isfinite(v))
               for section in state.values() if isinstance(section, dict) for v in section.values())


class Flag(int):
    pass


ODD_VALUES = [None, True, False, 0, -1, 1.5, 1e9, -1e9, float("nan"), float("inf"), "x", "female", [], {}, ["x"],
              Flag(3), 2**70, "norepinephrine", ["vasopressin", "vasopressin"]]


@st.composite
def mutated(draw):
    state = copy.deepcopy(draw(patient_states()))
    for _ in range(draw(st.integers(1, 3))):
        sections = [k for k, v in state.items() if isinstance(v, dict)]
        how = draw(st.sampled_from(["value", "new key", "section", "list"]))
        if how == "value" and sections:
            section = draw(st.sampled_from(sections))
            keys = sorted(schema(STATE_SCHEMA)["properties"].get(section, {}).get("properties", {}))
            if keys:
                state[section][draw(st.sampled_from(keys))] = draw(st.sampled_from(ODD_VALUES))
        elif how == "new key" and sections:
            state[draw(st.sampled_from(sections))][draw(st.sampled_from(["bogus", "map", "MAP_mmhg"]))] = 1
        elif how == "section":
            state[draw(st.sampled_from(["vitals", "bogus", "patient", "line_coinfusions"]))] = draw(st.sampled_from(ODD_VALUES))
        else:
            state["line_coinfusions"] = draw(st.lists(st.sampled_from(["vasopressin", "x", 1, None, "epinephrine"]),
                                                      max_size=12))
    return state


@pytest.fixture(scope="module")
def accept():
    found = _acceptor(STATE_SCHEMA)
    assert found is not None and found[1], "the bundled schema must get a bounded acceptor"
    return found[0]


@settings(max_examples=400, deadline=None)
@given(state=patient_states())
def test_valid_states_are_accepted(accept, state):
    assert accept(state) and fast_accepts(state)


@settings(max_examples=1500, deadline=None)
@given(state=mutated())
def test_what_it_accepts_the_schema_accepts(accept, state):
    if accept(state):
        assert fast_accepts(state), state


def test_odd_top_levels_are_left_to_the_schema(accept):
    for state in (None, [], "x", 1, {"vitals": None}, {"vitals": {"map_mmhg": True}}, {"patient": {"age_years": Flag(3)}}):
        assert not accept(state)


def test_a_schema_it_does_not_understand_gets_no_acceptor():
    assert acceptor({"type": "object", "additionalProperties": False,
                     "properties": {"a": {"type": "string", "pattern": "^x"}}}) is None
    assert acceptor({"type": "object", "properties": {}}) is None  # additional properties allowed


def test_check_state_still_reports_what_is_wrong():
    with pytest.raises(PatientStateError) as bad:
        check_state({"vitals": {"sbp_mmhg": 80, "dbp_mmhg": 90}})
    assert "dbp_mmhg (90) is not below sbp_mmhg (80)" in str(bad.value)
    with pytest.raises(PatientStateError) as bad:
        check_state({"vitals": {"map_mmhg": float("nan")}})
    assert "finite" in str(bad.value) or "nan" in str(bad.value).lower()
