"""Decide by every completion: a derived fact unknown to three-valued logic is decided when every value of
its missing inputs gives it the same value; never otherwise, and never against three-valued logic."""
from __future__ import annotations

from itertools import product

import pytest
from hypothesis import HealthCheck, given, settings

from pressor.engine.evaluation.evaluate import evaluate, flatten_state
from pressor.engine.evaluation.logic import derive, set_aside_doubtful_pressures
from pressor.engine.evaluation.residual import domains_of
from pressor.engine.evaluation.validate import STATE_SCHEMA, schema

from .strategies import patient_states

SEPTIC_MAP_55 = {"patient": {"age_years": 64, "weight_kg": 72, "sex": "male"}, "shock": {"type": "septic"},
                 "vitals": {"map_mmhg": 55, "sbp_mmhg": 78, "dbp_mmhg": 40}, "fluids": {"crystalloid_ml_kg": 10},
                 "infusions": {"norepinephrine_mcg_kg_min": 0}}


def test_map_55_without_a_hypertension_history_gets_firm_advice(pack, now, result_validator):
    result = evaluate(pack, SEPTIC_MAP_55, now=now)
    result_validator.validate(result.to_dict())
    fired = {r.rule_id: r for r in result.recommendations}
    # a firm norepinephrine action with its dose and pump rate, and a firm fluid volume
    assert "norepinephrine.start-emergency" in fired
    dose = fired["norepinephrine.dose-adult"].dose
    assert dose is not None and dose["for_weight"]["range"]["low"] == pytest.approx(0.02 * 72)
    assert dose["pump_rates"]
    assert fired["fluids.bolus-30ml-kg"].dose["for_weight"]["remaining"]["value"] == pytest.approx(20 * 72)
    # below target whatever the history: decided for any value of it, and the result says so
    assert result.derived["derived.below_map_target"] is True
    assert result.decided_for_any_value["derived.below_map_target"] == ("patient.chronic_hypertension",)
    assert result.to_dict()["decided_for_any_value"] == {"derived.below_map_target": ["patient.chronic_hypertension"]}
    # nobody asks a man whether he is pregnant
    assert "patient.pregnant" not in {q.fact for q in result.ask_next}


def test_map_68_still_asks_the_history(pack, now):
    state = {**SEPTIC_MAP_55, "vitals": {"map_mmhg": 68, "sbp_mmhg": 90, "dbp_mmhg": 57}}
    result = evaluate(pack, state, now=now)
    assert "fluids.bolus-30ml-kg" not in result.fired_ids()
    assert "derived.below_map_target" not in result.decided_for_any_value
    assert result.derived["derived.below_map_target"] is None
    assert "patient.chronic_hypertension" in {q.fact for q in result.ask_next}


def _completions(pack, inputs):
    """Every value of each input from the schema's domains: booleans, enumerations, and for numbers the
    schema's ends and every constant the pack compares the fact with, with its neighbours."""
    domains = domains_of(schema(STATE_SCHEMA))
    per_input = []
    for fact in inputs:
        kind, domain = domains[fact]
        if kind in ("boolean", "enum"):
            per_input.append(tuple(domain))
        else:
            from pressor.engine.evaluation.completion import _representatives
            per_input.append(_representatives(pack, domains)[fact])
    for combo in product(*per_input):
        yield dict(zip(inputs, combo))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(state=patient_states())
def test_completion_agrees_with_kleene_and_with_enumeration(pack, now, state):
    result = evaluate(pack, state, now=now)
    kleene = flatten_state(state)
    set_aside_doubtful_pressures(pack.derived, kleene)  # as evaluate() does: a MAP a line artefact explains
    derive(pack.derived, kleene)  # the reference semantics, without completion
    for name, value in kleene.items():
        if name.startswith("derived."):
            assert result.derived[name] == value, name  # never against three-valued logic where it decides
    for name, inputs in result.decided_for_any_value.items():
        assert name not in kleene
        for completion in _completions(pack, inputs):
            trial = {k: v for k, v in flatten_state(state).items()}
            set_aside_doubtful_pressures(pack.derived, trial)
            trial.update(completion)
            derive(pack.derived, trial)
            assert trial.get(name) == result.derived[name], (name, completion)
