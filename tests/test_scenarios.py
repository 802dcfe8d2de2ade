"""pressor test: the scenario corpus passes with full coverage; failures say what was expected and what came out."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pressor.cli.main import cli
from pressor.engine.errors import InputError
from pressor.engine.evaluation.pack import load_pack
from pressor.engine.authoring.scenarios import load_scenarios, run

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "tests" / "scenarios"
FAMILIES = {"septic-adult", "pregnancy", "pediatric", "cardiogenic", "escalation", "bans", "special", "missing-data", "protocol-v2",
            "safety", "protocol-v3"}


def invoke(*args: str):
    return CliRunner().invoke(cli, ["test", *args])


def test_one_file_per_family():
    assert {p.stem for p in SCENARIOS.glob("*.yaml")} == FAMILIES


@pytest.mark.slow
def test_corpus_passes_with_full_rule_coverage():
    out = invoke(str(SCENARIOS), "--coverage", "--min-coverage", "100", "--json")
    assert out.exit_code == 0, out.stdout
    data = json.loads(out.stdout)
    assert data["ok"] and data["counts"]["failed"] == 0
    assert data["counts"]["scenarios"] - data["counts"]["from_examples"] >= 70
    rules = data["coverage"]["rules"]
    assert rules["percent"] == 100.0 and rules["missing"] == {}
    assert rules["seen"] == rules["reachable"] == 3 * len(load_pack().rules)  # nothing in the pack is unreachable
    assert data["coverage"]["leaves"]["percent"] == 100.0


@pytest.mark.slow
def test_human_output_counts_scenarios_and_examples():
    out = invoke(str(SCENARIOS / "bans.yaml"))
    assert out.exit_code == 0 and out.stdout == ""
    examples = sum(len(r.raw.get("examples", ())) for r in load_pack().rules)
    assert out.stderr.strip().endswith(f"passed, 0 failed (11 scenarios, {examples} examples)")


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(body)
    return path


def test_failure_shows_expected_against_got_with_the_reason(tmp_path):
    path = _write(tmp_path, """scenarios:
  - name: 29 mL/kg is not enough
    state:
      patient: {age_years: 60, weight_kg: 70, pregnant: false, chronic_hypertension: false}
      shock: {type: septic}
      vitals: {map_mmhg: 60}
      fluids: {crystalloid_ml_kg: 29}
      findings: {fluid_overload: false}
      infusions: {norepinephrine_mcg_kg_min: 0}
    fires: [norepinephrine.start]
    not_evaluable: [fluids.bolus-30ml-kg]
    doses:
      norepinephrine.dose-adult: {for_weight.range.low: 1.5, tolerance: 0.01}
""")
    out = invoke(str(path), "--no-examples")
    assert out.exit_code == 1
    err = out.stderr
    assert f"FAIL {path}:2 29 mL/kg is not enough" in err
    assert "norepinephrine.start outcome: expected fires, got does not fire (false because" in err
    assert "[fluids.crystalloid_ml_kg = 29]" in err
    assert "fluids.bolus-30ml-kg outcome: expected is not evaluable, got fires" in err
    assert "norepinephrine.dose-adult dose: expected a dose, got no dose (the rule did not fire)" in err
    assert "0 passed, 1 failed" in err


def test_dose_within_tolerance_and_outside(tmp_path):
    body = """scenarios:
  - name: 72 kg septic adult starting
    state:
      patient: {age_years: 60, weight_kg: 72, pregnant: false, chronic_hypertension: false}
      shock: {type: septic}
      vitals: {map_mmhg: 60}
      fluids: {crystalloid_ml_kg: 30}
      infusions: {norepinephrine_mcg_kg_min: 0}
    fires: [norepinephrine.dose-adult]
    doses:
      norepinephrine.dose-adult: {for_weight.range.low: LOW, for_weight.range.unit: mcg/min, tolerance: 0.01}
"""
    assert invoke(str(_write(tmp_path, body.replace("LOW", "1.445"))), "--no-examples").exit_code == 0
    out = invoke(str(_write(tmp_path, body.replace("LOW", "1.5"))), "--no-examples", "--json")
    assert out.exit_code == 1
    (failure,) = json.loads(out.stdout)["results"][0]["failures"]
    assert failure == {"rule_id": "norepinephrine.dose-adult", "check": "dose for_weight.range.low",
                       "expected": "1.5 ± 0.01", "got": 1.44, "detail": ""}


def test_superseded_rule_failure_says_which_rule_hid_it(tmp_path):
    path = _write(tmp_path, """scenarios:
  - name: pregnant with hepatorenal syndrome
    state:
      patient: {age_years: 33, weight_kg: 68, pregnant: true}
      shock: {type: hepatorenal}
      infusions: {norepinephrine_mcg_kg_min: 0}
    fires: [norepinephrine.dose-pregnancy]
""")
    out = invoke(str(path), "--no-examples")
    assert out.exit_code == 1
    assert "norepinephrine.dose-pregnancy is not shown: superseded by special.hepatorenal" in out.stderr


def test_unknown_rule_id_is_refused_with_a_suggestion(tmp_path):
    path = _write(tmp_path, "scenarios:\n  - name: typo\n    state: {}\n    fires: [norepinephrine.strat]\n")
    out = invoke(str(path))
    assert out.exit_code == 1
    assert f"{path}:4:13 /scenarios/0/fires/0: no rule 'norepinephrine.strat' in the pack (did you mean 'norepinephrine.start'?)" in out.stderr


def test_malformed_scenario_file_is_refused_with_its_location(tmp_path):
    path = _write(tmp_path, "scenarios:\n  - name: no state\n    fire: [norepinephrine.start]\n")
    out = invoke(str(path))
    assert out.exit_code == 1 and f"{path}:2" in out.stderr


def test_invalid_patient_state_is_a_failure_not_a_crash(tmp_path):
    path = _write(tmp_path, "scenarios:\n  - name: bad weight\n    state: {patient: {weight_kg: -3}}\n")
    out = invoke(str(path), "--no-examples", "--json")
    assert out.exit_code == 1
    (failure,) = json.loads(out.stdout)["results"][0]["failures"]
    assert failure["check"] == "state" and "weight_kg" in failure["detail"]


def test_min_coverage_fails_below_the_threshold():
    out = invoke(str(SCENARIOS / "bans.yaml"), "--no-examples", "--min-coverage", "90")
    assert out.exit_code == 1
    assert "is below the minimum of 90%" in out.stderr
    assert "never seen" in out.stderr


def test_unreachable_outcomes_are_set_aside_with_the_reason():
    pack = load_pack(ROOT / "tests" / "lint_packs" / "unreachable-rule")
    cov = run(pack, [], with_coverage=True).coverage
    assert cov.impossible_rules["case.never"] == {"fired": "its condition can never hold"}
    assert cov.missing_rules()["case.never"] == ["not_fired", "not_evaluable"]


def test_missing_scenario_path_is_a_usage_error():
    assert invoke("does/not/exist.yaml").exit_code == 2


def test_load_scenarios_reports_every_problem(tmp_path, pack):
    path = _write(tmp_path, "scenarios:\n  - name: a\n    state: {}\n    fires: [x.y, x.z]\n")
    with pytest.raises(InputError) as err:
        load_scenarios([path], pack)
    assert len(err.value.problems) == 2
