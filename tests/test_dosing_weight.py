"""Dosing weights and measurements set aside (protocol v3, items 3 and 4): the arithmetic against figures worked
by hand, on a policy built here (independent of the bundled pack), and what the bundled pack does with them."""
from __future__ import annotations

import pytest

from pressor.engine.dosing_policy import DosingPolicy, WeightBasis
from pressor.engine.evaluation.dosing_weight import dosing_weight, ideal_body_weight, per_dosing_kg
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.logic import SET_ASIDE
from pressor.engine.plan_report import plan_lines
from pressor.service.plan_cards import plan_cards

POLICY = DosingPolicy(weights=(
    WeightBasis("crystalloid", "ideal", population="adult", from_bmi=30),
    WeightBasis("albumin", "dry", population="adult", fallback="ideal"),
    WeightBasis("heparin", "adjusted"),
), tallest_adult_cm=210)
ADULT = {"derived.pediatric_dosing": False}


def test_devine_ideal_body_weight():
    # men 50 + 0.91 x (175 - 152.4) = 70.566; women 45.5 + 0.91 x (160 - 152.4) = 52.416
    assert ideal_body_weight(175, "male") == pytest.approx(70.566)
    assert ideal_body_weight(160, "female") == pytest.approx(52.416)


def test_obese_adult_is_dosed_on_ideal_weight_and_a_lean_one_on_actual():
    obese = dosing_weight("crystalloid", {**ADULT, "patient.weight_kg": 180, "patient.height_cm": 175, "patient.sex": "male"}, POLICY)
    assert obese.weight_kg == 70.6 and obese.basis is not None and obese.basis["basis"] == "ideal"
    assert obese.basis["bmi"] == 58.8  # 180 / 1.75^2
    lean = dosing_weight("crystalloid", {**ADULT, "patient.weight_kg": 70, "patient.height_cm": 175, "patient.sex": "male"}, POLICY)
    assert lean.weight_kg == 70 and lean.basis is None  # the actual weight: nothing to add to the dose


def test_without_a_height_the_weight_alone_decides_obesity_only_when_obese_at_any_adult_height():
    # 30 x 2.1^2 = 132.3 kg: from there the BMI is 30 or more at any height up to 210 cm
    heavy = dosing_weight("crystalloid", {**ADULT, "patient.weight_kg": 133, "patient.sex": "male"}, POLICY)
    assert heavy.weight_kg is None and heavy.missing == ["patient.height_cm"]
    middling = dosing_weight("crystalloid", {**ADULT, "patient.weight_kg": 132}, POLICY)
    assert middling.weight_kg == 132 and middling.basis is not None and "height not recorded" in middling.basis["note"]


def test_a_child_and_an_undeclared_drug_keep_the_actual_weight():
    child = dosing_weight("crystalloid", {"derived.pediatric_dosing": True, "patient.weight_kg": 45, "patient.height_cm": 120}, POLICY)
    assert child.weight_kg == 45 and child.basis is None
    assert dosing_weight("norepinephrine", {**ADULT, "patient.weight_kg": 180}, POLICY).weight_kg == 180


def test_dry_weight_then_ideal_then_missing():
    facts = {**ADULT, "patient.weight_kg": 92}
    assert dosing_weight("albumin", {**facts, "patient.dry_weight_kg": 74}, POLICY).weight_kg == 74
    # women 45.5 + 0.91 x (170 - 152.4) = 61.516
    assert dosing_weight("albumin", {**facts, "patient.height_cm": 170, "patient.sex": "female"}, POLICY).weight_kg == 61.5
    assert dosing_weight("albumin", facts, POLICY).missing == ["patient.height_cm", "patient.sex"]


def test_adjusted_weight_is_ideal_plus_forty_percent_of_the_excess():
    # ideal 70.566; 70.566 + 0.4 x (120 - 70.566) = 90.34
    got = dosing_weight("heparin", {"patient.weight_kg": 120, "patient.height_cm": 175, "patient.sex": "male"}, POLICY)
    assert got.weight_kg == 90.3


def test_a_per_kg_amount_is_re_expressed_on_the_dosing_weight():
    facts = {**ADULT, "patient.weight_kg": 180, "patient.height_cm": 175, "patient.sex": "male"}
    # 11.8 mL/kg of 180 kg = 2124 mL = 30.1 mL per kg of the 70.6 kg ideal weight
    value, missing = per_dosing_kg(11.8, "crystalloid", facts, POLICY)
    assert value == pytest.approx(11.8 * 180 / 70.6) and missing == []
    assert per_dosing_kg(0, "crystalloid", {**ADULT, "patient.weight_kg": 180}, POLICY) == (0, [])
    assert per_dosing_kg(12, "crystalloid", {**ADULT, "patient.weight_kg": 180}, POLICY) == (None, ["patient.height_cm", "patient.sex"])


SEPTIC = {"patient": {"age_years": 60, "weight_kg": 70, "chronic_hypertension": False}, "shock": {"type": "septic"},
          "fluids": {"crystalloid_ml_kg": 30}, "infusions": {"norepinephrine_mcg_kg_min": 0.1}}


@pytest.mark.parametrize("vitals", [
    {"map_mmhg": 55, "sbp_mmhg": 130, "dbp_mmhg": 70},  # not between DBP and SBP
    {"map_mmhg": 200},  # outside the envelope: a flushed line
])
def test_a_pressure_an_arterial_line_artefact_explains_is_set_aside_and_said_first(pack, now, vitals):
    result = evaluate(pack, {**SEPTIC, "vitals": vitals}, now=now)
    data = result.to_dict()
    assert data["derived"].get("derived.map_mmhg") is None
    assert any(w.startswith(SET_ASIDE) for w in data["warnings"])
    assert "norepinephrine.titrate" not in result.fired_ids() and "norepinephrine.wean" not in result.fired_ids()
    assert "vitals.map_mmhg" in {a.fact for a in result.ask_next}
    lines = [text for text, _ in plan_lines(data)]
    first = lines.index("FIRST")
    assert "re-measure" in lines[first + 1] and first < lines.index("PLAN")
    cards = plan_cards([result], pack=result.pack, hook_instance="h", base_url="http://x", patient_id="p", drug_codings={})
    assert cards[0]["summary"].startswith("Check the arterial line") and cards[0]["indicator"] == "warning"


def test_a_consistent_pressure_is_used(pack, now):
    result = evaluate(pack, {**SEPTIC, "vitals": {"map_mmhg": 58, "sbp_mmhg": 85, "dbp_mmhg": 45}}, now=now)
    assert result.to_dict()["derived"]["derived.map_mmhg"] == 58
    assert "norepinephrine.titrate" in result.fired_ids()
    assert not any(w.startswith(SET_ASIDE) for w in result.warnings)


def test_a_height_below_the_formula_range_never_gives_a_weight_near_zero():
    # Devine at 97.42 cm for a man: 50 + 0.91 x (97.42 - 152.4) = -0.03 kg; the actual weight is used instead
    facts = {**ADULT, "patient.weight_kg": 60, "patient.height_cm": 97.42, "patient.sex": "male"}
    got = dosing_weight("crystalloid", facts, POLICY)
    assert got.weight_kg == 60 and got.basis is not None and "confirm the dosing weight" in got.basis["note"]
    assert per_dosing_kg(20, "crystalloid", facts, POLICY) == (20, [])


def test_the_dosing_facts_are_the_packs_to_name(tmp_path, now):
    """Rename the weight the pack doses on: the doses follow the pack's declaration, not a name in the engine."""
    import shutil

    from pressor.engine.evaluation.pack import default_rules_dir, load_pack

    rules = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), rules, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    dosing = rules / "dosing.yaml"
    dosing.write_text(dosing.read_text().replace("height: patient.height_cm", "height: vitals.heart_rate_bpm"))
    renamed = load_pack(rules)
    state = {"patient": {"age_years": 50, "weight_kg": 180, "sex": "male", "height_cm": 175}, "shock": {"type": "septic"},
             "vitals": {"map_mmhg": 58, "heart_rate_bpm": 200}, "fluids": {"crystalloid_ml_kg": 0}}
    dose = next(r for r in evaluate(renamed, state, now=now).to_dict()["recommendations"]
                if r["rule_id"] == "fluids.bolus-30ml-kg")["dose"]
    # 200 read as the height: 50 + 0.91 x (200 - 152.4) = 93.3 kg ideal weight
    assert dose["for_weight"]["weight_kg"] == 93.3
