"""The other inputs of a shadow run, as courses: FHIR Bulk Data NDJSON, and pressor's timeline lines.

- **FHIR Bulk Data** (what an EHR's ``$export`` writes: one ``<Type>[.n].ndjson`` file per resource type,
  one resource per line): resources are grouped by patient (``Patient.id``; ``subject``/``patient``
  references elsewhere) into one Bundle per patient, read through the FHIR mapping
  (:func:`pressor.engine.ehr.fhir.from_bundle`) at each evaluation time: every ``every_hours`` from the
  patient's first timed Observation to the last timed resource.
- **Timeline lines**: one JSON object per line, ``{"id": ..., "at": <ISO time>, "timeline": {...}}``
  (``schemas/timeline.schema.json`` for the ``timeline``); each line is evaluated at its own ``at``;
  lines sharing an ``id`` are one course.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem
from ..evaluation.load import loads_json
from ..ehr.timeline import Timeline
from .course import Course
from .mimic import hourly

#: Longest span evaluated for one patient of an NDJSON export (a stay of shock is days; a lifetime is not).
MAX_SPAN = timedelta(days=60)


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str) or len(text) < 10:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _times_of(resource: dict[str, Any]) -> list[datetime]:
    out = []
    for key in ("effectiveDateTime", "effectiveInstant", "authoredOn", "onsetDateTime", "performedDateTime"):
        t = _time(resource.get(key))
        if t:
            out.append(t)
    for key in ("effectivePeriod", "performedPeriod"):
        period = resource.get(key)
        if isinstance(period, dict):
            out += [t for t in (_time(period.get("start")), _time(period.get("end"))) if t]
    return out


def _patient_of(resource: dict[str, Any]) -> str | None:
    if resource.get("resourceType") == "Patient":
        return resource.get("id")
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str) and ref["reference"].startswith("Patient/"):
            return ref["reference"].split("/", 1)[1]
    return None


def read_fhir_ndjson(directory: str | Path, *, every_hours: float = 1.0, at: str = "hourly") -> list[Course]:
    """One course per patient of a Bulk Data export directory (``*.ndjson``), in patient id order.

    ``at``: ``hourly``, or ``vitals`` (each new timed Observation)."""
    directory = Path(directory)
    files = sorted(directory.glob("*.ndjson"))
    if not files:
        raise InputError.single("no .ndjson files", file=str(directory),
                                suggestion="give the directory of a FHIR Bulk Data export ($export output)")
    by_patient: dict[str, list[dict[str, Any]]] = {}
    shared: list[dict[str, Any]] = []  # Medication resources: referenced, not about one patient
    problems = []
    for path in files:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:  # strict JSON (duplicate keys, NaN, depth, half characters refused), as every input
                    resource = loads_json(line, file=str(path))
                except InputError as exc:
                    problems.append(Problem(f"not JSON: {exc.problems[0].message}", file=str(path), line=number))
                    continue
                if not isinstance(resource, dict):
                    problems.append(Problem("a line must be one FHIR resource", file=str(path), line=number))
                    continue
                if resource.get("resourceType") == "Medication":
                    shared.append(resource)
                    continue
                patient = _patient_of(resource)
                if patient is None:
                    problems.append(Problem(f"{resource.get('resourceType')} names no patient; left out", file=str(path),
                                            line=number, severity="warning"))
                    continue
                by_patient.setdefault(patient, []).append(resource)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise InputError(errors)
    every = timedelta(hours=every_hours)
    courses = []
    for patient in sorted(by_patient):
        resources = by_patient[patient]
        observed = [t for r in resources if r.get("resourceType") == "Observation" for t in _times_of(r)]
        everything = [t for r in resources for t in _times_of(r)]
        if not observed:
            continue
        start, end = min(observed), min(max(everything), min(observed) + MAX_SPAN)
        if at == "vitals":
            times = sorted({t for t in observed if start <= t <= end})
        else:
            times = hourly(start, end, every)
        bundle = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": r} for r in resources + shared]}
        courses.append(Course(id=patient, given={}, timeline=Timeline(), times=times,
                              notes=[(start, f"{p.message} ({p.file}:{p.line})") for p in problems],
                              meta={"bundle": bundle}))
    return courses


def read_timeline_lines(path: str | Path) -> list[Course]:
    """One course per ``id`` of a timeline-lines file, its times those of its lines (in file order of first ``id``)."""
    from ..evaluation.load import loads_json

    courses: dict[str, Course] = {}
    problems = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                data = loads_json(line, file=f"{path}:{number}")
            except InputError as exc:
                problems.extend(exc.problems)
                continue
            at = _time(data.get("at")) if isinstance(data, dict) else None
            if not isinstance(data, dict) or "id" not in data or at is None or "timeline" not in data:
                problems.append(Problem("a line needs id, at (an ISO 8601 time) and timeline", file=str(path), line=number))
                continue
            course = courses.setdefault(str(data["id"]), Course(id=str(data["id"]), given={}, timeline=Timeline(),
                                                                times=[], meta={"documents": []}))
            course.times.append(at)
            course.meta["documents"].append({"timeline": data["timeline"], "source": f"{path}:{number}"})
    if problems:
        raise InputError(problems)
    for c in courses.values():  # evaluation order is time order; the lines keep theirs
        order = sorted(range(len(c.times)), key=lambda i: c.times[i])
        c.times = [c.times[i] for i in order]
        c.meta["documents"] = [c.meta["documents"][i] for i in order]
    return list(courses.values())
