"""Properties over generated valid patient states."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.units import parse_unit

from .strategies import patient_states


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=patient_states())
def test_evaluate_never_raises_and_keeps_its_promises(pack, now, result_validator, state):
    result = evaluate(pack, state, now=now, include_draft=True)
    data = result.to_dict()
    result_validator.validate(data)
    has_weight = "weight_kg" in state.get("patient", {})
    for rec in data["recommendations"]:
        assert rec["citations"], rec["rule_id"]
        dose = rec.get("dose")
        if dose and parse_unit(dose["range"]["unit"]).per_kg:
            if has_weight:  # the figures, or the facts the pack's dosing weight for this drug still needs
                basis = set(vars(pack.dosing.facts).values()) - {pack.dosing.facts.weight}
                assert "for_weight" in dose or (dose["missing"] and set(dose["missing"]) <= basis), dose
            else:
                assert "for_weight" not in dose and "patient.weight_kg" in dose["missing"]
                assert all("ml_h" not in r and "low_ml_h" not in r for r in dose.get("pump_rates", []))
    severities = [r["severity"] for r in data["recommendations"]]
    assert severities == sorted(severities, key=["critical", "warning", "info"].index)
    for ne in data["not_evaluable"]:
        assert ne["missing"]
