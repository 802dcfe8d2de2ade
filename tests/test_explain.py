"""``explain``: fired, not fired, not evaluable and inactive rules, with exact values; and the CLI."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from click.testing import CliRunner

from pressor.cli.main import cli
from pressor.engine.evaluation import explain as explain_module
from pressor.engine.errors import EvaluationError, InputError, PatientStateError
from pressor.engine.evaluation.explain import OUTCOMES, explain
from pressor.engine.model import Evidence
from pressor.engine.evaluation.pack import default_rules_dir, load_pack

from .conftest import EXAMPLES
from pressor.engine.evaluation.pack import load_pack

NOW_TEXT = "2026-11-24T12:00:00Z"
EMERGENCY = {"patient": {"age_years": 60}, "vitals": {"sbp_mmhg": 65, "dbp_mmhg": 45}, "infusions": {"norepinephrine_mcg_kg_min": 0}}


def one(pack, now, state, rule_id, validator, **kw):
    """Explain one rule, check the JSON against the schema, return the rule's explanation."""
    explanation = explain(pack, state, now=now, rule_id=rule_id, **kw)
    assert not list(validator.iter_errors(explanation.to_dict()))
    (rule,) = explanation.rules
    return rule


def brief(trace):
    """(condition, actual, threshold, truth) of one comparison."""
    return trace.condition, trace.actual, trace.threshold, trace.truth


# --- fired -------------------------------------------------------------------

def test_fired_lists_every_comparison_and_the_inputs_behind_derived_facts(pack, now, explanation_validator):
    rule = one(pack, now, EMERGENCY, "norepinephrine.start-emergency", explanation_validator)
    assert rule.outcome == "fired"
    assert [brief(c) for c in rule.conditions] == [
        ("derived.emergency_start_indicated == true", True, True, True),
        ("derived.on_norepinephrine == false", False, False, True),
    ]
    # down to the inputs; any(): only the true branch decided it (DBP 45 is not <= 40)
    assert rule.conditions[0].inputs == (
        Evidence("derived.profound_hypotension", "derived.profound_hypotension == true", True),
        Evidence("derived.pediatric", "derived.pediatric == false", False),
        Evidence("patient.age_years", "patient.age_years < 18", 60, False),
        Evidence("vitals.sbp_mmhg", "vitals.sbp_mmhg < 70", 65),
        Evidence("shock.type", "shock.type is unknown", False),
        Evidence("findings.active_bleeding", "findings.active_bleeding is unknown", False),
    )
    assert rule.conditions[1].inputs == (Evidence("infusions.norepinephrine_mcg_kg_min", "infusions.norepinephrine_mcg_kg_min > 0", 0, False),)
    assert rule.conditions[0].pointer == "/rules/0/when/all/0"


def test_fired_follows_a_derived_threshold_to_its_inputs(pack, now, explanation_validator):
    state = {"patient": {"age_years": 60, "chronic_hypertension": True}, "vitals": {"map_mmhg": 68},
             "infusions": {"norepinephrine_mcg_kg_min": 0.05}}
    rule = one(pack, now, state, "norepinephrine.titrate", explanation_validator)
    assert rule.outcome == "fired"
    assert [brief(c) for c in rule.conditions] == [
        ("infusions.norepinephrine_mcg_kg_min > 0", 0.05, 0, True),
        ("derived.below_map_target == true", True, True, True),
    ]
    test = "derived.map_mmhg < derived.map_target_mmhg"
    assert rule.conditions[1].inputs == (
        Evidence("derived.pediatric", "derived.pediatric == false", False),
        Evidence("patient.age_years", "patient.age_years < 18", 60, False),
        Evidence("derived.map_mmhg", test, 68),
        Evidence("vitals.map_mmhg", "derived.map_mmhg is the measured MAP", 68),
        Evidence("derived.map_target_mmhg", test, 70),
        Evidence("patient.chronic_hypertension", "patient.chronic_hypertension == true", True),
    )


def test_fired_any_shows_the_false_and_unknown_branches_too(pack, now, explanation_validator):
    state = {"patient": {"age_years": 60, "chronic_hypertension": False}, "vitals": {"map_mmhg": 70},
             "infusions": {"norepinephrine_mcg_kg_min": 0.3}, "findings": {"digital_ischemia": True}}
    rule = one(pack, now, state, "monitoring.excess-vasoconstriction", explanation_validator)
    assert rule.outcome == "fired"
    assert [(c.fact, c.truth) for c in rule.conditions] == [
        ("derived.on_norepinephrine", True), ("derived.below_map_target", True),
        ("perfusion.cold_extremities", None), ("findings.digital_ischemia", True),
        ("perfusion.urine_output_ml_kg_h", None), ("perfusion.lactate_rising", None),
    ]


# --- not fired ---------------------------------------------------------------

def test_not_fired_all_shows_only_the_first_false_comparison(pack, now, explanation_validator):
    state = {"patient": {"age_years": 60, "chronic_hypertension": False}, "vitals": {"map_mmhg": 65},
             "infusions": {"norepinephrine_mcg_kg_min": 0.1}}
    rule = one(pack, now, state, "norepinephrine.titrate", explanation_validator)
    assert rule.outcome == "not_fired"
    assert [brief(c) for c in rule.conditions] == [("derived.below_map_target == true", False, True, False)]


def test_not_fired_any_shows_every_false_branch(pack, now, explanation_validator):
    rule = one(pack, now, {"line_coinfusions": ["sodium_chloride_0_9"]}, "avoid.alkaline-coinfusion", explanation_validator)
    assert rule.outcome == "not_fired"
    assert [brief(c) for c in rule.conditions] == [
        (f"line_coinfusions includes {m}", ["sodium_chloride_0_9"], m, False)
        for m in ("sodium_bicarbonate", "tromethamine", "other_alkaline")
    ]


def test_not_fired_descends_into_the_failing_group(pack, now, explanation_validator):
    state = {"patient": {"age_years": 60}, "shock": {"type": "septic"},
             "infusions": {"norepinephrine_mcg_kg_min": 0.24, "epinephrine_mcg_kg_min": 0.1, "vasopressor_hours": 6}}
    rule = one(pack, now, state, "escalation.add-hydrocortisone", explanation_validator)
    assert rule.outcome == "not_fired"
    # all(septic, adult dosing, any(norepinephrine >= 0.25, epinephrine >= 0.25), hours): the any() failed on both
    assert [brief(c) for c in rule.conditions] == [
        ("infusions.norepinephrine_mcg_kg_min >= 0.25", 0.24, 0.25, False),
        ("infusions.epinephrine_mcg_kg_min >= 0.25", 0.1, 0.25, False),
    ]


def test_not_fired_with_a_value_threshold(pack, now, explanation_validator):
    state = {"patient": {"age_years": 18}, "findings": {"extravasation": True}}
    rule = one(pack, now, state, "extravasation.phentolamine-pediatric", explanation_validator)
    assert [brief(c) for c in rule.conditions] == [("derived.pediatric == true", False, True, False)]
    assert rule.conditions[0].inputs == (Evidence("patient.age_years", "patient.age_years < 18", 18, False),)


# --- not evaluable -----------------------------------------------------------

def test_not_evaluable_names_the_missing_input_facts(pack, now, explanation_validator):
    state = {"patient": {"age_years": 60}, "shock": {"type": "septic"}, "infusions": {"norepinephrine_mcg_kg_min": 0}}
    rule = one(pack, now, state, "norepinephrine.start-emergency", explanation_validator)
    assert rule.outcome == "not_evaluable"
    assert rule.missing == ("vitals.dbp_mmhg", "vitals.sbp_mmhg")
    (trace,) = rule.conditions
    assert (trace.fact, trace.known, trace.actual, trace.truth) == ("derived.emergency_start_indicated", False, None, None)
    assert trace.missing == ("vitals.dbp_mmhg", "vitals.sbp_mmhg")


def test_not_evaluable_on_a_plain_fact(pack, now, explanation_validator):
    state = {"patient": {"age_years": 60, "weight_kg": 70, "pregnant": False, "chronic_hypertension": False},
             "shock": {"type": "septic"}, "vitals": {"map_mmhg": 58}}
    rule = one(pack, now, state, "fluids.bolus-30ml-kg", explanation_validator)
    assert rule.outcome == "not_evaluable"
    assert rule.missing == ("fluids.crystalloid_ml_kg",)
    assert [brief(c) for c in rule.conditions] == [("derived.crystalloid_ml_per_dosing_kg < 30", None, 30, None)]


# --- inactive ----------------------------------------------------------------

DRAFT_STATE = {"patient": {"age_years": 60, "chronic_hypertension": False}, "vitals": {"map_mmhg": 60}, "infusions": {"norepinephrine_mcg_kg_min": 0.1}}


def test_a_draft_is_inactive_unless_drafts_are_included(pack, now, explanation_validator):
    rule = one(pack, now, DRAFT_STATE, "titration.every-4h-0.5mg-h", explanation_validator)
    assert (rule.outcome, rule.conditions) == ("inactive", ())
    assert rule.reason == "status 'draft': evaluated only when drafts are included"
    rule = one(pack, now, DRAFT_STATE, "titration.every-4h-0.5mg-h", explanation_validator, include_draft=True)
    assert rule.outcome == "fired"


def test_a_retired_rule_is_never_evaluated(tmp_path, now, explanation_validator):
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), rules, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    path = rules / "titration.yaml"
    text = path.read_text().replace("    status: draft\n", "    status: retired\n", 1)
    text = text.replace("    source: {section", "      - {date: 2026-12-01, status: retired, by: pressor clinical informatics team}\n    source: {section", 1)
    path.write_text(text)
    # Not released afterwards: freeing an engine that has evaluated a state aborts the process
    # (durable-rules delete_state; reported, outside this module). One small pack is kept until exit.
    pack = load_pack(rules)
    rule = one(pack, now, DRAFT_STATE, "titration.every-4h-0.5mg-h", explanation_validator, include_draft=True)
    assert (rule.outcome, rule.reason) == ("inactive", "status 'retired': never evaluated")


# --- the whole pack, agreement, errors --------------------------------------

@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_explains_every_rule_as_the_engine_decided(pack, now, explanation_validator, example):
    import yaml

    state = yaml.safe_load(example.read_text())
    from pressor.engine.evaluation.evaluate import evaluate

    result = evaluate(pack, state, now=now)
    explanation = explain(pack, state, now=now)
    data = explanation.to_dict()
    assert not list(explanation_validator.iter_errors(data))
    assert [r.rule_id for r in explanation.rules] == [r.id for r in pack.rules]
    by_outcome = {o: {r.rule_id for r in rs} for o, rs in explanation.grouped().items()}
    assert by_outcome["fired"] == set(result.fired_ids())
    assert by_outcome["not_evaluable"] == {n.rule_id for n in result.not_evaluable}
    assert by_outcome["inactive"] == {"titration.every-4h-0.5mg-h"}
    assert data["counts"] == {o: len(by_outcome[o]) for o in OUTCOMES}
    assert data["pack"]["sha256"] == pack.sha256 and data["derived"] == result.derived


def test_an_unknown_rule_id_suggests_the_closest(pack, now):
    with pytest.raises(InputError) as info:
        explain(pack, EMERGENCY, now=now, rule_id="norepinephrine.strat")
    assert info.value.problems[0].message == "no rule 'norepinephrine.strat' in norepinephrine-refractory-hypotension"
    assert info.value.problems[0].suggestion == "did you mean 'norepinephrine.start'?"


def test_an_invalid_state_is_refused(pack, now):
    with pytest.raises(PatientStateError):
        explain(pack, {"vitals": {"map_mmhg": -5}}, now=now)


def test_a_disagreement_with_the_engine_is_refused(pack, now, monkeypatch):
    real = explain_module.evaluate

    def engine_that_also_fires_the_target_rule(*args, **kwargs):
        result = real(*args, **kwargs)
        extra = dataclasses.replace(result.recommendations[0], rule_id="target.map-65")
        return dataclasses.replace(result, recommendations=result.recommendations + (extra,))

    monkeypatch.setattr(explain_module, "evaluate", engine_that_also_fires_the_target_rule)
    with pytest.raises(EvaluationError) as info:
        explain(pack, EMERGENCY, now=now)
    assert info.value.problems[0].rule_id == "target.map-65"
    assert "disagrees with the reference logic" in info.value.problems[0].message


# --- CLI ---------------------------------------------------------------------

def test_cli_disagreement_exits_4(monkeypatch):
    real = explain_module.evaluate

    def engine_that_fires_nothing(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), recommendations=())

    monkeypatch.setattr(explain_module, "evaluate", engine_that_fires_nothing)
    res = run("explain", "-", stdin=json.dumps(EMERGENCY))
    assert res.exit_code == 4
    assert "(not_fired) disagrees with the reference logic (fired); refusing to explain" in res.stderr


def run(*args, stdin=None):
    return CliRunner().invoke(cli, list(args), input=stdin)


def test_cli_human_output_for_one_rule_is_exact(tmp_path):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"patient": {"age_years": 60, "chronic_hypertension": True}, "vitals": {"map_mmhg": 68},
                                 "infusions": {"norepinephrine_mcg_kg_min": 0.05}}))
    res = run("explain", str(state), "--rule", "norepinephrine.titrate", "--now", NOW_TEXT)
    assert res.exit_code == 0, res.stderr
    assert res.stdout == ""
    pack = load_pack()
    assert res.stderr == (
        f"pressor explain: {pack.name} {pack.version} (sha256 {pack.sha256[:12]}), evaluated 2026-11-24T12:00:00Z\n"
        "\n"
        "FIRED (1)\n"
        "  norepinephrine.titrate v2.0.0 [in-review]: Titrate norepinephrine up toward the MAP target\n"
        "    [true]    infusions.norepinephrine_mcg_kg_min > 0: actual 0.05\n"
        "    [true]    derived.below_map_target == true: actual true\n"
        # the deciding comparison first, with both its values; a test that did not hold says "not" (issue 18)
        "                <- because derived.map_mmhg < derived.map_target_mmhg (68 vs 70)\n"
        "                <- because derived.pediatric == false\n"
        "                <- because derived.map_mmhg is the measured MAP (vitals.map_mmhg: 68)\n"
        "                <- because patient.chronic_hypertension == true\n"
        "                <- because not patient.age_years < 18 (value 60)\n"
    )


def test_cli_groups_rules_by_outcome():
    res = run("explain", str(EXAMPLES / "septic-shock-adult.yaml"), "--now", NOW_TEXT)
    assert res.exit_code == 0, res.stderr
    headings = [line.split(" (")[0] for line in res.stderr.splitlines() if line and not line.startswith((" ", "pressor"))]
    # the example leaves findings.active_bleeding unknown under pack 2.0.0: its question closes the output
    assert headings == ["FIRED", "NOT FIRED", "NOT EVALUABLE", "INACTIVE", "ASK FIRST"]
    assert "  titration.every-4h-0.5mg-h v1.1.0 [draft]: " in res.stderr
    assert ("  avoid.low-dose-dopamine-renal v1.0.0 [in-review]: No low-dose dopamine for renal protection\n"
            "    missing: order.drug, order.purpose\n"
            "    [unknown] order.drug == dopamine: not recorded\n") in res.stderr
    start = load_pack().rule("norepinephrine.start-emergency")
    status = "" if start.status == "approved" else f" [{start.status}]"
    assert f"  {start.id} v{start.version}{status}: {start.title}\n" in res.stderr


def test_cli_json_from_stdin_validates(explanation_validator):
    res = run("explain", "-", "--json", "--include-draft", "--now", NOW_TEXT, stdin=json.dumps(DRAFT_STATE))
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""
    data = json.loads(res.stdout)
    assert not list(explanation_validator.iter_errors(data))
    assert data["include_draft"] is True and data["counts"]["inactive"] == 0
    draft = next(r for r in data["rules"] if r["rule_id"] == "titration.every-4h-0.5mg-h")
    assert draft["outcome"] == "fired" and draft["status"] == "draft"


def test_cli_unknown_rule_exits_1_with_did_you_mean():
    res = run("explain", str(EXAMPLES / "septic-shock-adult.yaml"), "--rule", "norepinephrine.strat")
    assert res.exit_code == 1
    assert res.stdout == ""
    assert "no rule 'norepinephrine.strat'" in res.stderr
    assert "(did you mean 'norepinephrine.start'?)" in res.stderr
    res = run("explain", str(EXAMPLES / "septic-shock-adult.yaml"), "--rule", "norepinephrine.strat", "--json")
    assert res.exit_code == 1
    assert json.loads(res.stdout)["problems"][0]["suggestion"] == "did you mean 'norepinephrine.start'?"


def test_cli_help_has_an_example():
    res = run("explain", "-h")
    assert res.exit_code == 0
    assert "Example:" in res.stdout and "--include-draft" in res.stdout and "--rule ID" in res.stdout


def test_because_text_says_not_and_not_recorded_never_a_bare_value():
    """Issue 18, item 6: "because age < 18: 68" and "active bleeding = no" when nothing was recorded."""
    from pressor.engine.report import because_line, because_text

    age = {"fact": "patient.age_years", "test": "patient.age_years < 18", "value": 68, "holds": False}
    assert because_text(age) == "not patient.age_years < 18 (value 68)"
    bleeding = {"fact": "findings.active_bleeding", "test": "findings.active_bleeding is unknown", "value": False, "holds": True}
    assert because_text(bleeding) == "findings.active_bleeding not recorded"
    assert "= no" not in because_text(bleeding) and "no" not in because_text(bleeding).split()
    below = {"fact": "derived.below_map_target", "test": "derived.below_map_target == true", "value": True, "holds": True}
    assert because_text(below, {"below_map_target": ["patient.chronic_hypertension"]}) == (
        "derived.below_map_target == true (for any value of patient.chronic_hypertension: not recorded)")
    sbp = {"fact": "vitals.sbp_mmhg", "test": "vitals.sbp_mmhg < 70", "value": 68, "holds": True}
    assert because_line([age, bleeding, sbp]).startswith("vitals.sbp_mmhg < 70 (value 68); not patient.age_years < 18")


def test_explain_json_carries_because_and_for_any_value_of(explanation_validator):
    """A MAP of 55 is below every target whatever the hypertension history: decided, and said so."""
    state = {"patient": {"age_years": 60, "weight_kg": 70}, "vitals": {"map_mmhg": 55},
             "shock": {"type": "septic"}, "infusions": {"norepinephrine_mcg_kg_min": 0.05}}
    res = run("explain", "-", "--json", "--rule", "norepinephrine.titrate", "--now", NOW_TEXT, stdin=json.dumps(state))
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    explanation_validator.validate(data)
    leaves = [c for r in data["rules"] for c in r["conditions"]]
    below = next(c for c in leaves if c["fact"] == "derived.below_map_target")
    assert below["for_any_value_of"] == ["patient.chronic_hypertension"] and below["truth"] is True
    assert all("= no" not in b for c in leaves for b in c["because"])
