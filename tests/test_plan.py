"""One coherent plan per patient: one answer per decision (priority), supporting items under it, bans only where
relevant, at most three questions that change the plan, and a scope rule that replaces everything."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from pressor.cli.main import cli
from pressor.engine.authoring.lint import lint_pack
from pressor.engine.evaluation.evaluate import evaluate

from .strategies import patient_states

ROOT = Path(__file__).resolve().parent.parent
MAP_TARGETS = {"target.pediatric-map", "target.map-70-75-chronic-hypertension", "target.permissive-older-adults",
               "target.map-65"}
NO_VASOPRESSOR = {"hypovolemia.volume-first", "anaphylaxis.epinephrine-first", "anaphylaxis.epinephrine-first-pediatric"}
START_OR_UP = {"norepinephrine.start", "norepinephrine.start-emergency", "norepinephrine.start-pediatric",
               "norepinephrine.titrate", "special.anaphylaxis", "special.hepatorenal", "special.pediatric-cold-shock"}


def _plan(pack, now, state):
    result = evaluate(pack, state, now=now)
    return result, result.to_dict()["plan"]


def _items(plan):
    return {i["decision"]: i for i in plan["items"]}


def test_the_main_example_reads_as_one_plan_in_the_order_one_acts(pack, now, result_validator):
    state = yaml.safe_load((ROOT / "examples" / "septic-shock-adult.yaml").read_text())
    result, plan = _plan(pack, now, state)
    result_validator.validate(result.to_dict())
    assert [i["title"] for i in plan["items"]] == ["MAP target", "Vasopressor", "Fluids"]
    items = _items(plan)
    assert items["plan-map-target"]["rule_id"] == "target.map-65" and items["plan-map-target"]["status"] == "firm"
    nore = items["plan-norepinephrine"]
    assert nore["rule_id"] == "norepinephrine.start-emergency" and nore["status"] == "firm"
    assert {"norepinephrine.dose-adult", "preparation.standard", "access.arterial-line"} <= set(nore["supporting"])
    # every item is kept in the result; what the plan does not show is marked
    data = result.to_dict()
    shown = {r["rule_id"] for r in data["recommendations"] if r["shown"]}
    assert "target.no-map-85" not in shown  # a ban shown only at a MAP of 80 or more on norepinephrine
    assert plan["set_aside_count"] == sum(not r["shown"] for r in data["recommendations"]) + sum(
        not c["shown"] for c in data["conditional"])


def test_map_55_gets_a_firm_action_with_dose_and_a_firm_volume_and_68_asks(pack, now):
    state = {"patient": {"age_years": 64, "weight_kg": 72, "sex": "male"}, "shock": {"type": "septic"},
             "vitals": {"map_mmhg": 55, "sbp_mmhg": 78, "dbp_mmhg": 40}, "fluids": {"crystalloid_ml_kg": 10},
             "findings": {"fluid_overload": False}, "infusions": {"norepinephrine_mcg_kg_min": 0}}
    result, plan = _plan(pack, now, state)
    items = _items(plan)
    assert items["plan-norepinephrine"]["status"] == "firm" and "norepinephrine.dose-adult" in items["plan-norepinephrine"]["supporting"]
    dose = next(r for r in result.recommendations if r.rule_id == "norepinephrine.dose-adult").dose
    assert dose["pump_rates"]
    assert items["plan-fluids"]["status"] == "firm" and items["plan-fluids"]["rule_id"] == "fluids.bolus-30ml-kg"
    state["vitals"] = {"map_mmhg": 68, "sbp_mmhg": 90, "dbp_mmhg": 57}
    _, plan = _plan(pack, now, state)
    assert "patient.chronic_hypertension" in plan["questions"]


def test_priority_sets_aside_with_the_reason(pack, now):
    state = {"patient": {"age_years": 80, "weight_kg": 70, "sex": "female", "chronic_hypertension": True},
             "shock": {"type": "septic"}, "vitals": {"map_mmhg": 66}, "infusions": {"norepinephrine_mcg_kg_min": 0.1}}
    _, plan = _plan(pack, now, state)
    target = _items(plan)["plan-map-target"]
    assert target["rule_id"] == "target.map-70-75-chronic-hypertension"
    (aside,) = target["set_aside"]
    assert aside["rule_id"] == "target.permissive-older-adults" and aside["by"] == target["rule_id"]
    assert "priority" in aside["because"]


def test_volume_first_is_never_beside_titrate_up(pack, now):
    state = {"patient": {"age_years": 50, "weight_kg": 80, "sex": "male", "chronic_hypertension": False},
             "shock": {"type": "hypovolemic"}, "vitals": {"map_mmhg": 58}, "infusions": {"norepinephrine_mcg_kg_min": 0.1}}
    result, plan = _plan(pack, now, state)
    assert {"hypovolemia.volume-first", "norepinephrine.titrate"} <= set(result.fired_ids())  # both rules fired
    nore = _items(plan)["plan-norepinephrine"]
    assert nore["rule_id"] == "hypovolemia.volume-first"
    assert [s["rule_id"] for s in nore["set_aside"]] == ["norepinephrine.titrate"]


def test_bleeding_is_asked_only_where_the_pack_declares_it_relevant(pack, now):
    base = {"patient": {"age_years": 60, "weight_kg": 70, "sex": "male", "chronic_hypertension": False},
            "vitals": {"map_mmhg": 58, "sbp_mmhg": 80, "dbp_mmhg": 47}, "fluids": {"crystalloid_ml_kg": 30},
            "infusions": {"norepinephrine_mcg_kg_min": 0}}
    _, septic = _plan(pack, now, {**base, "shock": {"type": "septic"}})
    assert "findings.active_bleeding" not in septic["questions"]
    _, other = _plan(pack, now, {**base, "shock": {"type": "other"}})
    assert "findings.active_bleeding" in other["questions"]
    _, unknown = _plan(pack, now, base)  # the shock type's question covers bleeding
    assert "shock.type" in unknown["questions"] and "findings.active_bleeding" not in unknown["questions"]


def test_a_preterm_infant_gets_only_the_scope_answer(pack, now):
    state = {"patient": {"age_years": 0.01, "weight_kg": 0.9, "gestational_age_weeks": 29}, "shock": {"type": "septic"},
             "vitals": {"sbp_mmhg": 35, "dbp_mmhg": 20}}
    result, plan = _plan(pack, now, state)
    assert plan["outside_protocol"] == "scope.preterm-infant" and plan["items"] == [] and plan["questions"] == []
    out = CliRunner().invoke(cli, ["recommend", "-", "--no-audit", "--now", "2026-11-24T12:00:00Z"], input=json.dumps(state))
    assert "OUTSIDE THIS PROTOCOL" in out.stderr and "PLAN" not in out.stderr


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(state=patient_states())
def test_every_plan_is_coherent(pack, now, state):
    result = evaluate(pack, state, now=now)
    data = result.to_dict()
    plan = data["plan"]
    shown = {r["rule_id"] for r in data["recommendations"] if r["shown"]}
    fired = set(result.fired_ids())
    assert len(plan["questions"]) <= 3 and len(set(plan["questions"])) == len(plan["questions"])
    assert len(shown & MAP_TARGETS) <= 1  # never two MAP targets
    assert not (shown & NO_VASOPRESSOR and shown & START_OR_UP)  # never "no vasopressor" beside "start / titrate up"
    for item in plan["items"]:
        assert item["rule_id"] is None or item["rule_id"] in fired
        assert set(item["supporting"]) <= fired
    assert set(plan["bans"]) <= fired
    if plan["outside_protocol"]:  # only scope rules (a preterm infant on comfort care: both say why)
        scope = {r.id for r in pack.rules if r.raw.get("supersedes") == ["*"]}
        assert plan["outside_protocol"] in shown and shown <= scope


def test_lint_proves_the_plan_and_catches_a_seeded_overlap_and_gap(tmp_path):
    report = lint_pack()
    assert not [f for f in report.findings if f.code in ("contradiction-decision", "gap-decision")]
    pack_dir = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", pack_dir, ignore=shutil.ignore_patterns("fhir", "__init__.py", "__pycache__"))
    decisions = pack_dir / "decisions.yaml"
    text = decisions.read_text()
    # a MAP target decision without its priority: the older adult's permissive target overlaps 65
    seeded = text.replace("    description: one MAP target for every patient in shock\n    hit_policy: priority\n",
                          "    description: one MAP target for every patient in shock\n    hit_policy: unique\n")
    assert seeded != text
    decisions.write_text(seeded)
    found = [f for f in lint_pack(pack_dir).findings if f.code == "contradiction-decision"]
    assert found and all(f.details.get("decision") == "plan-map-target" for f in found)
    assert any(f.witness for f in found)
    # and without its 65 mmHg rule, a gap: an adult without chronic hypertension gets no target
    decisions.write_text(text.replace("target.permissive-older-adults, target.map-65]", "target.permissive-older-adults]"))
    gaps = [f for f in lint_pack(pack_dir).findings if f.code == "gap-decision" and f.details.get("decision") == "plan-map-target"]
    assert gaps and gaps[0].witness


def test_lint_flags_a_fact_no_rule_reads_unless_declared_informational(tmp_path):
    assert not [f for f in lint_pack().findings if f.code == "fact-unread"]
    pack_dir = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", pack_dir, ignore=shutil.ignore_patterns("fhir", "__init__.py", "__pycache__"))
    meta = pack_dir / "pack.yaml"
    text = meta.read_text()
    start = text.index("    - fact: vitals.heart_rate_bpm")
    end = text.index("    - fact: infusions.norepinephrine_concentration_mcg_ml")
    meta.write_text(text[:start] + text[end:])
    found = [f for f in lint_pack(pack_dir).findings if f.code == "fact-unread"]
    assert [f.message for f in found] == ["fact 'vitals.heart_rate_bpm' of the patient state is read by no rule or derived fact"]
    assert found[0].severity == "warning" and "informational" in found[0].suggestion
