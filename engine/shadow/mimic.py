"""The MIMIC-IV layout (``hosp/``, ``icu/``; csv or csv.gz) -> one :class:`Course` per ICU stay.

What feeds which fact is read from a mapping file (``rules/mimic/mapping.yaml``, checked against
``schemas/mimic-mapping.schema.json``): item ids, units, windows and limits are data, not code.
Every reading is kept at the time it became known (a lab value at its result time); a value outside
the mapping's limits is dropped with a data-quality note at its time. Infusion rows become rate
changes (start: the row's rate; end: 0 unless the next row starts then), in the timeline's units.
"""
from __future__ import annotations

import csv
import gzip
import math
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError, Problem
from ..evaluation.load import load_document
from ..evaluation.validate import schema_problems
from ..ehr.timeline import Fluid, RateChange, Reading, Timeline
from .course import Course

MAPPING_SCHEMA = "mimic-mapping.schema.json"
HOUR = timedelta(hours=1)
_LB = 0.45359237
_INCH = 2.54
#: A reading item's own unit -> the factor to the fact's unit (mapping: ``prefer[].unit``).
UNIT_FACTOR = {"inch": _INCH, "lb": _LB}
#: hosp/omr results a mapping may name in ``also`` -> (the fact, the factor to its unit).
OMR_RESULTS = {"Weight (Lbs)": ("patient.weight_kg", _LB), "Height (Inches)": ("patient.height_cm", _INCH)}


def default_mapping_path() -> Path:
    """``rules/mimic/mapping.yaml`` of the installed package."""
    from pressor import rules

    return Path(rules.__file__).parent / "mimic" / "mapping.yaml"


@lru_cache(maxsize=4)
def load_mapping(path: str | None = None) -> dict[str, Any]:
    """The MIMIC mapping, checked against its schema (an :class:`InputError` listing every problem)."""
    doc = load_document(str(path or default_mapping_path()))
    problems = schema_problems(doc, MAPPING_SCHEMA)
    if problems:
        raise InputError(problems)
    return doc.data


def _table(root: Path, names: str | list[str]) -> Path | None:
    for name in [names] if isinstance(names, str) else names:
        for suffix in (".csv.gz", ".csv"):
            if (root / f"{name}{suffix}").exists():
                return root / f"{name}{suffix}"
    return None


def _rows(root: Path, names: str | list[str], required: bool = True,
          items: set[int] | None = None) -> Iterator[dict[str, str]]:
    """The rows of a table as dicts; with ``items``, only rows whose ``itemid`` is one of them (filtered
    before a dict is made: chartevents has hundreds of millions of rows in the full MIMIC-IV)."""
    path = _table(root, names)
    if path is None:
        if required:
            raise InputError.single(f"{names if isinstance(names, str) else names[0]}.csv.gz not found", file=str(root),
                                    suggestion="give the top directory of MIMIC-IV (it holds hosp/ and icu/)")
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        wanted = {str(i) for i in items} if items is not None else None
        column = header.index("itemid") if wanted is not None and "itemid" in header else None
        for row in reader:
            if column is not None and wanted is not None and (column >= len(row) or row[column] not in wanted):
                continue
            yield dict(zip(header, row))


def _ts(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)  # MIMIC times are shifted local times; UTC by convention
    except ValueError:
        return None


def _num(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _int(text: str | None) -> int | None:
    value = _num(text)
    return int(value) if value is not None else None


def _outside(limits: list[float] | None, value: float) -> str | None:
    if not limits:
        return None
    if value < limits[0]:
        return f"below {limits[0]:g}"
    if value > limits[1]:
        return f"above {limits[1]:g}"
    return None


def convert_rate(rate: float | None, uom: str, unit: str, weight: float | None) -> float | None:
    """``rate`` in ``uom`` expressed in ``unit`` (mcg/kg/min or units/min), or None if it cannot be."""
    if rate is None or rate < 0:
        return None
    u = uom.strip().lower()
    if unit == "mcg/kg/min":
        factor = {"mcg/kg/min": 1, "mg/kg/min": 1000, "mcg/kg/hour": 1 / 60, "mg/kg/hour": 1000 / 60}.get(u)
        if factor is not None:
            return rate * factor
        per_min = {"mcg/min": 1, "mg/min": 1000, "mcg/hour": 1 / 60, "mg/hour": 1000 / 60}.get(u)
        return rate * per_min / weight if per_min is not None and weight else None
    if unit == "units/min":
        factor = {"units/min": 1, "units/hour": 1 / 60, "mu/min": 1 / 1000}.get(u)
        return rate * factor if factor else None
    return None


def read_cohort(root: str | Path, *, mapping_path: str | None = None, diagnoses: bool = False,
                stays: int | None = None, at: str = "hourly") -> list[Course]:
    """Every ICU stay of the MIMIC-IV directory ``root`` as a :class:`Course`, in stay_id order.

    ``at``: ``hourly`` (the end of every hour from ICU admission, and discharge) or ``vitals`` (each new
    MAP reading during the stay, when a bedside system would evaluate again)."""
    root = Path(root)
    m = load_mapping(mapping_path)
    t = m["tables"]
    stay_rows = sorted(_rows(root, t["stays"]), key=lambda r: int(r["stay_id"]))
    if stays is not None:
        stay_rows = stay_rows[:stays]
    stay_ids = {int(s["stay_id"]) for s in stay_rows}
    subjects = {int(s["subject_id"]) for s in stay_rows}
    patients = {int(r["subject_id"]): r for r in _rows(root, t["patients"]) if int(r["subject_id"]) in subjects}
    codes: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for r in _rows(root, t["diagnoses"], required=False):
        codes[int(r["hadm_id"])].add((r["icd_version"].strip(), r["icd_code"].strip().upper()))

    readings: dict[int, list[Reading]] = defaultdict(list)       # by stay
    subject_readings: dict[int, list[Reading]] = defaultdict(list)  # by subject (weights, labs)
    notes: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    subject_notes: dict[int, list[tuple[datetime, str]]] = defaultdict(list)

    # table -> item -> (fact, source, limits, factor to the fact's unit)
    item_of: dict[str, dict[int, tuple[str, str, list | None, float]]] = defaultdict(dict)
    for fact, spec in m["readings"].items():
        for group in spec["prefer"]:
            for item in group["items"]:
                item_of[spec["table"]][item] = (fact, f"{group['source']} {item}", spec.get("limits"),
                                                UNIT_FACTOR.get(group.get("unit", ""), 1.0))
    weight_spec = m["readings"].get("patient.weight_kg", {})

    def add(fact: str, source: str, limits: list | None, value: float | None, when: datetime, stay: int | None,
            subject: int) -> None:
        target_notes = notes[stay] if stay is not None else subject_notes[subject]
        if value is None:
            target_notes.append((when, f"{fact}: {source} has no numeric value; left out"))
            return
        why = _outside(limits, value)
        if why:
            target_notes.append((when, f"{fact} {value:g} ({source}) {why}; dropped"))
            return
        value = int(value) if value == int(value) and fact not in ("patient.weight_kg", "patient.height_cm") else value
        (readings[stay] if stay is not None else subject_readings[subject]).append(Reading(fact, when, value, source))

    for r in _rows(root, t["chartevents"], items=set(item_of["chartevents"])):
        hit = item_of["chartevents"].get(_int(r["itemid"]) or -1)
        if hit is None:
            continue
        fact, source, limits, factor = hit
        when, subject = _ts(r["charttime"]), _int(r["subject_id"])
        if when is None or subject not in subjects:
            continue
        value = _num(r["valuenum"])
        if value is not None and factor != 1.0:
            value = round(value * factor, 1)
        if fact.startswith("patient."):  # the patient's, not the stay's: charted in any stay (or none)
            add(fact, source, limits, value, when, None, subject)
            continue
        stay = _int(r.get("stay_id"))
        if stay in stay_ids:
            add(fact, source, limits, value, when, stay, subject)

    for r in _rows(root, t["labevents"], required=False, items=set(item_of["labevents"])):
        hit = item_of["labevents"].get(_int(r["itemid"]) or -1)
        subject = _int(r["subject_id"])
        if hit is None or subject not in subjects:
            continue
        fact, source, limits, _ = hit
        known = _ts(r.get("storetime")) or _ts(r["charttime"])
        if known is not None:
            add(fact, source, limits, _num(r["valuenum"]), known, None, subject)

    omr = {name: OMR_RESULTS[name] for fact, spec in m["readings"].items() for also in spec.get("also", [])
           if also.startswith("omr.") and (name := also[4:]) in OMR_RESULTS and OMR_RESULTS[name][0] == fact}
    if omr:
        for r in _rows(root, t["omr"], required=False):
            subject = _int(r["subject_id"])
            if subject in subjects and r["result_name"] in omr:
                fact, factor = omr[r["result_name"]]
                day = _ts(r["chartdate"])
                raw = _num(r["result_value"])
                if day is not None:  # dated, not timed: known at the end of its day
                    add(fact, "omr", m["readings"][fact].get("limits"),
                        round(raw * factor, 1) if raw is not None else None, day + timedelta(days=1), None, subject)

    infusions = m["infusions"]
    drug_of = {item: (drug, spec["unit"]) for drug, spec in infusions["drugs"].items() for item in spec["items"]}
    fluid_of = {item: (kind, spec.get("order_component")) for kind, spec in m["fluids"].items() for item in spec["items"]}
    rows_by_drug: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    fluids: dict[int, list[Fluid]] = defaultdict(list)
    has_inputs: set[int] = set()
    bag_of = {drug: spec["bag"] for drug, spec in infusions["drugs"].items() if "bag" in spec}
    solution = infusions.get("bag_solution_component")
    bag_rows: list[tuple[int, str, datetime, datetime, str, float | None, str]] = []  # stay, drug, start, end, orderid, amount, unit
    solution_ml: dict[str, float | None] = {}  # orderid -> mL in the bag when the row started
    for r in _rows(root, t["inputevents"]):
        stay = _int(r["stay_id"])
        if stay not in stay_ids:
            continue
        has_inputs.add(stay)
        if r.get("statusdescription", "") in infusions.get("skip_status", []):
            continue
        start, end, item = _ts(r["starttime"]), _ts(r["endtime"]), _int(r["itemid"])
        if start is None:
            continue
        if solution and bag_of and r.get("ordercomponenttypedescription") == solution and r.get("orderid"):
            solution_ml[r["orderid"]] = _ml(r.get("originalamount"), r.get("amountuom", ""))
        weight = _num(r.get("patientweight"))
        if weight and "inputevents.patientweight" in weight_spec.get("also", []):
            add("patient.weight_kg", "inputevents.patientweight", weight_spec.get("limits"), weight, start, None,
                _int(r["subject_id"]) or 0)
        if item in drug_of:
            drug, unit = drug_of[item]
            rate = convert_rate(_num(r.get("rate")), r.get("rateuom", ""), unit, weight)
            if rate is None:
                notes[stay].append((start, f"{drug}: rate {r.get('rate')!r} {r.get('rateuom')!r} cannot be converted "
                                           f"to {unit}; left out"))
                continue
            why = _outside(infusions.get("limits", {}).get(drug), rate)
            if why:
                notes[stay].append((start, f"{drug} {rate:g} {unit} {why}; dropped"))
                continue
            rows_by_drug[stay][drug].append((start, end or start, round(rate, 6), f"inputevents {item} {start.isoformat()}"))
            if drug in bag_of and end is not None and r.get("orderid"):
                bag_rows.append((stay, drug, start, end, r["orderid"], _num(r.get("originalamount")),
                                 r.get("amountuom", "").strip().lower()))
        elif item in fluid_of:
            kind, component = fluid_of[item]
            if component and r.get("ordercomponenttypedescription") != component:
                continue
            amount, uom = _num(r.get("amount")), r.get("amountuom", "").strip().lower()
            ml = amount * (1000 if uom == "l" else 1) if amount is not None and uom in ("ml", "l") else None
            fluids[stay].append(Fluid(kind, start, ml, f"inputevents {item} {start.isoformat()}"))

    spans: dict[int, list] = defaultdict(list)
    for stay, drug, start, end, order, amount, unit in bag_rows:
        bag = bag_of[drug]
        concentration = _concentration(amount, unit, solution_ml.get(order), bag["unit"])
        if concentration is None:
            notes[stay].append((start, f"{bag['fact']}: the bag of {drug} ({amount!r} {unit!r} in "
                                       f"{solution_ml.get(order)!r} mL) cannot be read; left out"))
        else:
            spans[stay].append((bag["fact"], start, end, concentration))

    urine = m.get("urine")
    urine_rows: dict[int, dict[datetime, float]] = defaultdict(lambda: defaultdict(float))
    if urine:
        positive, negative = set(urine["items"]), set(urine.get("negative_items", []))
        for r in _rows(root, t["outputevents"], required=False):
            item, stay = _int(r["itemid"]), _int(r["stay_id"])
            if stay not in stay_ids or (item not in positive and item not in negative):
                continue
            when, value = _ts(r["charttime"]), _num(r["value"])
            if when is None:
                continue
            if value is None or value < 0:
                notes[stay].append((when, f"urine volume {r['value']!r} unreadable or negative; left out"))
                continue
            urine_rows[stay][when] += -value if item in negative else value

    line_of = {item: fact for fact, items in m.get("access", {}).items() for item in items}
    for r in _rows(root, t["procedureevents"], required=False):
        item, stay = _int(r["itemid"]), _int(r["stay_id"])
        if item in line_of and stay in stay_ids and r.get("statusdescription") != "Rewritten":
            start, end = _ts(r["starttime"]), _ts(r["endtime"])
            if start and end:
                spans[stay].append((line_of[item], start, end, True))

    every = timedelta(hours=m.get("evaluate", {}).get("every_hours", 1))
    windows = {fact: spec["window_hours"] for fact, spec in m["readings"].items()}
    # the item groups in order, then the other sources (`also`) in theirs
    prefer = {fact: [g["source"] for g in spec["prefer"]] + [a.split(".")[0] if a.startswith("omr.") else a
                                                            for a in spec.get("also", [])]
              for fact, spec in m["readings"].items()}
    if urine:
        windows[urine["fact"]] = urine["window_hours"]
    implied = {}
    if m.get("arterial_line_from_pressure_hours"):
        implied["access.arterial_line"] = ("vitals.map_mmhg", "arterial", m["arterial_line_from_pressure_hours"])
    pauses = {drug: (p["minutes"], p["last_rate"], float(p.get("max_minutes", 10080)))
              for drug, p in m.get("pauses", {}).items()}
    r_spec = m.get("recognition")
    recognition = ((r_spec["fact"], tuple(r_spec["first_start_of"]), float(r_spec.get("max_hours", 720)))
                   if r_spec else None)
    courses = []
    for s in stay_rows:
        stay, subject, hadm = int(s["stay_id"]), int(s["subject_id"]), _int(s.get("hadm_id"))
        intime, outtime = _ts(s["intime"]), _ts(s["outtime"])
        if intime is None or outtime is None or outtime <= intime:
            continue
        given: dict[str, Any] = {}
        person = patients.get(subject)
        if person:
            age = _num(person.get("anchor_age"))
            if age is not None:
                given["patient.age_years"] = int(age + intime.year - int(person["anchor_year"]))
            sex = {"F": "female", "M": "male"}.get(person.get("gender", "").strip().upper())
            if sex:
                given["patient.sex"] = sex
        admission = codes.get(hadm or -1, set())
        for d in m.get("diagnoses", []):
            if d.get("lookahead") and not diagnoses:
                continue
            if any((v == "9" and c.startswith(tuple(d.get("icd9", [])))) or (v == "10" and c.startswith(tuple(d.get("icd10", []))))
                   for v, c in admission):
                given[d["fact"]] = d["value"]
        tl = Timeline()
        tl.readings = readings.get(stay, []) + subject_readings.get(subject, [])
        tl.fluids = sorted(fluids.get(stay, []), key=lambda f: f.at)
        tl.rates = _rate_changes(rows_by_drug.get(stay, {}), intime, list(infusions["drugs"]) if
                                 infusions.get("zero_when_absent") and stay in has_inputs else [])
        course_notes = notes.get(stay, []) + [n for n in subject_notes.get(subject, []) if intime - timedelta(days=1) <= n[0] <= outtime]
        if urine:
            tl.readings += _urine_rates(urine, urine_rows.get(stay, {}), tl.readings, course_notes)
        if at == "vitals":
            times = sorted({r.at for r in tl.readings if r.fact == "vitals.map_mmhg" and intime <= r.at <= outtime})
        else:
            times = hourly(intime, outtime, every)
        courses.append(Course(id=str(stay), given=given, timeline=tl, times=times, windows=windows, prefer=prefer,
                              spans=spans.get(stay, []), notes=course_notes, implied=implied,
                              pauses=pauses, recognition=recognition,
                              meta={"subject_id": subject, "hadm_id": hadm, "intime": intime.isoformat(),
                                    "outtime": outtime.isoformat()}))
    return courses


#: A drug amount's unit -> its factor to the concentration's numerator (mcg or units).
_AMOUNT_FACTOR: dict[str, dict[str, float]] = {"mcg/mL": {"mg": 1000, "mcg": 1, "g": 1e6, "grams": 1e6},
                                                "units/mL": {"units": 1, "u": 1}}


def _ml(amount: str | None, unit: str) -> float | None:
    value, u = _num(amount), unit.strip().lower()
    if value is None or value <= 0 or u not in ("ml", "l"):
        return None
    return value * (1000 if u == "l" else 1)


def _concentration(amount: float | None, unit: str, ml: float | None, want: str) -> float | None:
    """Drug ``amount`` (in ``unit``) in ``ml`` as ``want`` (mcg/mL or units/mL), 4 significant digits; None if it cannot be."""
    factor = _AMOUNT_FACTOR.get(want, {}).get(unit)
    if amount is None or amount <= 0 or not ml or factor is None:
        return None
    return float(f"{amount * factor / ml:.4g}")


def hourly(start: datetime, end: datetime, every: timedelta) -> list[datetime]:
    """The end of every period from ``start`` (the last one cut at ``end``)."""
    times, k = [], 1
    while start + (k - 1) * every < end:
        times.append(min(start + k * every, end))
        k += 1
    return times


def _rate_changes(by_drug: dict[str, list], intime: datetime, zero_drugs: list[str]) -> list[RateChange]:
    """Rate changes from infusion rows: each row's rate from its start, 0 at its end unless another row runs then."""
    out = [RateChange(d, intime - timedelta(days=3650), 0.0, "inputevents: not running (MetaVision records every "
                      "infusion)") for d in zero_drugs]
    for drug, rows in by_drug.items():
        points: dict[datetime, float] = {}
        sources: dict[datetime, str] = {}
        edges = sorted({t for s, e, _, _ in rows for t in (s, e)})
        for t in edges:  # the total rate from t on: the sum of the rows running at t (overlapping bags add)
            running = [(rate, src) for s, e, rate, src in rows if s <= t < e]
            points[t] = round(sum(rate for rate, _ in running), 6)
            sources[t] = running[0][1] if running else f"{drug} stopped {t.isoformat()}"
        previous = None
        for t in edges:
            if points[t] != previous:
                out.append(RateChange(drug, t, points[t], sources[t]))
                previous = points[t]
    return out


def _urine_rates(spec: dict[str, Any], volumes: dict[datetime, float], readings: list[Reading],
                 notes: list[tuple[datetime, str]]) -> list[Reading]:
    """Urine output per kg per hour at each charting: the volume over the time since the previous one."""
    weights = sorted((r.at, r.value) for r in readings if r.fact == "patient.weight_kg" and r.value is not None)
    out, previous = [], None
    for when in sorted(volumes):
        if previous is not None:
            interval = (when - previous) / HOUR
            weight = next((w for at, w in reversed(weights) if at <= when), None)
            if interval > spec["max_interval_hours"]:
                notes.append((when, f"urine output: {interval:g} h since the previous charting "
                                    f"(> {spec['max_interval_hours']:g} h); left out"))
            elif weight and interval > 0:
                rate = round(volumes[when] / interval / weight, 3)
                why = _outside(spec.get("limits"), rate)
                if why:
                    notes.append((when, f"{spec['fact']} {rate:g} {why}; dropped"))
                else:
                    out.append(Reading(spec["fact"], when, rate, f"outputevents {when.isoformat()}"))
        previous = when
    return out


def mapping_problems(path: str) -> list[Problem]:
    """Every problem of a MIMIC mapping file (empty when it loads)."""
    try:
        load_mapping.__wrapped__(path)
    except InputError as exc:
        return list(exc.problems)
    return []
