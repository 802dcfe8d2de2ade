"""A small synthetic cohort for the shadow tests, written for the purpose (no real patient data).

:func:`write_mimic` lays out three ICU stays in the MIMIC-IV layout (``hosp/``, ``icu/``, csv.gz and csv
mixed, as a site's extract may be): a patient in shock whose norepinephrine is started and raised, a
stable patient, and one whose monitor gives an artefact (a MAP of 4, and a MAP that its own systolic
and diastolic do not bracket, which the patient-state schema refuses). :func:`write_ndjson` writes two
patients as a FHIR Bulk Data export (one ``<Type>.ndjson`` per resource type). :func:`write_mimic_changes`
lays out one stay for the facts of pack 3.0.0: a height in inches after an outpatient one, phenylephrine
running before norepinephrine, the bags' strengths, a norepinephrine pause, and a day later a new start.
"""
from __future__ import annotations

import csv
import gzip
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

T0 = datetime(2150, 3, 1, 8, 0, 0)


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _write(root: Path, name: str, header: list[str], rows: list[list[Any]], gz: bool = True) -> None:
    path = root / f"{name}.csv.gz" if gz else root / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="", encoding="utf-8") as handle:  # type: ignore[operator]
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


INPUT_COLUMNS = ["subject_id", "hadm_id", "stay_id", "starttime", "endtime", "itemid", "rate", "rateuom", "amount", "amountuom",
                 "patientweight", "ordercomponenttypedescription", "statusdescription", "orderid", "originalamount"]


def write_mimic(root: Path) -> Path:
    """Three ICU stays (ids 1001-1003) in the MIMIC-IV layout under ``root``; returns ``root``."""
    stays = [  # stay, subject, hadm, intime, hours
        (1001, 11, 101, T0, 10),
        (1002, 12, 102, T0 + timedelta(days=2), 6),
        (1003, 13, 103, T0 + timedelta(days=5), 5),
    ]
    _write(root, "icu/icustays", ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime", "los"],
           [[s, h, st, "MICU", "MICU", _ts(t), _ts(t + timedelta(hours=n)), n / 24] for st, s, h, t, n in stays])
    _write(root, "hosp/patients", ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
           [[11, "M", 66, 2150, "2017 - 2019", ""], [12, "F", 45, 2150, "2017 - 2019", ""], [13, "M", 71, 2150, "2017 - 2019", ""]],
           gz=False)
    _write(root, "hosp/diagnoses_icd", ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
           [[11, 101, 1, "R6521", 10], [11, 101, 2, "I10", 10], [13, 103, 1, "4019", 9]])
    chart: list[list[Any]] = []

    def vitals(stay: int, subject: int, hadm: int, t: datetime, mean: float, sbp: float, dbp: float, hr: float = 95,
               arterial: bool = True) -> None:
        items = (220052, 220050, 220051) if arterial else (220181, 220179, 220180)
        for item, value in zip(items, (mean, sbp, dbp)):
            chart.append([subject, hadm, stay, _ts(t), item, value, "mmHg"])
        chart.append([subject, hadm, stay, _ts(t), 220045, hr, "bpm"])

    # Stay 1001: in shock, MAP in the 50s, norepinephrine started at 1 h, raised at 3 h, weaned at 8 h.
    for k in range(0, 10):
        t = T0 + timedelta(minutes=30 + 60 * k)
        mean = [55, 54, 56, 58, 60, 63, 66, 70, 74, 76][k]
        vitals(1001, 11, 101, t, mean, mean + 35, mean - 15, hr=118)
    chart.append([11, 101, 1001, _ts(T0 + timedelta(minutes=10)), 226512, 80, "kg"])
    # Stay 1002: stable on a cuff.
    for k in range(0, 6):
        vitals(1002, 12, 102, T0 + timedelta(days=2, minutes=20 + 60 * k), 82, 120, 65, hr=80, arterial=False)
    chart.append([12, 102, 1002, _ts(T0 + timedelta(days=2, minutes=5)), 226512, 65, "kg"])
    # Stay 1003: a monitor artefact (MAP 4), then a MAP its own pair does not bracket (refused by the schema).
    t3 = T0 + timedelta(days=5)
    vitals(1003, 13, 103, t3 + timedelta(minutes=30), 72, 110, 60)
    vitals(1003, 13, 103, t3 + timedelta(minutes=90), 4, 110, 60)
    vitals(1003, 13, 103, t3 + timedelta(minutes=150), 90, 100, 95)
    vitals(1003, 13, 103, t3 + timedelta(minutes=210), 70, 105, 55)
    chart.append([13, 103, 1003, _ts(t3 + timedelta(minutes=5)), 226512, 90, "kg"])
    _write(root, "icu/chartevents", ["subject_id", "hadm_id", "stay_id", "charttime", "itemid", "valuenum", "valueuom"], chart)
    inputs = [  # subject, hadm, stay, start, end, item, rate, rateuom, amount, amountuom, weight, component, status, orderid, originalamount
        [11, 101, 1001, T0 + timedelta(hours=1), T0 + timedelta(hours=3), 221906, 0.05, "mcg/kg/min", 10, "mg", 80, "Main order parameter", "FinishedRunning", 1, 8],
        [11, 101, 1001, T0 + timedelta(hours=3), T0 + timedelta(hours=8), 221906, 0.12, "mcg/kg/min", 10, "mg", 80, "Main order parameter", "FinishedRunning", 2, 7.5],
        [11, 101, 1001, T0 + timedelta(hours=8), T0 + timedelta(hours=10), 221906, 0.04, "mcg/kg/min", 10, "mg", 80, "Main order parameter", "FinishedRunning", 3, 8],
        [11, 101, 1001, T0 + timedelta(minutes=20), T0 + timedelta(minutes=80), 225158, 1000, "mL/hour", 1000, "ml", 80, "Main order parameter", "FinishedRunning", 4, 1000],
        [12, 102, 1002, T0 + timedelta(days=2, hours=1), T0 + timedelta(days=2, hours=2), 225158, 500, "mL/hour", 500, "ml", 65, "Main order parameter", "FinishedRunning", 5, 500],
        [13, 103, 1003, t3 + timedelta(hours=1), t3 + timedelta(hours=4), 222315, 2.4, "units/hour", 1, "units", 90, "Main order parameter", "FinishedRunning", 6, 40],
    ]
    # Each drug's solution (the bag's volume at the row's start, same orderid): 8 mg in 250 mL (32 mcg/mL),
    # 7.5 mg left in 234.375 mL (still 32), 8 mg in 125 mL (64), vasopressin 40 units in 100 mL (0.4).
    for order, (stay, subject, hadm, start, end, ml) in {
            1: (1001, 11, 101, T0 + timedelta(hours=1), T0 + timedelta(hours=3), 250),
            2: (1001, 11, 101, T0 + timedelta(hours=3), T0 + timedelta(hours=8), 234.375),
            3: (1001, 11, 101, T0 + timedelta(hours=8), T0 + timedelta(hours=10), 125),
            6: (1003, 13, 103, t3 + timedelta(hours=1), t3 + timedelta(hours=4), 100)}.items():
        inputs.append([subject, hadm, stay, start, end, 225158, 5, "mL/hour", 5, "ml", 80, "Mixed solution", "FinishedRunning", order, ml])
    _write(root, "icu/inputevents", INPUT_COLUMNS, [[r[0], r[1], r[2], _ts(r[3]), _ts(r[4]), *r[5:]] for r in inputs])
    _write(root, "icu/outputevents", ["subject_id", "hadm_id", "stay_id", "charttime", "itemid", "value", "valueuom"],
           [[11, 101, 1001, _ts(T0 + timedelta(hours=h)), 226559, v, "ml"] for h, v in ((1, 30), (2, 20), (3, 15), (4, 40))])
    _write(root, "hosp/labevents", ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "charttime", "storetime",
                                    "value", "valuenum", "valueuom"],
           [[1, 11, 101, 1, 50813, _ts(T0 + timedelta(minutes=15)), _ts(T0 + timedelta(minutes=45)), "4.1", 4.1, "mmol/L"],
            [2, 11, 101, 2, 50813, _ts(T0 + timedelta(hours=3)), _ts(T0 + timedelta(hours=3, minutes=30)), "5.2", 5.2, "mmol/L"]])
    _write(root, "icu/procedureevents", ["subject_id", "hadm_id", "stay_id", "starttime", "endtime", "itemid", "statusdescription"],
           [[11, 101, 1001, _ts(T0 + timedelta(minutes=40)), _ts(T0 + timedelta(hours=10)), 224263, "FinishedRunning"]])
    return root


def write_mimic_changes(root: Path) -> Path:
    """One ICU stay (2001, 30 h) for pack 3.0.0's facts, in the MIMIC-IV layout under ``root``; returns ``root``.

    A man of 70, 121 kg charted (120 kg on the pumps, 250 lb as an outpatient); an outpatient height of 65 inches the day before, then 66 inches charted at 1 h 30.
    MAP 58 (SBP 65, DBP 40: profound hypotension) all along. Phenylephrine 1.0 mcg/kg/min from 0 h 30 to 3 h
    (60 mg in 250 mL), norepinephrine 0.1 from 3 h to 4 h 30 (8 mg in 250 mL), then paused for good."""
    subject, hadm, stay = 21, 201, 2001
    _write(root, "icu/icustays", ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime", "los"],
           [[subject, hadm, stay, "MICU", "MICU", _ts(T0), _ts(T0 + timedelta(hours=30)), 1.25]])
    _write(root, "hosp/patients", ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
           [[subject, "M", 70, 2150, "2017 - 2019", ""]])
    _write(root, "hosp/omr", ["subject_id", "chartdate", "seq_num", "result_name", "result_value"],
           [[subject, (T0 - timedelta(days=1)).strftime("%Y-%m-%d"), 1, "Height (Inches)", "65"],
            [subject, (T0 - timedelta(days=1)).strftime("%Y-%m-%d"), 1, "Weight (Lbs)", "250"]])
    chart: list[list[Any]] = [[subject, "", "", _ts(T0 + timedelta(minutes=5)), 226512, 121, "kg"],
                              [subject, "", "", _ts(T0 + timedelta(minutes=90)), 226707, 66, "Inch"]]
    for k in range(30):
        t = _ts(T0 + timedelta(minutes=30 + 60 * k))
        chart += [[subject, hadm, stay, t, item, value, unit] for item, value, unit in
                  ((220052, 58, "mmHg"), (220050, 65, "mmHg"), (220051, 40, "mmHg"), (220045, 110, "bpm"))]
    _write(root, "icu/chartevents", ["subject_id", "hadm_id", "stay_id", "charttime", "itemid", "valuenum", "valueuom"], chart)
    rows = [  # start, end, item, rate, rateuom, amount, amountuom, component, status, orderid, originalamount
        (T0 + timedelta(minutes=30), T0 + timedelta(hours=3), 221749, 1.0, "mcg/kg/min", 18, "mg", "Main order parameter", "Stopped", 11, 60),
        (T0 + timedelta(minutes=30), T0 + timedelta(hours=3), 225823, 75, "mL/hour", 75, "ml", "Mixed solution", "Stopped", 11, 250),
        (T0 + timedelta(hours=3), T0 + timedelta(minutes=270), 221906, 0.1, "mcg/kg/min", 1.08, "mg", "Main order parameter", "Paused", 12, 8),
        (T0 + timedelta(hours=3), T0 + timedelta(minutes=270), 225158, 22.5, "mL/hour", 33.75, "ml", "Mixed solution", "Paused", 12, 250),
    ]
    _write(root, "icu/inputevents", INPUT_COLUMNS,
           [[subject, hadm, stay, _ts(s), _ts(e), item, rate, ru, a, au, 120, comp, status, order, orig]
            for s, e, item, rate, ru, a, au, comp, status, order, orig in rows])
    _write(root, "hosp/diagnoses_icd", ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"], [])
    return root


def _obs(pid: str, t: datetime, code: str, value: float, unit: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"{pid}-{code}-{t:%H%M}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def write_ndjson(root: Path) -> Path:
    """Two patients as a FHIR Bulk Data export under ``root`` (Patient.ndjson, Observation.ndjson, ...)."""
    t0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
    root.mkdir(parents=True, exist_ok=True)
    patients = [{"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1958-02-01"},
                {"resourceType": "Patient", "id": "p2", "gender": "female", "birthDate": "1980-07-09"}]
    obs = []
    for k in range(6):
        t = t0 + timedelta(minutes=20 + 60 * k)
        obs += [_obs("p1", t, "8478-0", [54, 55, 57, 61, 66, 70][k], "mm[Hg]"), _obs("p1", t, "8867-4", 115, "/min")]
        obs += [_obs("p2", t, "8478-0", 84, "mm[Hg]"), _obs("p2", t, "8867-4", 78, "/min")]
    obs.append(_obs("p1", t0 + timedelta(minutes=5), "29463-7", 82, "kg"))
    obs.append(_obs("p2", t0 + timedelta(minutes=5), "29463-7", 61, "kg"))
    meds = [{"resourceType": "MedicationAdministration", "id": "ne1", "status": "in-progress",
             "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "242969"}]},
             "subject": {"reference": "Patient/p1"},
             "effectivePeriod": {"start": (t0 + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")},
             "dosage": {"rateQuantity": {"value": 0.1, "unit": "ug/kg/min", "system": "http://unitsofmeasure.org",
                                         "code": "ug/kg/min"}}}]
    for name, resources in (("Patient", patients), ("Observation", obs), ("MedicationAdministration", meds)):
        (root / f"{name}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in resources), encoding="utf-8")
    return root
