"""The records of a MIMIC-IV demo cohort, read once and indexed by stay and subject, for
bench/mimic_hourly.py to build each hour's patient state from."""
from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

from mimic_tables import (  # bench/ is on sys.path: see mimic_hourly.py
    ARTERIAL_ITEMS, BAG_SOLUTION, BAGS, BP_ITEM, CRYSTALLOID_ITEMS, DRUGS, HEART_RATE, HEIGHT_CHART, HEIGHT_OMR,
    LACTATE, LINES, URINE_ITEMS, URINE_NEGATIVE, VASOPRESSOR_EPISODE_DRUGS, VASOPRESSOR_EPISODE_GAP,
    WEIGHT_CHART, Series, num, outside, rows, table_path, ts,
)


# --- The cohort ----------------------------------------------------------------------------------
class CohortRecords:
    """Every record of the cohort's stays a state can read: vitals, weights, infusions, outputs, labs, lines."""

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
        self.heights = {s: Series(v) for s, v in self._heights.items()}

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def _vitals_and_weights(self, demo: Path, stay_ids: set[int], subjects: set[int]) -> None:
        wanted = set(BP_ITEM) | {HEART_RATE} | WEIGHT_CHART | set(HEIGHT_CHART)
        name = "icu/chartevents"
        if table_path(demo, name) is None:
            name = "derived/chartevents_numeric_from_meds"
        bp: dict[int, dict[str, dict[datetime, dict[str, float]]]] = defaultdict(lambda: defaultdict(dict))
        hr: dict[int, list] = defaultdict(list)
        art_times: dict[int, list] = defaultdict(list)
        self._weights: dict[int, list] = defaultdict(list)
        self._heights: dict[int, list] = defaultdict(list)  # (time, rank: 0 chart cm, 1 chart inches, 2 omr, cm)
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
            if item in HEIGHT_CHART:
                subject = int(r["subject_id"])
                if subject in subjects and value is not None:
                    self._add_height(subject, when, round(value * HEIGHT_CHART[item], 1), 0 if HEIGHT_CHART[item] == 1 else 1)
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

    def _add_height(self, subject: int, when: datetime, cm: float, rank: int) -> None:
        reason = outside("height_cm", cm)
        if reason:
            self.drop(f"height_cm {reason} ({['chartevents', 'chartevents', 'omr'][rank]})")
            return
        self._heights[subject].append((when, rank, cm))

    def _inputs(self, demo: Path, stay_ids: set[int], subjects: set[int]) -> None:
        self.has_inputs: set[int] = set()
        drugs: dict[int, dict[int, list]] = defaultdict(lambda: defaultdict(list))
        fluids: dict[int, list] = defaultdict(list)
        bag_rows: list[tuple[int, int, datetime, datetime, str, float | None, str]] = []
        solution_ml: dict[str, float] = {}
        for r in rows(demo, "icu/inputevents"):
            stay = int(r["stay_id"])
            if stay not in stay_ids:
                continue
            self.has_inputs.add(stay)
            if r["statusdescription"] == "Rewritten":  # replaced by a corrected row
                continue
            start, end, item = ts(r["starttime"]), ts(r["endtime"]), int(r["itemid"])
            if r.get("ordercomponenttypedescription") == BAG_SOLUTION and r.get("orderid"):
                ml = num(r.get("originalamount", ""))
                unit = r.get("amountuom", "").strip().lower()
                if ml is not None and ml > 0 and unit in ("ml", "l"):
                    solution_ml[r["orderid"]] = ml * (1000 if unit == "l" else 1)
            weight = num(r["patientweight"])
            if weight is not None and weight > 0:
                self._add_weight(int(r["subject_id"]), start, weight, "inputevents.patientweight")
            if item in DRUGS:
                drugs[stay][item].append((start, end, r["rate"], r["rateuom"].strip(), weight))
                if item in BAGS and r.get("orderid"):
                    bag_rows.append((stay, item, start, end, r["orderid"], num(r.get("originalamount", "")),
                                     r["amountuom"].strip().lower()))
            elif item in CRYSTALLOID_ITEMS and r["ordercomponenttypedescription"] == "Main order parameter":
                amount, unit = num(r["amount"]), r["amountuom"].strip().lower()
                if amount is None or unit not in ("ml", "l"):
                    self.drop(f"crystalloid amount unreadable ({r['amount']!r} {r['amountuom']!r})")
                    continue
                fluids[stay].append((start, end, amount * (1000 if unit == "l" else 1)))
        self.drugs = drugs
        # The bag of each drug row: (start, end, concentration) per stay and item.
        self.bags: dict[int, dict[int, list]] = defaultdict(lambda: defaultdict(list))
        for stay, item, start, end, order, amount, unit in bag_rows:
            want = BAGS[item][1]
            factor = {"mcg/mL": {"mg": 1000, "mcg": 1}, "units/mL": {"units": 1}}[want].get(unit)
            ml = solution_ml.get(order)
            if amount is None or amount <= 0 or factor is None or not ml:
                self.drop(f"{BAGS[item][0]}: bag unreadable")
                continue
            self.bags[stay][item].append((start, end, float(f"{amount * factor / ml:.4g}")))
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
            if subject in subjects and r["result_name"] == HEIGHT_OMR[0]:
                inches = num(r["result_value"])
                if inches is None:
                    self.drop("omr height not numeric")
                    continue
                # Dated, not timed: known at the end of its day at the latest.
                self._add_height(subject, datetime.fromisoformat(r["chartdate"]) + timedelta(days=1),
                                 round(inches * HEIGHT_OMR[1], 1), 2)
                continue
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
