"""MIMIC-IV Clinical Database Demo -> one pressor patient state per ICU patient-hour.

    python bench/mimic_hourly.py DEMO_DIR --out states.jsonl [--meta meta.jsonl] [--stays N] [--diagnoses]

DEMO_DIR is the demo's top directory (``hosp/``, ``icu/``; the tables as ``.csv.gz`` or ``.csv``).
The demo ships without ``icu/chartevents``: if it is missing, ``derived/chartevents_numeric_from_meds``
(``subject_id,hadm_id,stay_id,charttime,itemid,valuenum,valueuom``) is read in its place.

For every ICU stay (``icu/icustays``, in stay_id order) there is one state per hour from intime to
outtime; hour k is evaluated at t = min(intime + k h, outtime), its end. A state is built only from
what was charted at or before t (no look-ahead; the exceptions are named where they are made, and
the ``--diagnoses`` option is one). A fact that cannot be derived honestly is left out: absent means
unknown to pressor, so nothing is defaulted to false or 0 unless the record says so. A value outside
the schema's range, or physiologically impossible, is left out of the state and noted (``--meta``,
and the summary on stderr); no value is clipped. Each state is checked with pressor's own
``check_state`` before it is written; a state it refuses is counted and never written.

What each fact is mapped from (docs/mimic-burden.md has the table and the limits):

- patient.age_years: hosp/patients anchor_age + (year of intime - anchor_year). anchor_age is 91 for
  everyone older than 89, so those ages are a floor.
- patient.sex: hosp/patients gender F/M.
- patient.weight_kg: the latest weight at or before t from chartevents 226512 (admission weight) /
  224639 (daily weight), inputevents.patientweight (at the row's starttime) and hosp/omr "Weight
  (Lbs)" (dated only: counted from the end of its day, and only within WEIGHT_OMR_MAX_AGE).
- patient.chronic_hypertension: true if the admission has an ICD-9 401-405 or ICD-10 I10-I15 code;
  otherwise absent (a missing code is not a "no"). Codes are assigned at discharge; we take it that
  a chronic condition is known from the history at admission (the one default look-ahead).
- shock.type: absent, unless --diagnoses: "septic" when the admission has R65.21 / 785.52 (septic
  shock). Those codes are assigned at discharge: look-ahead, hence off by default.
- vitals: the latest value within VITALS_LOOKBACK. MAP from an arterial line (220052, second line
  225312) if one was charted in the window, else non-invasive (220181); SBP/DBP the latest pair
  charted together from the same source as the MAP (arterial 220050/220051, 225309/225310;
  non-invasive 220179/220180). Heart rate 220045.
- perfusion.lactate_mmol_l: labevents 50813 drawn within LACTATE_LOOKBACK and resulted (storetime)
  at or before t. perfusion.lactate_rising: that value above the previous one resulted at or before t
  and drawn within LACTATE_PREVIOUS_LOOKBACK before it.
- perfusion.urine_output_ml_kg_h: outputevents urine items (the mimic-code urine output list; GU
  irrigant in subtracted) at the latest urine charting within URINE_LOOKBACK, divided by the time
  since the previous urine charting of the stay (at most URINE_MAX_INTERVAL) and by the weight.
- infusions.*: inputevents rows with starttime <= t < endtime (not "Rewritten"); rates converted to
  the schema's unit; 0 when the stay has inputevents rows and none of that drug runs at t
  (MetaVision records every ICU infusion). infusions.vasopressor_hours: hours since the start of the
  current run of norepinephrine / epinephrine / vasopressin (gaps up to VASOPRESSOR_EPISODE_GAP
  joined), only while one runs.
- fluids.crystalloid_ml_kg: NaCl 0.9% / Lactated Ringer's given in the ICU, and OR / PACU crystalloid
  charted in the ICU (inputevents, the fluid ordered for itself, not as a drug's diluent), pro rata
  up to t, divided by the weight at t. Since ICU admission, not since shock was recognised (which
  the record does not say): fluid given in the ED or on the ward before the ICU is not in it.
- access.*: procedureevents line items whose starttime <= t < endtime (central venous catheters,
  arterial line, intraosseous); access.arterial_line is also true when an arterial pressure was
  charted within ARTERIAL_LINE_LOOKBACK (an inference: the pressure needs the catheter). Never false.

Infusion rows and line items carry their endtime, written when the infusion or line stopped; like a
clinician looking at the pump or the patient, we take "running at t" from starttime <= t < endtime.
The rows are often stored later than they start (for norepinephrine a median of 7 min, p90 2.5 h),
so a live EHR feed would know them later than this extractor does.
"""
from __future__ import annotations

import argparse
import bisect
import csv
import gzip
import json
import math
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from pressor.engine.shadow.mimic import convert_rate

# --- Look-back windows and limits (a value older than its window is not "current") --------------
VITALS_LOOKBACK = timedelta(hours=2)          # MAP, SBP/DBP, heart rate: charted at most 2 h before t
ARTERIAL_LINE_LOOKBACK = timedelta(hours=2)   # an arterial pressure this recent implies the catheter
LACTATE_LOOKBACK = timedelta(hours=6)         # lactate drawn at most 6 h before t (and resulted by t)
LACTATE_PREVIOUS_LOOKBACK = timedelta(hours=24)  # the previous lactate, for lactate_rising
URINE_LOOKBACK = timedelta(hours=2)           # the latest urine charting at most 2 h before t
URINE_MAX_INTERVAL = timedelta(hours=4)       # ...covering at most 4 h since the previous charting
WEIGHT_OMR_MAX_AGE = timedelta(days=180)      # an outpatient (omr) weight older than this is stale
VASOPRESSOR_EPISODE_GAP = timedelta(hours=1)  # infusion gaps up to this are one vasopressor episode
HOUR = timedelta(hours=1)

# --- Item ids ------------------------------------------------------------------------------------
HEART_RATE = 220045
ART = {"map": 220052, "sbp": 220050, "dbp": 220051}      # arterial line
ART2 = {"map": 225312, "sbp": 225309, "dbp": 225310}     # second arterial line ("ART BP")
NIBP = {"map": 220181, "sbp": 220179, "dbp": 220180}     # non-invasive
BP_SOURCES = {"arterial": ART, "arterial2": ART2, "nibp": NIBP}
BP_ITEM = {item: (source, key) for source, items in BP_SOURCES.items() for key, item in items.items()}
ARTERIAL_ITEMS = set(ART.values()) | set(ART2.values())
WEIGHT_CHART = {226512, 224639}                          # admission weight, daily weight (kg)
LACTATE = 50813
# Urine output as in mimic-code's urine_output concept; 227488 (GU irrigant in) counts negative.
URINE_ITEMS = {226559, 226560, 226561, 226584, 226563, 226564, 226565, 226567, 226557, 226558, 227489}
URINE_NEGATIVE = {227488}
# NaCl 0.9% and Lactated Ringer's (225158, 225828), their retired "Saline 0,9%" and "Ringers
# Lactate" items (220954, 220955), and the OR / PACU crystalloid totals charted on arrival in the ICU
# (226364, 226375: crystalloid of unnamed type, counted at their charted time); only rows where the
# fluid is the order's main parameter (not a drug's diluent).
CRYSTALLOID_ITEMS = {225158, 225828, 220954, 220955, 226364, 226375}
DRUGS = {  # itemid -> (state key, unit the schema wants)
    221906: ("norepinephrine_mcg_kg_min", "mcg/kg/min"),
    222315: ("vasopressin_units_min", "units/min"),
    221289: ("epinephrine_mcg_kg_min", "mcg/kg/min"),
    221749: ("phenylephrine_mcg_kg_min", "mcg/kg/min"),
    221662: ("dopamine_mcg_kg_min", "mcg/kg/min"),
    221653: ("dobutamine_mcg_kg_min", "mcg/kg/min"),
}
VASOPRESSOR_EPISODE_DRUGS = {221906, 221289, 222315}  # as the schema defines vasopressor_hours
LINES = {  # procedureevents item -> access fact
    224263: "central_venous",   # Multi Lumen
    224264: "central_venous",   # PICC Line
    224267: "central_venous",   # Cordis/Introducer
    224268: "central_venous",   # Trauma line
    224560: "central_venous",   # PA Catheter
    224269: "central_venous",   # CCO PAC
    229532: "central_venous",   # Indwelling Port
    225202: "central_venous",   # Indwelling Port (PortaCath)
    225752: "arterial_line",    # Arterial Line
    228286: "intraosseous",     # Intraosseous Device
}
HYPERTENSION_ICD9 = ("401", "402", "403", "404", "405")
HYPERTENSION_ICD10 = ("I10", "I11", "I12", "I13", "I15")  # I14 does not exist
SEPTIC_SHOCK = {("9", "78552"), ("10", "R6521")}

# Physiological limits (the schema's ranges, narrowed where a value inside them is impossible).
LIMITS = {
    "map_mmhg": (10, 250), "sbp_mmhg": (20, 300), "dbp_mmhg": (5, 200), "heart_rate_bpm": (10, 300),
    "weight_kg": (20, 350),  # MIMIC-IV has adults only: below 20 kg is a charting error
    "lactate_mmol_l": (0, 40), "urine_output_ml_kg_h": (0, 50), "crystalloid_ml_kg": (0, 500),
    "norepinephrine_mcg_kg_min": (0, 10), "vasopressin_units_min": (0, 1), "epinephrine_mcg_kg_min": (0, 10),
    "dobutamine_mcg_kg_min": (0, 40), "dopamine_mcg_kg_min": (0, 50), "phenylephrine_mcg_kg_min": (0, 20),
    "vasopressor_hours": (0, 2160), "age_years": (0, 120),
}


# --- Reading -------------------------------------------------------------------------------------
def _table(demo: Path, name: str) -> Path | None:
    for suffix in (".csv.gz", ".csv"):
        path = demo / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def rows(demo: Path, name: str, required: bool = True) -> Iterator[dict[str, str]]:
    path = _table(demo, name)
    if path is None:
        if required:
            raise SystemExit(f"error: {demo}/{name}.csv.gz not found (is {demo} the demo's top directory?)")
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


def ts(text: str) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def num(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def outside(key: str, value: float) -> str | None:
    low, high = LIMITS[key]
    if value < low:
        return f"below {low}"
    if value > high:
        return f"above {high}"
    return None


class Series:
    """Time-ordered values; ``before(t)`` gives the index just past the last entry at or before t."""

    def __init__(self, entries: list[tuple]):
        self.entries = sorted(entries, key=lambda e: e[0])
        self.times = [e[0] for e in self.entries]

    def before(self, t: datetime) -> int:
        return bisect.bisect_right(self.times, t)


# --- The cohort ----------------------------------------------------------------------------------
class Cohort:
    def __init__(self, demo: Path, stays: int | None, diagnoses: bool):
        self.demo = demo
        self.use_diagnoses = diagnoses
        self.dropped: Counter[str] = Counter()   # raw values left out, per reason
        self.stays = sorted(rows(demo, "icu/icustays"), key=lambda r: int(r["stay_id"]))
        if stays is not None:
            self.stays = self.stays[:stays]
        stay_ids = {int(s["stay_id"]) for s in self.stays}
        subjects = {int(s["subject_id"]) for s in self.stays}
        self.patients = {int(r["subject_id"]): r for r in rows(demo, "hosp/patients")}
        self.codes: dict[int, set[tuple[str, str]]] = defaultdict(set)
        for r in rows(demo, "hosp/diagnoses_icd"):
            self.codes[int(r["hadm_id"])].add((r["icd_version"].strip(), r["icd_code"].strip().upper()))
        self._vitals_and_weights(demo, stay_ids, subjects)
        self._inputs(demo, stay_ids, subjects)
        self._outputs(demo, stay_ids)
        self._labs(demo, subjects)
        self._omr(demo, subjects)
        self._lines(demo, stay_ids)
        self.weights = {s: Series(v) for s, v in self._weights.items()}

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def _vitals_and_weights(self, demo: Path, stay_ids: set[int], subjects: set[int]) -> None:
        wanted = set(BP_ITEM) | {HEART_RATE} | WEIGHT_CHART
        name = "icu/chartevents"
        if _table(demo, name) is None:
            name = "derived/chartevents_numeric_from_meds"
        bp: dict[int, dict[str, dict[datetime, dict[str, float]]]] = defaultdict(lambda: defaultdict(dict))
        hr: dict[int, list] = defaultdict(list)
        art_times: dict[int, list] = defaultdict(list)
        self._weights: dict[int, list] = defaultdict(list)
        for r in rows(demo, name):
            item = int(r["itemid"])
            if item not in wanted:
                continue
            value, when = num(r["valuenum"]), ts(r["charttime"])
            if when is None:
                continue
            if item in WEIGHT_CHART:
                subject = int(r["subject_id"])
                if subject in subjects and value is not None:
                    self._add_weight(subject, when, value, f"chartevents {item}")
                continue
            if not r["stay_id"] or int(float(r["stay_id"])) not in stay_ids:
                continue
            stay = int(float(r["stay_id"]))
            if item in ARTERIAL_ITEMS:
                art_times[stay].append((when,))
            if value is None:
                self.drop("vitals: no numeric value")
                continue
            if item == HEART_RATE:
                reason = outside("heart_rate_bpm", value)
                if reason:
                    self.drop(f"heart_rate_bpm {reason}")
                    hr[stay].append((when, None, f"heart_rate_bpm {value:g} {reason}"))
                else:
                    hr[stay].append((when, value, None))
                continue
            source, key = BP_ITEM[item]
            reason = outside(f"{key}_mmhg", value)
            if reason:
                self.drop(f"{key}_mmhg {reason}")
                bp[stay][source].setdefault(when, {})[f"!{key}"] = f"{key}_mmhg {value:g} ({source}) {reason}"
            else:
                bp[stay][source].setdefault(when, {})[key] = value
        # A set charted together whose diastolic is not below its systolic: both are dropped.
        self.bp: dict[int, dict[str, Series]] = {}
        for stay, by_source in bp.items():
            self.bp[stay] = {}
            for source, sets in by_source.items():
                for when, values in sets.items():
                    if "sbp" in values and "dbp" in values and values["dbp"] >= values["sbp"]:
                        self.drop("sbp/dbp: diastolic not below systolic")
                        values["!pair"] = f"sbp/dbp {values['sbp']:g}/{values['dbp']:g} ({source}) not systolic > diastolic"
                        del values["sbp"], values["dbp"]
                self.bp[stay][source] = Series(list(sets.items()))
        self.hr = {stay: Series(v) for stay, v in hr.items()}
        self.art_times = {stay: Series(v) for stay, v in art_times.items()}

    def _add_weight(self, subject: int, when: datetime, kg: float, source: str) -> None:
        reason = outside("weight_kg", kg)
        if reason:
            self.drop(f"weight_kg {reason} ({source.split()[0]})")
            return
        self._weights[subject].append((when, kg, source))

    def _inputs(self, demo: Path, stay_ids: set[int], subjects: set[int]) -> None:
        self.has_inputs: set[int] = set()
        drugs: dict[int, dict[int, list]] = defaultdict(lambda: defaultdict(list))
        fluids: dict[int, list] = defaultdict(list)
        for r in rows(demo, "icu/inputevents"):
            stay = int(r["stay_id"])
            if stay not in stay_ids:
                continue
            self.has_inputs.add(stay)
            if r["statusdescription"] == "Rewritten":  # replaced by a corrected row
                continue
            start, end, item = ts(r["starttime"]), ts(r["endtime"]), int(r["itemid"])
            weight = num(r["patientweight"])
            if weight is not None and weight > 0:
                self._add_weight(int(r["subject_id"]), start, weight, "inputevents.patientweight")
            if item in DRUGS:
                drugs[stay][item].append((start, end, r["rate"], r["rateuom"].strip(), weight))
            elif item in CRYSTALLOID_ITEMS and r["ordercomponenttypedescription"] == "Main order parameter":
                amount, unit = num(r["amount"]), r["amountuom"].strip().lower()
                if amount is None or unit not in ("ml", "l"):
                    self.drop(f"crystalloid amount unreadable ({r['amount']!r} {r['amountuom']!r})")
                    continue
                fluids[stay].append((start, end, amount * (1000 if unit == "l" else 1)))
        self.drugs = drugs
        self.fluids = {stay: Series(v) for stay, v in fluids.items()}
        # Vasopressor episodes: runs of norepinephrine / epinephrine / vasopressin rows, gaps joined.
        self.episodes: dict[int, list[tuple[datetime, datetime]]] = {}
        for stay, by_item in drugs.items():
            spans = sorted((s, e) for item, entries in by_item.items() if item in VASOPRESSOR_EPISODE_DRUGS
                           for s, e, rate, *_ in entries if (num(rate) or 0) > 0)
            merged: list[list[datetime]] = []
            for s, e in spans:
                if merged and s <= merged[-1][1] + VASOPRESSOR_EPISODE_GAP:
                    merged[-1][1] = max(merged[-1][1], e)
                else:
                    merged.append([s, e])
            self.episodes[stay] = [(s, e) for s, e in merged]

    def _outputs(self, demo: Path, stay_ids: set[int]) -> None:
        urine: dict[int, dict[datetime, float]] = defaultdict(lambda: defaultdict(float))
        for r in rows(demo, "icu/outputevents"):
            item = int(r["itemid"])
            if item not in URINE_ITEMS and item not in URINE_NEGATIVE:
                continue
            stay = int(r["stay_id"])
            if stay not in stay_ids:
                continue
            value = num(r["value"])
            if value is None or value < 0:
                self.drop("urine volume unreadable or negative")
                continue
            urine[stay][ts(r["charttime"])] += -value if item in URINE_NEGATIVE else value
        self.urine = {stay: Series(list(v.items())) for stay, v in urine.items()}

    def _labs(self, demo: Path, subjects: set[int]) -> None:
        lactate: dict[int, list] = defaultdict(list)
        for r in rows(demo, "hosp/labevents"):
            if r["itemid"] != str(LACTATE) or int(r["subject_id"]) not in subjects:
                continue
            drawn = ts(r["charttime"])
            resulted = ts(r["storetime"]) or drawn
            value = num(r["valuenum"])
            if value is None:
                self.drop("lactate_mmol_l not numeric")
                continue
            reason = outside("lactate_mmol_l", value)
            if reason:
                self.drop(f"lactate_mmol_l {reason}")
                continue
            lactate[int(r["subject_id"])].append((drawn, value, resulted))
        self.lactate = {s: Series(v) for s, v in lactate.items()}

    def _omr(self, demo: Path, subjects: set[int]) -> None:
        for r in rows(demo, "hosp/omr", required=False):
            subject = int(r["subject_id"])
            if subject not in subjects or r["result_name"] != "Weight (Lbs)":
                continue
            lbs = num(r["result_value"])
            if lbs is None:
                self.drop("omr weight not numeric")
                continue
            # Dated, not timed: known at the end of its day at the latest.
            when = datetime.fromisoformat(r["chartdate"]) + timedelta(days=1)
            self._add_weight(subject, when, round(lbs * 0.45359237, 1), "omr Weight (Lbs)")

    def _lines(self, demo: Path, stay_ids: set[int]) -> None:
        lines: dict[int, list] = defaultdict(list)
        for r in rows(demo, "icu/procedureevents", required=False):
            item = int(r["itemid"])
            if item in LINES and int(r["stay_id"]) in stay_ids and r["statusdescription"] != "Rewritten":
                start, end = ts(r["starttime"]), ts(r["endtime"])
                if start and end:
                    lines[int(r["stay_id"])].append((start, end, LINES[item]))
        self.lines = lines

    # --- One state ---------------------------------------------------------------------------------
    def weight_at(self, subject: int, t: datetime) -> tuple[float | None, str | None]:
        series = self.weights.get(subject)
        if series is None:
            return None, None
        i = series.before(t)
        while i > 0:
            when, kg, source = series.entries[i - 1]
            if source.startswith("omr") and t - when > WEIGHT_OMR_MAX_AGE:
                i -= 1
                continue
            return kg, source
        return None, None

    def state(self, stay: dict[str, str], t: datetime) -> tuple[dict[str, Any], list[str]]:
        notes: list[str] = []
        state: dict[str, dict[str, Any]] = defaultdict(dict)
        stay_id, subject, hadm = int(stay["stay_id"]), int(stay["subject_id"]), int(stay["hadm_id"])
        intime = ts(stay["intime"])

        person = self.patients.get(subject)
        if person:
            age = num(person["anchor_age"])
            if age is not None:
                age += intime.year - int(person["anchor_year"])
                if outside("age_years", age):
                    notes.append(f"age_years {age:g} out of range")
                else:
                    state["patient"]["age_years"] = int(age) if age == int(age) else age
            sex = {"F": "female", "M": "male"}.get(person["gender"].strip().upper())
            if sex:
                state["patient"]["sex"] = sex
        weight, _ = self.weight_at(subject, t)
        if weight is not None:
            state["patient"]["weight_kg"] = weight
        codes = self.codes.get(hadm, set())
        if any((v == "9" and c.startswith(HYPERTENSION_ICD9)) or (v == "10" and c.startswith(HYPERTENSION_ICD10))
               for v, c in codes):
            state["patient"]["chronic_hypertension"] = True
        if self.use_diagnoses and codes & SEPTIC_SHOCK:
            state["shock"]["type"] = "septic"

        self._vitals(stay_id, t, state, notes)
        self._perfusion(stay_id, subject, t, weight, state, notes)
        self._infusions(stay_id, t, state, notes)
        self._fluids(stay_id, intime, t, weight, state, notes)
        self._access(stay_id, t, state)
        return {k: v for k, v in state.items() if v}, notes

    def _vitals(self, stay: int, t: datetime, state: dict, notes: list[str]) -> None:
        hr = self.hr.get(stay)
        if hr:
            for i in range(hr.before(t) - 1, -1, -1):
                when, value, problem = hr.entries[i]
                if t - when > VITALS_LOOKBACK:
                    break
                if value is None:
                    notes.append(f"dropped {problem} at {when.isoformat()}")
                    continue
                state["vitals"]["heart_rate_bpm"] = value
                break
        sources = self.bp.get(stay, {})

        def latest(source: str, want: tuple[str, ...]) -> tuple[datetime, dict] | None:
            series = sources.get(source)
            if series is None:
                return None
            for i in range(series.before(t) - 1, -1, -1):
                when, values = series.entries[i]
                if t - when > VITALS_LOOKBACK:
                    return None
                problems = [v for k, v in values.items() if k.startswith("!")]
                if all(k in values for k in want):
                    return when, values
                for p in problems:
                    if f"dropped {p} at {when.isoformat()}" not in notes:
                        notes.append(f"dropped {p} at {when.isoformat()}")
            return None

        # MAP: the most recent arterial one in the window, else the non-invasive one.
        chosen = None
        arterial = [(source, found) for source in ("arterial", "arterial2") if (found := latest(source, ("map",)))]
        if arterial:
            chosen, (_, values) = max(arterial, key=lambda pair: pair[1][0])
            state["vitals"]["map_mmhg"] = values["map"]
        else:
            found = latest("nibp", ("map",))
            if found:
                chosen = "nibp"
                state["vitals"]["map_mmhg"] = found[1]["map"]
        # SBP/DBP: a pair charted together, from the MAP's source (else arterial first).
        order = [chosen] if chosen else ["arterial", "arterial2", "nibp"]
        for source in order:
            found = latest(source, ("sbp", "dbp"))
            if found:
                sbp, dbp = found[1]["sbp"], found[1]["dbp"]
                mean = state["vitals"].get("map_mmhg")
                if mean is not None and not (dbp <= mean <= sbp):
                    notes.append(f"dropped sbp/dbp {sbp:g}/{dbp:g} ({source}): MAP {mean:g} is not between them")
                    self.drop("sbp/dbp: MAP not between them (state)")
                else:
                    state["vitals"]["sbp_mmhg"], state["vitals"]["dbp_mmhg"] = sbp, dbp
                break

    def _perfusion(self, stay: int, subject: int, t: datetime, weight: float | None, state: dict,
                   notes: list[str]) -> None:
        lactate = self.lactate.get(subject)
        if lactate:
            known = [e for e in lactate.entries[:lactate.before(t)] if e[2] <= t]  # resulted by t
            if known and t - known[-1][0] <= LACTATE_LOOKBACK:
                drawn, value, _ = known[-1]
                state["perfusion"]["lactate_mmol_l"] = value
                if len(known) > 1 and drawn - known[-2][0] <= LACTATE_PREVIOUS_LOOKBACK and known[-2][0] < drawn:
                    state["perfusion"]["lactate_rising"] = value > known[-2][1]
        urine = self.urine.get(stay)
        if urine and weight is not None:
            i = urine.before(t)
            if i >= 1 and t - urine.entries[i - 1][0] <= URINE_LOOKBACK:
                when, volume = urine.entries[i - 1]
                if i >= 2:
                    interval = when - urine.entries[i - 2][0]
                    if interval > URINE_MAX_INTERVAL:
                        notes.append(f"urine output: {interval} since the previous charting (> {URINE_MAX_INTERVAL}); left out")
                    else:
                        rate = volume / (interval / HOUR) / weight
                        reason = outside("urine_output_ml_kg_h", rate)
                        if reason:
                            notes.append(f"dropped urine_output_ml_kg_h {rate:.2f} {reason} at {when.isoformat()}")
                            self.drop(f"urine_output_ml_kg_h {reason} (state)")
                        else:
                            state["perfusion"]["urine_output_ml_kg_h"] = round(rate, 3)

    def _infusions(self, stay: int, t: datetime, state: dict, notes: list[str]) -> None:
        if stay not in self.has_inputs:
            return
        by_item = self.drugs.get(stay, {})
        for item, (key, unit) in DRUGS.items():
            total, ok = 0.0, True
            for start, end, rate, rateuom, row_weight in by_item.get(item, ()):
                if not (start <= t < end):
                    continue
                value = convert(num(rate), rateuom, unit, row_weight)
                if value is None:
                    notes.append(f"{key}: rate {rate!r} {rateuom!r} cannot be converted to {unit}; left out")
                    self.drop(f"{key}: unconvertible rate (state)")
                    ok = False
                    break
                total += value
            if not ok:
                continue
            reason = outside(key, total)
            if reason:
                notes.append(f"dropped {key} {total:g} {reason}")
                self.drop(f"{key} {reason} (state)")
                continue
            state["infusions"][key] = round(total, 6)
        for start, end in self.episodes.get(stay, ()):
            if start <= t < end:
                hours = (t - start) / HOUR
                if not outside("vasopressor_hours", hours):
                    state["infusions"]["vasopressor_hours"] = round(hours, 2)
                break

    def _fluids(self, stay: int, intime: datetime, t: datetime, weight: float | None, state: dict,
                notes: list[str]) -> None:
        if stay not in self.has_inputs or weight is None:
            return
        total = 0.0
        series = self.fluids.get(stay)
        if series:
            for start, end, ml in series.entries[:series.before(t)]:
                if end <= start or end <= t:
                    total += ml
                else:
                    total += ml * ((t - start) / (end - start))
        value = round(total / weight, 2)
        reason = outside("crystalloid_ml_kg", value)
        if reason:
            notes.append(f"dropped crystalloid_ml_kg {value:g} {reason}")
            self.drop(f"crystalloid_ml_kg {reason} (state)")
        else:
            state["fluids"]["crystalloid_ml_kg"] = value

    def _access(self, stay: int, t: datetime, state: dict) -> None:
        for start, end, fact in self.lines.get(stay, ()):
            if start <= t < end:
                state["access"][fact] = True
        art = self.art_times.get(stay)
        if art:
            i = art.before(t)
            if i and t - art.entries[i - 1][0] <= ARTERIAL_LINE_LOOKBACK:
                state["access"]["arterial_line"] = True  # inferred: an arterial pressure needs the line


# one conversion of infusion rates, shared with pressor shadow's MIMIC reader
convert = convert_rate


def hours(stay: dict[str, str]) -> Iterator[tuple[int, datetime]]:
    intime, outtime = ts(stay["intime"]), ts(stay["outtime"])
    k = 1
    while intime + (k - 1) * HOUR < outtime:
        yield k, min(intime + k * HOUR, outtime)
        k += 1


FACT_PATHS = [f"{section}.{key}" for section, keys in {
    "patient": ["age_years", "sex", "weight_kg", "chronic_hypertension"],
    "shock": ["type"],
    "vitals": ["map_mmhg", "sbp_mmhg", "dbp_mmhg", "heart_rate_bpm"],
    "perfusion": ["lactate_mmol_l", "lactate_rising", "urine_output_ml_kg_h"],
    "fluids": ["crystalloid_ml_kg"],
    "access": ["central_venous", "arterial_line", "intraosseous"],
    "infusions": [d[0] for d in DRUGS.values()] + ["vasopressor_hours"],
}.items() for key in keys]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, help="the MIMIC-IV demo's top directory (hosp/, icu/)")
    parser.add_argument("--out", type=Path, required=True, help="patient states, one JSON line per stay-hour")
    parser.add_argument("--meta", type=Path, help="a parallel line per state: stay_id, subject_id, hour, time, notes")
    parser.add_argument("--stays", type=int, help="only the first N stays (by stay_id)")
    parser.add_argument("--diagnoses", action="store_true",
                        help="shock.type=septic from the admission's septic-shock ICD code (LOOK-AHEAD: coded at discharge)")
    args = parser.parse_args(argv)
    from pressor.engine.evaluation.validate import PatientStateError, check_state

    began = time.monotonic()
    cohort = Cohort(args.demo, args.stays, args.diagnoses)
    per_stay: list[int] = []
    present: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    notes_total = states_with_notes = written = 0
    meta = args.meta.open("w") if args.meta else None
    with args.out.open("w") as out:
        for stay in cohort.stays:
            count = 0
            for hour, t in hours(stay):
                state, notes = cohort.state(stay, t)
                try:
                    check_state(state)
                except PatientStateError as refused:
                    invalid[str(refused.problems[0].message if refused.problems else refused)[:80]] += 1
                    continue
                out.write(json.dumps(state, separators=(",", ":")) + "\n")
                written += 1
                count += 1
                for path in FACT_PATHS:
                    section, key = path.split(".")
                    if key in state.get(section, {}):
                        present[path] += 1
                notes_total += len(notes)
                states_with_notes += bool(notes)
                if meta:
                    meta.write(json.dumps({"stay_id": int(stay["stay_id"]), "subject_id": int(stay["subject_id"]),
                                           "hour": hour, "time": t.isoformat(), "notes": notes},
                                          separators=(",", ":")) + "\n")
            per_stay.append(count)
    if meta:
        meta.close()
    elapsed = time.monotonic() - began
    err = sys.stderr
    print(f"{len(cohort.stays)} stays, {written} states written, {sum(invalid.values())} refused by check_state "
          f"({elapsed:.1f} s)", file=err)
    print(f"states per stay: p50 {statistics.median(per_stay) if per_stay else 0:g}, "
          f"p90 {percentile(per_stay, 0.9):g}, max {max(per_stay, default=0)}", file=err)
    print(f"states with data-quality notes: {states_with_notes} ({notes_total} notes)", file=err)
    print("facts present (% of states):", file=err)
    for path in FACT_PATHS:
        print(f"  {path:42s} {100 * present[path] / max(written, 1):5.1f}%", file=err)
    print("values dropped, per reason:", file=err)
    for reason, n in sorted(cohort.dropped.items(), key=lambda x: -x[1]):
        print(f"  {n:7d}  {reason}", file=err)
    for reason, n in invalid.most_common():
        print(f"  refused: {n} x {reason}", file=err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
