"""bench/mimic_hourly.py on a tiny synthetic cohort in the MIMIC-IV demo's layout (no real data)."""
from __future__ import annotations

import csv
import gzip
import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
spec = importlib.util.spec_from_file_location("bench_mimic_hourly", BENCH / "mimic_hourly.py")
mimic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mimic)

INPUT_COLUMNS = ["subject_id", "hadm_id", "stay_id", "starttime", "endtime", "storetime", "itemid", "amount",
                 "amountuom", "rate", "rateuom", "ordercomponenttypedescription", "patientweight",
                 "statusdescription"]


def write(demo: Path, name: str, header: list[str], rows: list[list]) -> None:
    path = demo / f"{name}.csv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(header)
        w.writerows(rows)


def cohort(demo: Path) -> None:
    s, h, st = 1, 11, 101  # one stay, 08:00 to 11:00: three hours, evaluated at 09:00, 10:00, 11:00
    write(demo, "icu/icustays", ["subject_id", "hadm_id", "stay_id", "intime", "outtime"],
          [[s, h, st, "2150-01-01 08:00:00", "2150-01-01 11:00:00"]])
    write(demo, "hosp/patients", ["subject_id", "gender", "anchor_age", "anchor_year"], [[s, "F", 60, 2148]])
    write(demo, "hosp/diagnoses_icd", ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
          [[s, h, 1, "I10", 10], [s, h, 2, "R6521", 10]])
    write(demo, "derived/chartevents_numeric_from_meds",
          ["subject_id", "hadm_id", "stay_id", "charttime", "itemid", "valuenum", "valueuom"],
          [[s, "", "", "2150-01-01 07:00:00", 226512, 80, "kg"],
           [s, h, st, "2150-01-01 08:30:00", 220052, 58, "mmHg"],      # arterial MAP
           [s, h, st, "2150-01-01 08:30:00", 220050, 85, "mmHg"],
           [s, h, st, "2150-01-01 08:30:00", 220051, 45, "mmHg"],
           [s, h, st, "2150-01-01 08:40:00", 220181, 70, "mmHg"],      # NIBP, newer: arterial preferred
           [s, h, st, "2150-01-01 08:45:00", 220045, 110, "bpm"],
           [s, h, st, "2150-01-01 09:30:00", 220052, 300, "mmHg"],     # impossible: dropped, noted
           [s, h, st, "2150-01-01 09:00:30", 220045, 90, "bpm"]])      # after 09:00: not in hour 1
    write(demo, "icu/inputevents", INPUT_COLUMNS,
          [[s, h, st, "2150-01-01 08:30:00", "2150-01-01 09:30:00", "2150-01-01 08:31:00", 221906, 1, "mg",
            0.1, "mcg/kg/min", "Main order parameter", 80, "ChangeDose/Rate"],
           [s, h, st, "2150-01-01 09:30:00", "2150-01-01 12:00:00", "2150-01-01 09:31:00", 221906, 1, "mg",
            0.2, "mcg/kg/min", "Main order parameter", 80, "ChangeDose/Rate"],
           [s, h, st, "2150-01-01 09:45:00", "2150-01-01 12:00:00", "2150-01-01 09:46:00", 222315, 5, "units",
            2.4, "units/hour", "Main order parameter", 80, "ChangeDose/Rate"],
           [s, h, st, "2150-01-01 08:00:00", "2150-01-01 10:00:00", "2150-01-01 08:00:00", 225158, 800, "ml",
            400, "mL/hour", "Main order parameter", 80, "FinishedRunning"],
           [s, h, st, "2150-01-01 08:00:00", "2150-01-01 10:00:00", "2150-01-01 08:00:00", 225158, 100, "ml",
            50, "mL/hour", "Mixed solution", 80, "FinishedRunning"],                    # a diluent: not counted
           [s, h, st, "2150-01-01 10:15:00", "2150-01-01 12:00:00", "2150-01-01 10:16:00", 221749, 1, "mg",
            1, "mg/day", "Main order parameter", 80, "ChangeDose/Rate"]])                # unconvertible
    write(demo, "icu/outputevents", ["subject_id", "hadm_id", "stay_id", "charttime", "itemid", "value", "valueuom"],
          [[s, h, st, "2150-01-01 08:00:00", 226559, 50, "ml"], [s, h, st, "2150-01-01 09:00:00", 226559, 40, "ml"],
           [s, h, st, "2150-01-01 09:00:00", 226588, 500, "ml"]])                      # a chest tube: not urine
    write(demo, "hosp/labevents", ["subject_id", "hadm_id", "itemid", "charttime", "storetime", "valuenum"],
          [[s, h, 50813, "2150-01-01 08:50:00", "2150-01-01 09:20:00", 4.0],  # resulted after hour 1
           [s, h, 50813, "2150-01-01 06:00:00", "2150-01-01 06:10:00", 3.0]])
    write(demo, "icu/procedureevents", ["subject_id", "hadm_id", "stay_id", "starttime", "endtime", "itemid",
                                        "statusdescription"],
          [[s, h, st, "2150-01-01 09:10:00", "2150-01-03 00:00:00", 224263, "FinishedRunning"]])


def run(tmp_path: Path, *extra: str) -> tuple[list[dict], list[dict]]:
    demo = tmp_path / "demo"
    cohort(demo)
    out, meta = tmp_path / "states.jsonl", tmp_path / "meta.jsonl"
    assert mimic.main([str(demo), "--out", str(out), "--meta", str(meta), *extra]) == 0
    return [json.loads(x) for x in out.read_text().splitlines()], [json.loads(x) for x in meta.read_text().splitlines()]


def test_one_state_per_hour_from_what_was_charted_by_its_end(tmp_path, capsys):
    states, meta = run(tmp_path)
    assert [m["hour"] for m in meta] == [1, 2, 3]
    assert [m["time"] for m in meta] == ["2150-01-01T09:00:00", "2150-01-01T10:00:00", "2150-01-01T11:00:00"]
    first = states[0]
    assert first["patient"] == {"age_years": 62, "sex": "female", "weight_kg": 80.0, "chronic_hypertension": True}
    assert "shock" not in first  # septic shock is coded at discharge: only with --diagnoses
    assert first["vitals"] == {"map_mmhg": 58.0, "sbp_mmhg": 85.0, "dbp_mmhg": 45.0, "heart_rate_bpm": 110.0}
    assert first["perfusion"] == {"lactate_mmol_l": 3.0, "urine_output_ml_kg_h": 0.5}  # 40 mL / 1 h / 80 kg
    assert first["infusions"]["norepinephrine_mcg_kg_min"] == 0.1
    assert first["infusions"]["vasopressin_units_min"] == 0 and first["infusions"]["vasopressor_hours"] == 0.5
    # 400 of the 800 mL bag by 09:00, diluent left out; 0.5 h since the first vasopressor start (08:30)
    assert first["fluids"] == {"crystalloid_ml_kg": 5.0, "hours_since_recognition": 0.5}
    assert first["access"] == {"arterial_line": True}
    assert "central_venous" not in first["access"] and "pregnant" not in first["patient"]
    assert "stays, 3 states written, 0 refused" in capsys.readouterr().err


def test_later_hours_new_rates_late_results_and_dropped_values(tmp_path):
    states, meta = run(tmp_path)
    second, third = states[1], states[2]
    assert second["infusions"]["norepinephrine_mcg_kg_min"] == 0.2
    assert second["infusions"]["vasopressin_units_min"] == 0.04       # 2.4 units/hour
    assert second["perfusion"]["lactate_mmol_l"] == 4.0 and second["perfusion"]["lactate_rising"] is True
    assert second["access"]["central_venous"] is True
    assert second["vitals"]["map_mmhg"] == 58.0                       # the 300 was left out...
    assert any("map_mmhg 300" in n for n in meta[1]["notes"])         # ...and noted
    assert "phenylephrine_mcg_kg_min" not in third["infusions"]       # mg/day: not converted, left out
    assert any("phenylephrine" in n for n in meta[2]["notes"])
    assert third["vitals"] == {"heart_rate_bpm": 90.0}  # the 08:30 pressures are older than the 2 h look-back
    assert third["fluids"]["crystalloid_ml_kg"] == 10.0


def test_septic_shock_only_with_diagnoses(tmp_path):
    states, _ = run(tmp_path, "--diagnoses")
    assert all(s["shock"] == {"type": "septic"} for s in states)


def test_height_bags_pause_and_recognition(tmp_path):
    demo = tmp_path / "demo"
    cohort(demo)
    s, h, st = 1, 11, 101
    write(demo, "derived/chartevents_numeric_from_meds",
          ["subject_id", "hadm_id", "stay_id", "charttime", "itemid", "valuenum", "valueuom"],
          [[s, "", "", "2150-01-01 07:00:00", 226512, 80, "kg"],
           [s, "", "", "2150-01-01 07:00:00", 226707, 60, "Inch"],       # 152.4 cm
           [s, "", "", "2150-01-01 07:30:00", 226730, 61, "cm"],         # an adult of 61 cm: dropped
           [s, h, st, "2150-01-01 08:30:00", 220052, 58, "mmHg"]])
    columns = INPUT_COLUMNS + ["orderid", "originalamount"]
    write(demo, "icu/inputevents", columns,
          [[s, h, st, "2150-01-01 08:30:00", "2150-01-01 09:30:00", "", 221906, 0.5, "mg", 0.1, "mcg/kg/min",
            "Main order parameter", 80, "Paused", 1, 8],
           [s, h, st, "2150-01-01 08:30:00", "2150-01-01 09:30:00", "", 225158, 15, "ml", 15, "mL/hour",
            "Mixed solution", 80, "Paused", 1, 250],                                   # 8 mg in 250 mL: 32 mcg/mL
           [s, h, st, "2150-01-01 10:30:00", "2150-01-01 12:00:00", "", 221906, 0.5, "mg", 0.2, "mcg/kg/min",
            "Main order parameter", 80, "ChangeDose/Rate", 2, 7.5]])                   # no solution row: unknown bag
    out = tmp_path / "states.jsonl"
    assert mimic.main([str(demo), "--out", str(out)]) == 0
    first, second, third = [json.loads(x) for x in out.read_text().splitlines()]
    assert first["patient"]["height_cm"] == 152.4
    assert first["infusions"]["norepinephrine_concentration_mcg_ml"] == 32
    assert first["fluids"]["hours_since_recognition"] == 0.5
    assert "norepinephrine_paused_minutes" not in first["infusions"]
    assert second["infusions"]["norepinephrine_mcg_kg_min"] == 0
    assert second["infusions"]["norepinephrine_paused_minutes"] == 30
    assert second["infusions"]["norepinephrine_last_rate_mcg_kg_min"] == 0.1
    assert "norepinephrine_concentration_mcg_ml" not in second["infusions"]
    assert second["fluids"]["hours_since_recognition"] == 1.5
    assert third["infusions"]["norepinephrine_mcg_kg_min"] == 0.2
    assert "norepinephrine_paused_minutes" not in third["infusions"]
    assert "norepinephrine_concentration_mcg_ml" not in third["infusions"]
