"""pressor shadow: a synthetic cohort in the MIMIC-IV layout and in FHIR Bulk NDJSON, written for the purpose."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pressor.cli.main import cli
from pressor.engine.shadow import read_courses, shadow
from pressor.engine.shadow.adapter import read_call
from pressor.engine.shadow.concordance import team_actions
from pressor.engine.shadow.mimic import load_mapping
from pressor.engine.shadow.run import Settings, evaluate_courses
from pressor.engine.shadow.tables import contradictions, suppressed_cards

from .shadow_cohort import write_mimic, write_mimic_changes, write_ndjson


@pytest.fixture(scope="module")
def mimic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mimic(tmp_path_factory.mktemp("mimic"))


@pytest.fixture(scope="module")
def run_dir(mimic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shadow")
    result = CliRunner().invoke(cli, ["shadow", "--mimic-iv", str(mimic), "--out", str(out), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    return out


def test_mapping_loads_and_names_item_ids() -> None:
    m = load_mapping()
    assert 220052 in m["readings"]["vitals.map_mmhg"]["prefer"][0]["items"]
    assert m["infusions"]["drugs"]["norepinephrine"]["items"] == [221906]


def test_every_hour_of_every_stay_is_evaluated_none_refused(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stays"] == 3
    assert summary["patient_hours"] == 10 + 6 + 5
    assert summary["refused"] == 0
    assert set(summary["cards_per_call"]) >= {"p50", "p90"}
    for counts in summary["rules"].values():
        assert set(counts) >= {"firm", "conditional", "card"}
    for name in ("rules.csv", "hours.csv", "questions.csv", "data_quality.csv", "concordance.csv", "consistency.csv",
                 "cards_by_kind.csv"):
        assert (run_dir / "tables" / name).exists(), name
    page = (run_dir / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "Not a gold standard" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_an_artefact_is_a_data_quality_finding_not_a_lost_hour(run_dir: Path) -> None:
    quality = (run_dir / "tables" / "data_quality.csv").read_text()
    assert "vitals.map_mmhg 4 (arterial 220052) below 10; dropped" in quality
    # MAP 90 with 100/95: not between them (an arterial-line artefact); the pack sets the three pressures aside,
    # the hour is evaluated with the MAP unknown, and the finding is in the data-quality table.
    assert "vitals.map_mmhg 90 mmHg is not between the diastolic 95 and systolic 100 mmHg" in quality
    hours = (run_dir / "tables" / "hours.csv").read_text().splitlines()
    stay3 = [h.split(",") for h in hours if h.startswith("1003,")]
    assert len(stay3) == 5 and all(h[-1] == "0" for h in stay3)
    assert stay3[2][3] == "90"  # hour 3: the MAP kept


def test_temporal_facts_are_computed_per_evaluation_time(mimic: Path) -> None:
    courses, _ = read_courses(mimic_iv=str(mimic), stays=1)
    out = evaluate_courses(courses, Settings(None, None))[0]
    rows = out["rows"]
    # norepinephrine 0.05 from 1 h, 0.12 from 3 h, 0.04 from 8 h, stopped at 10 h: each hour sees the rate running at its end
    assert [r["rates"].get("norepinephrine") for r in rows] == [0.05, 0.05, 0.12, 0.12, 0.12, 0.12, 0.12, 0.04, 0.04, None]
    assert [c[0] for c in out["care"]].count("norepinephrine") >= 3


def _facts_by_hour(root: Path) -> list[dict]:
    from pressor.engine.shadow.course import CourseIndex, state_at
    from pressor.engine.shadow.run import _pack
    pack, rate_fact, drug_of_rate = _pack(Settings(None, None))
    courses, _ = read_courses(mimic_iv=str(root))
    return [state_at(CourseIndex(c), pack, t, drug_of_rate, rate_fact)[0] for c in courses for t in c.times]


def test_mapping_fills_height_bags_pause_and_recognition(tmp_path: Path) -> None:
    hours = _facts_by_hour(write_mimic_changes(tmp_path / "changes"))
    assert len(hours) == 30
    first, second = hours[0], hours[1]
    # the outpatient 65 inches (known from the end of its day), then the 66 inches charted at 1 h 30: cm, as charted
    assert first["patient.height_cm"] == 165.1 and second["patient.height_cm"] == 167.6
    assert first["patient.weight_kg"] == 121  # charted, preferred over the pumps' 120 and the outpatient 113.4
    # phenylephrine from 0 h 30, 60 mg in 250 mL; shock recognised at the first vasopressor start
    assert first["infusions.phenylephrine_mcg_kg_min"] == 1.0 and first["infusions.norepinephrine_mcg_kg_min"] == 0
    assert first["infusions.phenylephrine_concentration_mcg_ml"] == 240
    assert first["fluids.hours_since_recognition"] == 0.5
    assert "fluids.crystalloid_ml_kg" not in first  # no "shock recognised" marker: the fluid count stays unknown
    assert "infusions.norepinephrine_paused_minutes" not in first  # norepinephrine never ran yet: no pause
    at4 = hours[3]  # 4 h: norepinephrine 0.1 running, 8 mg in 250 mL; phenylephrine stopped at 3 h
    assert at4["infusions.norepinephrine_mcg_kg_min"] == 0.1 and at4["infusions.norepinephrine_concentration_mcg_ml"] == 32
    assert "infusions.phenylephrine_concentration_mcg_ml" not in at4 and "infusions.norepinephrine_paused_minutes" not in at4
    at5, at6 = hours[4], hours[5]  # paused at 4 h 30
    assert at5["infusions.norepinephrine_paused_minutes"] == 30 and at5["infusions.norepinephrine_last_rate_mcg_kg_min"] == 0.1
    assert "infusions.norepinephrine_concentration_mcg_ml" not in at5  # no bag in use
    assert at6["infusions.norepinephrine_paused_minutes"] == 90
    assert hours[27]["fluids.hours_since_recognition"] == 27.5


def test_other_weight_sources_when_none_is_charted(tmp_path: Path) -> None:
    from pressor.engine.shadow.course import CourseIndex, state_at
    from pressor.engine.shadow.run import _pack
    pack, rate_fact, drug_of_rate = _pack(Settings(None, None))
    course = read_courses(mimic_iv=str(write_mimic_changes(tmp_path / "changes")))[0][0]
    course.timeline.readings = [r for r in course.timeline.readings if not r.source.startswith("chart")]
    index = CourseIndex(course)
    facts = [state_at(index, pack, t, drug_of_rate, rate_fact)[0] for t in course.times[:2]]
    assert facts[0]["patient.weight_kg"] == 120  # inputevents.patientweight (the `also` sources, in their order)
    assert facts[0]["patient.height_cm"] == 165.1 == facts[1]["patient.height_cm"]  # the outpatient height only


def test_bag_strength_from_the_solution_row_of_the_same_order(mimic: Path) -> None:
    hours = _facts_by_hour(mimic)
    stay1 = hours[:10]
    # 8 mg in 250 mL, then 7.5 mg left in 234.375 mL (the same bag, 32 mcg/mL), then 8 mg in 125 mL
    assert [h.get("infusions.norepinephrine_concentration_mcg_ml") for h in stay1] == [32] * 7 + [64, 64, None]
    stay3 = hours[16:]
    assert [h.get("infusions.vasopressin_concentration_units_ml") for h in stay3] == [0.4, 0.4, 0.4, None, None]
    # stay 1001: norepinephrine runs without a break and stops at discharge, the last evaluation (0 min paused)
    assert [h.get("infusions.norepinephrine_paused_minutes") for h in stay1] == [None] * 9 + [0]
    assert stay1[-1]["infusions.norepinephrine_last_rate_mcg_kg_min"] == 0.04


def test_new_rules_fire_on_the_record(tmp_path: Path) -> None:
    courses, _ = read_courses(mimic_iv=str(write_mimic_changes(tmp_path / "changes")))
    rows = evaluate_courses(courses, Settings(None, None))[0]["rows"]
    firm = [{r[0] for r in row["firm"]} for row in rows]
    assert "norepinephrine.switch-from-other-vasopressor" in firm[0]  # phenylephrine running, start indicated
    assert "norepinephrine.restart-after-pause" in firm[4]  # 30 min after the pause, MAP 58
    assert "norepinephrine.restart-after-pause" not in firm[5]  # 90 min: past the 60-min window
    assert "norepinephrine.start-late-reassess" in firm[27] and "norepinephrine.start-late-reassess" not in firm[5]


def test_team_actions_and_concordance_both_ways(run_dir: Path) -> None:
    actions = team_actions([["norepinephrine", "2150-03-01T09:00:00Z", 0.05], ["norepinephrine", "2150-03-01T11:00:00Z", 0.12],
                            ["norepinephrine", "2150-03-01T16:00:00Z", 0.04], ["norepinephrine", "2150-03-01T18:00:00Z", 0.0]])
    assert [a[2] for a in actions] == ["start", "increase", "decrease", "stop"]
    summary = json.loads((run_dir / "summary.json").read_text())
    titrate = summary["concordance"]["norepinephrine-titrate-up"]
    assert titrate["team_actions"] == 1
    assert set(titrate) >= {"advised_hours", "acted_within_window", "median_minutes_to_action", "team_actions_advised"}


def test_adapter_reads_cards_if_items_and_questions() -> None:
    data = {"recommendations": [{"rule_id": "target.map-65", "severity": "warning", "kind": "do"}],
            "conditional": [], "ask_next": [{"fact": "shock.type", "question": "?", "decides": [{"severity": "critical"}]}]}
    call = read_call(data)
    assert call["cards"] == [["rule:target.map-65", "firm-warning", "target.map-65"], ["ask:shock.type", "questions", ""]]
    assert call["questions"] == [["shock.type", 1, "critical", True]]


def test_adapter_reads_the_plan_default_view() -> None:
    data = {
        "recommendations": [
            {"rule_id": "target.map-65", "severity": "info", "kind": "do", "shown": True},
            {"rule_id": "norepinephrine.start-emergency", "severity": "critical", "kind": "do", "shown": True},
            {"rule_id": "monitoring.titration", "severity": "info", "kind": "monitor", "shown": True},
            {"rule_id": "target.permissive-older-adults", "severity": "info", "kind": "consider", "shown": False},
            {"rule_id": "avoid.phenylephrine-first-line", "severity": "warning", "kind": "avoid", "shown": True}],
        "conditional": [{"rule_id": "fluids.stop-overload", "severity": "warning", "kind": "avoid", "shown": True}],
        "ask_next": [{"fact": "findings.fluid_overload", "decides": [{"severity": "warning"}], "shown": True},
                     {"fact": "patient.pregnant", "decides": [{"severity": "info"}], "shown": False}],
        "plan": {"outside_protocol": None, "bans": ["avoid.phenylephrine-first-line"], "questions": ["findings.fluid_overload"],
                 "set_aside_count": 1,
                 "items": [{"decision": "plan-map-target", "status": "firm", "rule_id": "target.map-65", "severity": "info",
                            "unless": [], "set_aside": [{"rule_id": "target.permissive-older-adults"}], "supporting": []},
                           {"decision": "plan-norepinephrine", "status": "firm", "rule_id": "norepinephrine.start-emergency",
                            "severity": "critical", "unless": [], "set_aside": [], "supporting": ["monitoring.titration"]},
                           {"decision": "plan-fluids", "status": "undecided", "rule_id": None, "severity": "warning",
                            "unless": [], "set_aside": [], "supporting": []}]}}
    call = read_call(data)
    assert [c[1] for c in call["cards"]] == ["firm-info", "firm-critical", "undecided", "ban", "questions"]
    data["plan"]["items"][1]["status"] = "conditional"  # unless something unknown: still the plan's answer
    assert [c[1] for c in read_call(data)["cards"]][1] == "unless-critical"
    assert "norepinephrine.start-emergency" in read_call(data)["advised"]
    assert "target.permissive-older-adults" not in call["advised"]  # fired, set aside by the priority
    assert {"target.map-65", "norepinephrine.start-emergency", "monitoring.titration"} <= set(call["advised"])
    assert len(call["firm"]) == 5  # firing rates still count every rule that fired
    assert call["items"][0] == ["plan-map-target", "target.map-65", "firm"]
    assert [q[3] for q in call["questions"]] == [True, False]


def test_repeat_suppression_and_contradictions() -> None:
    rows = [{"t": f"2150-01-01T0{h}:00:00Z", "cards": [["rule:a", "firm-info"]]} for h in range(6)]
    assert [len(k) for k in suppressed_cards(rows, hours=4)] == [1, 0, 0, 0, 1, 0]
    assert contradictions({"firm": [["target.map-65", "warning", "do"], ["target.map-70-75-chronic-hypertension", "info", "do"]]})


def test_fhir_bulk_ndjson(tmp_path: Path) -> None:
    export = write_ndjson(tmp_path / "export")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["shadow", "--fhir-ndjson", str(export), "--out", str(out), "--jobs", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stays"] == 2 and summary["refused"] == 0 and summary["patient_hours"] >= 10
    hours = (out / "tables" / "hours.csv").read_text()
    assert "p1,1," in hours and "p2,1," in hours


def test_timeline_lines_evaluated_at_their_own_time(tmp_path: Path) -> None:
    lines = [{"id": "a", "at": "2026-03-01T10:00:00Z", "timeline": {"state": {"patient": {"age_years": 60, "weight_kg": 70}},
                                                                    "events": [{"at": "2026-03-01T09:50:00Z", "observe": "vitals.map_mmhg", "value": 55}]}},
             {"id": "a", "at": "2026-03-01T11:00:00Z", "timeline": {"state": {"patient": {"age_years": 60, "weight_kg": 70}},
                                                                    "events": [{"at": "2026-03-01T10:50:00Z", "observe": "vitals.map_mmhg", "value": -3},
                                                                               {"at": "2026-03-01T10:55:00Z", "observe": "vitals.heart_rate_bpm", "value": 120}]}}]
    path = tmp_path / "lines.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    courses, _ = read_courses(timeline=str(path))
    summary = shadow(courses, tmp_path / "out", source="lines", jobs=1, progress=False)
    assert summary["patient_hours"] == 2 and summary["refused"] == 0 and summary["values_dropped"] == 1
    hours = (tmp_path / "out" / "tables" / "hours.csv").read_text().splitlines()
    assert hours[1].split(",")[2] == "2026-03-01T10:00:00Z" and hours[2].split(",")[2] == "2026-03-01T11:00:00Z"


def test_two_profiles_or_packs_compare(mimic: Path, tmp_path: Path) -> None:
    old = Path(__file__).parent / "packs" / "v1.2.0"
    courses, _ = read_courses(mimic_iv=str(mimic))
    summary = shadow(courses, tmp_path, source="synthetic", compare_rules=str(old), jobs=1, progress=False)
    assert summary["compare"]["patient_hours"] == 21
    assert summary["compare"]["changed_hours"] > 0
    assert (tmp_path / "tables" / "compare.csv").read_text().startswith("what,id,change,hours,examples")


def test_processes_give_the_same_tables(mimic: Path, tmp_path: Path) -> None:
    courses, _ = read_courses(mimic_iv=str(mimic))
    shadow(courses, tmp_path / "one", source="s", jobs=1, progress=False)
    shadow(courses, tmp_path / "two", source="s", jobs=2, progress=False)
    for table in sorted((tmp_path / "one" / "tables").iterdir()):
        assert table.read_bytes() == (tmp_path / "two" / "tables" / table.name).read_bytes(), table.name


@pytest.mark.slow
def test_dask_local_cluster_gives_byte_identical_tables(mimic: Path, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed", reason="the shadow extra (distributed) is not installed")
    courses, _ = read_courses(mimic_iv=str(mimic))
    shadow(courses, tmp_path / "local", source="s", jobs=1, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        shadow(courses, tmp_path / "dask", source="s", dask=cluster.scheduler_address, progress=False)
    names = sorted(p.name for p in (tmp_path / "local" / "tables").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "dask" / "tables").iterdir())
    for name in names:
        assert (tmp_path / "local" / "tables" / name).read_bytes() == (tmp_path / "dask" / "tables" / name).read_bytes(), name
    assert json.loads((tmp_path / "local" / "summary.json").read_text()) == json.loads((tmp_path / "dask" / "summary.json").read_text())


def test_a_site_profile_against_the_pack_defaults(mimic: Path, tmp_path: Path) -> None:
    profile = Path(__file__).parent.parent / "examples" / "profiles" / "teaching-hospital-icu.yaml"
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["shadow", "--mimic-iv", str(mimic), "--out", str(out), "--jobs", "1",
                                      "--compare-profile", str(profile)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["compare"]["patient_hours"] == 21
    assert "teaching-hospital-icu.yaml" in summary["compare"]["base"]  # base: the --compare-* run
    assert "Two packs" in (out / "report.html").read_text()


def test_one_input_exactly(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["shadow", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "exactly one of" in result.stderr


def test_evaluated_at_each_new_vital_sign(mimic: Path) -> None:
    courses, _ = read_courses(mimic_iv=str(mimic), at="vitals")
    # one evaluation per usable MAP charted during the stay (stay 1003: the MAP of 4 was dropped, so not a new vital sign)
    assert [len(c.times) for c in courses] == [10, 6, 3]
    assert courses[0].times[0].minute == 30
