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
- patient.height_cm: chartevents 226730 (Height, cm) or 226707 (Height, inches x 2.54; cm preferred when
  both are charted together) within HEIGHT_MAX_AGE before t, else hosp/omr "Height (Inches)" (counted from
  the end of its day, within HEIGHT_MAX_AGE); heights below 120 cm or above 230 cm are dropped (adults).
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
- infusions.<drug>_concentration_mcg_ml / vasopressin_concentration_units_ml: while a drug row runs, the drug
  in its bag (``originalamount``, mg as mcg) over the volume of the "Mixed solution" row with the same
  orderid (``originalamount``, mL): what the bag held when the row started. Two bags of different strength
  running at once: left out. Dopamine has no such fact.
- infusions.norepinephrine_paused_minutes / norepinephrine_last_rate_mcg_kg_min: while no norepinephrine runs
  (rate 0), the minutes since the last norepinephrine row ended and the total rate running just before
  (within PAUSE_MAX); absent if norepinephrine never ran in the stay, or a rate cannot be converted.
- fluids.hours_since_recognition: hours since the first start of a vasopressor (norepinephrine,
  epinephrine, vasopressin, phenylephrine, dopamine) in the stay, within RECOGNITION_MAX. The record does
  not say when shock was recognised; the first vasopressor start is the team's act that shows it, and a
  floor (it may have been recognised earlier, before the ICU). It does not start the crystalloid count.
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
import json
import math
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pressor.engine.shadow.mimic import convert_rate

# Its sibling modules, also when it is loaded by path (the tests): bench/ is on sys.path only while they are imported,
# so that bench's other scripts (bench/fhir.py) never shadow packages of the same name.
_BENCH = str(Path(__file__).resolve().parent)
sys.path.insert(0, _BENCH)
try:
    from mimic_cohort import CohortRecords  # noqa: E402
    from mimic_tables import (  # noqa: E402
        ARTERIAL_LINE_LOOKBACK, BAGS, DRUGS, HEIGHT_MAX_AGE, HOUR, HYPERTENSION_ICD10, HYPERTENSION_ICD9,
        LACTATE_LOOKBACK, LACTATE_PREVIOUS_LOOKBACK, NOREPINEPHRINE, PAUSE_MAX, RECOGNITION_DRUGS,
        RECOGNITION_MAX, SEPTIC_SHOCK, URINE_LOOKBACK, URINE_MAX_INTERVAL, VITALS_LOOKBACK, WEIGHT_OMR_MAX_AGE,
        num, outside, ts,
    )
finally:
    sys.path.remove(_BENCH)


class Cohort(CohortRecords):
    """The cohort's patient state at any hour, from the records charted by then."""

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

    def height_at(self, subject: int, t: datetime) -> float | None:
        """The height charted in the ICU (cm before inches at the same time) within HEIGHT_MAX_AGE, else the omr one."""
        series = self.heights.get(subject)
        if series is None:
            return None
        recent = [e for e in series.entries[:series.before(t)] if t - e[0] <= HEIGHT_MAX_AGE]
        for chart in (True, False):
            pick = [e for e in recent if (e[1] < 2) == chart]
            if pick:
                return max(pick, key=lambda e: (e[0], -e[1]))[2]
        return None

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
        height = self.height_at(subject, t)
        if height is not None:
            state["patient"]["height_cm"] = height
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
        for item, (key, _) in BAGS.items():
            running = {c for start, end, c in self.bags.get(stay, {}).get(item, ()) if start <= t < end}
            if len(running) == 1:  # two bags of different strength at once: which is unknown
                state["infusions"][key] = running.pop()
        self._pause(stay, t, state)
        started = [start for item in RECOGNITION_DRUGS for start, _, rate, *_ in by_item.get(item, ())
                   if (num(rate) or 0) > 0 and start <= t]
        if started and t - min(started) <= RECOGNITION_MAX:
            state["fluids"]["hours_since_recognition"] = round((t - min(started)) / HOUR, 2)
        for start, end in self.episodes.get(stay, ()):
            if start <= t < end:
                hours = (t - start) / HOUR
                if not outside("vasopressor_hours", hours):
                    state["infusions"]["vasopressor_hours"] = round(hours, 2)
                break

    def _pause(self, stay: int, t: datetime, state: dict) -> None:
        """Minutes since norepinephrine stopped and the rate before, while none runs (known rates only)."""
        if state["infusions"].get("norepinephrine_mcg_kg_min") != 0:
            return
        rows = []
        for start, end, rate, rateuom, row_weight in self.drugs.get(stay, {}).get(NOREPINEPHRINE, ()):
            value = convert(num(rate), rateuom, "mcg/kg/min", row_weight)
            if value is None:
                return  # a rate we cannot read: whether it ran is unknown
            if value > 0 and start < end <= t:
                rows.append((start, end, value))
        if not rows:
            return
        stop = max(end for _, end, _ in rows)
        if t - stop > PAUSE_MAX:
            return
        state["infusions"]["norepinephrine_paused_minutes"] = round((t - stop).total_seconds() / 60, 1)
        state["infusions"]["norepinephrine_last_rate_mcg_kg_min"] = round(
            sum(rate for start, end, rate in rows if start < stop <= end), 6)

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
    "patient": ["age_years", "sex", "weight_kg", "height_cm", "chronic_hypertension"],
    "shock": ["type"],
    "vitals": ["map_mmhg", "sbp_mmhg", "dbp_mmhg", "heart_rate_bpm"],
    "perfusion": ["lactate_mmol_l", "lactate_rising", "urine_output_ml_kg_h"],
    "fluids": ["crystalloid_ml_kg", "hours_since_recognition"],
    "access": ["central_venous", "arterial_line", "intraosseous"],
    "infusions": [d[0] for d in DRUGS.values()] + ["vasopressor_hours"] + [b[0] for b in BAGS.values()]
                 + ["norepinephrine_paused_minutes", "norepinephrine_last_rate_mcg_kg_min"],
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
