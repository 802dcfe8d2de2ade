"""A rule that another shown rule supersedes is left out of the result, which says so."""
from __future__ import annotations

from pressor.engine.evaluation.evaluate import evaluate

PREGNANT_HEPATORENAL = {"patient": {"age_years": 33, "weight_kg": 68, "pregnant": True},
                        "shock": {"type": "hepatorenal"}, "infusions": {"norepinephrine_mcg_kg_min": 0}}


def test_superseded_dose_is_hidden_and_named(pack, now, result_validator):
    result = evaluate(pack, PREGNANT_HEPATORENAL, now=now)
    result_validator.validate(result.to_dict())
    assert "special.hepatorenal" in result.fired_ids()
    assert "norepinephrine.dose-pregnancy" not in result.fired_ids()
    assert "norepinephrine.dose-pregnancy is not shown: superseded by special.hepatorenal" in result.warnings


def test_superseded_rule_shows_when_its_superseder_does_not_apply(pack, now):
    state = {"patient": {"age_years": 33, "weight_kg": 68, "pregnant": True},
             "vitals": {"sbp_mmhg": 66, "dbp_mmhg": 38}, "infusions": {"norepinephrine_mcg_kg_min": 0}}
    result = evaluate(pack, state, now=now)
    assert "norepinephrine.dose-pregnancy" in result.fired_ids()
    assert not any("superseded" in w for w in result.warnings)


def test_supersedes_closure(pack):
    by = pack.superseded_by()
    # scope rules (supersedes: ["*"]) supersede every other rule as well
    scope = {r.id for r in pack.rules if r.raw.get("supersedes") == ["*"]}
    direct = {r.id for r in pack.rules if "norepinephrine.dose-pregnancy" in r.raw.get("supersedes", [])}
    assert {"special.hepatorenal", "special.anaphylaxis"} <= direct
    assert by["norepinephrine.dose-pregnancy"] >= frozenset(direct) | scope
