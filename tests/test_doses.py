"""Dose arithmetic against numbers computed by hand (shown in each comment)."""
from __future__ import annotations

import pytest

from pressor.engine.evaluation.evaluate import evaluate

ADULT_START = {
    "patient": {"age_years": 68, "weight_kg": 72, "pregnant": False, "chronic_hypertension": False},
    "shock": {"type": "septic"},
    "vitals": {"map_mmhg": 50, "sbp_mmhg": 68, "dbp_mmhg": 40},
    "fluids": {"crystalloid_ml_kg": 12},
    "infusions": {"norepinephrine_mcg_kg_min": 0},
}


def rec(result, rule_id):
    matches = [r for r in result.to_dict()["recommendations"] if r["rule_id"] == rule_id]
    assert matches, f"{rule_id} did not fire: {result.fired_ids()}"
    return matches[0]


def test_adult_start_per_minute_and_pump_rates(pack, now, result_validator):
    result = evaluate(pack, ADULT_START, now=now)
    result_validator.validate(result.to_dict())
    dose = rec(result, "norepinephrine.dose-adult")["dose"]
    assert dose["range"] == {"low": 0.02, "high": 0.05, "unit": "mcg/kg/min"}
    # 0.02 x 72 = 1.44, 0.05 x 72 = 3.6 mcg/min; alternative 0.1 x 72 = 7.2, 0.5 x 72 = 36
    assert dose["for_weight"]["range"] == {"low": 1.44, "high": 3.6, "unit": "mcg/min"}
    assert dose["for_weight"]["alternative"] == {"low": 7.2, "high": 36.0, "unit": "mcg/min"}
    rates = {r["preparation"]: (r["low_ml_h"], r["high_ml_h"]) for r in dose["pump_rates"]}
    # 1.44 x 60 / 16 = 5.4, 3.6 x 60 / 16 = 13.5; at 10 mcg/mL: 8.64 -> 8.6, 21.6
    assert rates == {"standard-250ml-d5w": (5.4, 13.5), "alternative-1mg-100ml": (8.6, 21.6)}


def test_concentration_in_use_replaces_the_standard_bags(pack, now):
    state = {**ADULT_START, "infusions": {"norepinephrine_mcg_kg_min": 0, "norepinephrine_concentration_mcg_ml": 32}}
    dose = rec(evaluate(pack, state, now=now), "norepinephrine.dose-adult")["dose"]
    # 1.44 x 60 / 32 = 2.7, 3.6 x 60 / 32 = 6.75 -> 6.8 (half up)
    assert dose["pump_rates"] == [{"preparation": "in use", "concentration_mcg_ml": 32.0, "low_ml_h": 2.7, "high_ml_h": 6.8}]


def test_fluid_bolus_remaining_volume(pack, now):
    dose = rec(evaluate(pack, ADULT_START, now=now), "fluids.bolus-30ml-kg")["dose"]
    # 30 x 72 = 2160 mL target; 12 x 72 = 864 given; 2160 - 864 = 1296 still to give
    assert dose["for_weight"]["range"] == {"value": 2160.0, "unit": "mL"}
    assert dose["for_weight"]["already_given"] == {"value": 864.0, "unit": "mL"}
    assert dose["for_weight"]["remaining"] == {"value": 1296.0, "unit": "mL"}


def test_pediatric_rule_of_6(pack, now):
    state = {"patient": {"age_years": 0.6, "weight_kg": 8}, "shock": {"type": "septic"}, "fluids": {"crystalloid_ml_kg": 40},
             "perfusion": {"cold_extremities": True}, "infusions": {"norepinephrine_mcg_kg_min": 0}}
    result = evaluate(pack, state, now=now)
    dose = rec(result, "norepinephrine.dose-pediatric")["dose"]
    # 0.1 x 8 = 0.8 mcg/min; standard 16 mcg/mL: 0.8 x 60 / 16 = 3 mL/h;
    # rule of 6 (up to 10 kg): 0.6 x 8 = 4.8 mg in 100 mL = 48 mcg/mL; 0.8 x 60 / 48 = 1.0 mL/h
    assert dose["for_weight"]["range"] == {"value": 0.8, "unit": "mcg/min"}
    assert dose["for_weight"]["maximum"] == {"value": 40.0, "unit": "mcg/min"}  # 5 x 8
    assert dose["pump_rates"] == [{"preparation": "pediatric-standard-16mcg-ml", "concentration_mcg_ml": 16.0, "ml_h": 3.0},
                                  {"preparation": "pediatric-rule-of-6", "concentration_mcg_ml": 48.0, "ml_h": 1.0}]
    bag = rec(result, "preparation.pediatric-rule-of-6")["dose"]
    assert bag["for_weight"]["range"] == {"value": 4.8, "unit": "mg"}  # 0.6 x 8
    fluids = rec(result, "fluids.pediatric-40-60")["dose"]
    assert fluids["for_weight"]["range"] == {"low": 320.0, "high": 480.0, "unit": "mL"}  # 40 x 8, 60 x 8
    state["patient"]["weight_kg"] = 18  # above 10 kg the rule-of-6 bag is no longer offered
    dose = rec(evaluate(pack, state, now=now), "norepinephrine.dose-pediatric")["dose"]
    assert [r["preparation"] for r in dose["pump_rates"]] == ["pediatric-standard-16mcg-ml"]


def test_pregnancy_dose_rounds_half_up(pack, now):
    state = {"patient": {"age_years": 31, "weight_kg": 78, "pregnant": True}, "vitals": {"sbp_mmhg": 66, "dbp_mmhg": 38},
             "infusions": {"norepinephrine_mcg_kg_min": 0}}
    dose = rec(evaluate(pack, state, now=now), "norepinephrine.dose-pregnancy")["dose"]
    # 0.02 x 78 = 1.56 mcg/min; 1.56 x 60 / 16 = 5.85 -> 5.9; / 10 = 9.36 -> 9.4
    assert dose["for_weight"]["range"] == {"value": 1.56, "unit": "mcg/min"}
    assert {r["preparation"]: r["ml_h"] for r in dose["pump_rates"]} == {"standard-250ml-d5w": 5.9, "alternative-1mg-100ml": 9.4}


def test_hepatorenal_fixed_rate_needs_no_weight(pack, now):
    dose = rec(evaluate(pack, {"patient": {"age_years": 52}, "shock": {"type": "hepatorenal"},
                                "infusions": {"norepinephrine_mcg_kg_min": 0}}, now=now), "special.hepatorenal")["dose"]
    # 0.5 mg/h = 500 mcg/h; / 16 = 31.25 -> 31.3 mL/h; / 10 = 50 mL/h
    assert {r["preparation"]: r["ml_h"] for r in dose["pump_rates"]} == {"standard-250ml-d5w": 31.3, "alternative-1mg-100ml": 50.0}
    assert "missing" not in dose and "for_weight" not in dose


@pytest.mark.parametrize("weight, expected", [(20, {"low": 2.0, "high": 4.0}), (80, {"low": 8.0, "high": 10.0, "capped_at": 10.0})])
def test_pediatric_phentolamine_is_capped_at_10_mg(pack, now, weight, expected):
    state = {"patient": {"age_years": 12, "weight_kg": weight}, "findings": {"extravasation": True}}
    dose = rec(evaluate(pack, state, now=now), "extravasation.phentolamine-pediatric")["dose"]
    assert dose["for_weight"]["range"] == {**expected, "unit": "mg"}


def test_no_weight_no_weight_based_dose(pack, now, result_validator):
    state = {k: v for k, v in ADULT_START.items()}
    state["patient"] = {k: v for k, v in ADULT_START["patient"].items() if k != "weight_kg"}
    result = evaluate(pack, state, now=now)
    result_validator.validate(result.to_dict())
    dose = rec(result, "norepinephrine.dose-adult")["dose"]
    assert "for_weight" not in dose and dose["pump_rates"] == []
    assert dose["missing"] == ["patient.weight_kg"]
    bolus = rec(result, "fluids.bolus-30ml-kg")["dose"]
    assert "for_weight" not in bolus and bolus["missing"] == ["patient.weight_kg"]
