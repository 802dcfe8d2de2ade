"""FHIR R4 in: a Bundle (or a CDS Hooks request's prefetch) -> a patient state, with notes and provenance.

The public entry points (the CLI and the service use these); the work is split by concern:

- :mod:`.reading`: bounded parsing, located resources, shape checks (``schemas/fhir-read.schema.json``),
  one patient;
- :mod:`.terminology` and :mod:`.mapping`: value sets (``rules/fhir/valuesets.json``) and the mapping
  (``rules/fhir/mapping.yaml``);
- :mod:`.convert`: resources -> facts, open world, conflicts and gaps said;
- :mod:`.timeline`: the record as a timeline, and the pack's temporal facts.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Mapping

from ..errors import Problem
from ..evaluation.load import Document
from ..model import RulePack
from .convert import Conversion, convert, fill_unmapped, nest, relevance
from .mapping import FhirMapping, default_mapping_path, load_mapping
from .reading import FhirError, Located, Sources, collect, entries, pointer_key, read_bundle
from .timeline import Provenance, apply, from_document

__all__ = ["Conversion", "FhirError", "FhirMapping", "default_mapping_path", "from_bundle", "from_hook_request",
           "from_timeline", "load_bundle", "load_mapping", "prefetch_templates"]


def load_bundle(path: str | Path, *, mapping: FhirMapping | None = None) -> Document:
    """Read a FHIR bundle file under the FHIR size limit (``max_bundle_bytes`` of the mapping; 32 MiB by default)."""
    mapping = mapping or load_mapping()
    return read_bundle(path, max_bytes=mapping.max_bundle_bytes)


def from_bundle(bundle: Any, *, now: datetime, mapping: FhirMapping | None = None, file: str = "<bundle>",
                pack: RulePack | None = None) -> Conversion:
    """A Bundle holding one patient's record. A MedicationRequest with status ``draft`` is a proposed order.

    With ``pack``, its temporal facts are computed from the record's timeline.
    """
    mapping = mapping or load_mapping()
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError.single("expected a FHIR Bundle (resourceType: Bundle)", file=file, pointer="",
                               suggestion="pass a Bundle of the patient's Patient, Observation, Condition and medication resources")
    problems: list[Problem] = []
    src = Sources()
    located = list(entries(bundle, "", src, problems, file, "bundle"))
    if not problems:
        collect(located, src, problems, file, relevant=relevance(mapping, now))
    if problems:
        raise FhirError(problems)
    if "bundle" in src.missing:
        src.conditions_complete = src.medications_complete = False
    if not any(r.type == "Patient" for r in src.resources):
        src.missing.append("Patient")
    return convert(src, now=now, mapping=mapping, file=file, pack=pack)


#: Prefetch keys the service asks for, and what each covers.
PREFETCH_PATIENT = "patient"
PREFETCH_OBSERVATIONS = "observations"
PREFETCH_CONDITIONS = "conditions"
PREFETCH_MED_ADMIN = "medicationAdministrations"
PREFETCH_MED_REQUEST = "medicationRequests"
PREFETCH_PROCEDURES = "procedures"
#: LOINC blood-pressure panel (components 8480-6 systolic, 8462-4 diastolic).
BP_PANEL = "http://loinc.org|85354-9"
PREFETCH_KEYS = (PREFETCH_PATIENT, PREFETCH_OBSERVATIONS, PREFETCH_CONDITIONS, PREFETCH_MED_ADMIN, PREFETCH_MED_REQUEST,
                 PREFETCH_PROCEDURES)


def prefetch_templates(mapping: FhirMapping | None = None) -> dict[str, str]:
    """The prefetch templates the service advertises (observation codes come from the mapping)."""
    mapping = mapping or load_mapping()
    # A search by code= matches Observation.code, never a component's: the blood-pressure panel,
    # whose components carry SBP and DBP, is asked for by its own code as well.
    codes = ",".join(dict.fromkeys([*(f"{c.system}|{c.code}" for c in mapping.observation_codes()), BP_PANEL]))
    return {
        PREFETCH_PATIENT: "Patient/{{context.patientId}}",
        PREFETCH_OBSERVATIONS: f"Observation?patient={{{{context.patientId}}}}&code={codes}&_sort=-date",
        PREFETCH_CONDITIONS: "Condition?patient={{context.patientId}}",
        PREFETCH_MED_ADMIN: "MedicationAdministration?patient={{context.patientId}}",
        PREFETCH_MED_REQUEST: "MedicationRequest?patient={{context.patientId}}&status=active",
        PREFETCH_PROCEDURES: "Procedure?patient={{context.patientId}}",
    }


def from_hook_request(request: Mapping[str, Any], *, now: datetime, mapping: FhirMapping | None = None,
                      file: str = "<request>", pack: RulePack | None = None) -> Conversion:
    """A CDS Hooks request: prefetch (absent key = not supplied; null = supplied, nothing found) and draft orders.

    Nothing is fetched from outside: what is not supplied stays unknown and is listed in ``missing``.
    Every resource must be about ``context.patientId``.
    """
    mapping = mapping or load_mapping()
    problems: list[Problem] = []
    prefetch = request.get("prefetch") or {}
    context = request.get("context") or {}
    src = Sources()
    located: list[Located] = []
    for key in PREFETCH_KEYS:
        if key not in prefetch:
            src.missing.append(key)
            continue
        if prefetch[key] is None:
            continue
        located.extend(entries(prefetch[key], f"/prefetch/{pointer_key(key)}", src, problems, file, key))
    drafts = context.get("draftOrders")
    orders = list(entries(drafts, "/context/draftOrders", src, problems, file, "draftOrders")) if drafts is not None else []
    if not problems:
        patient_id = context.get("patientId") if isinstance(context.get("patientId"), str) else None
        collect(located, src, problems, file, context_id=patient_id, orders=orders, relevant=relevance(mapping, now))
    if problems:
        raise FhirError(problems)
    src.conditions_complete = PREFETCH_CONDITIONS not in src.missing
    src.medications_complete = not (PREFETCH_MED_ADMIN in src.missing or PREFETCH_MED_REQUEST in src.missing)
    return convert(src, now=now, mapping=mapping, file=file, pack=pack)


def from_timeline(doc: Document, *, now: datetime, pack: RulePack) -> Conversion:
    """A timeline input (``schemas/timeline.schema.json``): facts given directly, plus those the pack computes
    from the events; the latest reading of each observed fact is its value unless given directly."""
    given, tl = from_document(doc, now)
    facts = dict(given)
    prov = Provenance()
    for fact, value in given.items():
        prov.given(fact, value, f"{doc.file} /timeline/state")
    mapping = load_mapping()
    windows = {r.fact: mapping.lookback_hours[r.window] for r in (*mapping.quantities, *mapping.coded)}
    notes: list[str] = []
    by_fact: dict[str, list[Any]] = {}
    for r in tl.readings:
        by_fact.setdefault(r.fact, []).append(r)
    for fact, readings in sorted(by_fact.items()):
        if fact in given:
            continue
        hours = windows.get(fact)
        recent = [r for r in readings if hours is None or r.at >= now - timedelta(hours=hours)]
        if len(recent) < len(readings):
            notes.append(f"ignored {len(readings) - len(recent)} reading(s) of {fact} older than {hours:g} h")
        if not recent:
            prov.unknown(fact, f"no reading within {hours:g} h")
            continue
        last = max(r.at for r in recent)
        at_last = [r for r in recent if r.at == last]
        if len({repr(r.value) for r in at_last}) > 1:
            both = ", ".join(f"{r.source} = {r.value}" for r in at_last)
            notes.append(f"{fact} left unknown: conflicting readings at the same time ({both})")
            prov.unknown(fact, f"conflicting readings at the same time: {both}")
            continue
        facts[fact] = at_last[0].value
        prov.record(fact, at_last[0].value, [f"{doc.file} {at_last[0].source}"])
    rate_of = {m.drug: m.rate_fact for m in mapping.medications if m.rate_fact}
    for change in sorted(tl.rates, key=lambda c: c.at):
        fact = rate_of[change.drug]
        if fact not in given and change.rate is not None:
            facts[fact] = change.rate
            prov.record(fact, change.rate, [f"{doc.file} {change.source}"])
    notes += apply(pack, tl, facts, set(given), prov, now, {f: d for d, f in rate_of.items()})
    fill_unmapped(prov, "not given and not computed from the timeline")
    sources = {k: "; ".join(v.get("sources") or [v.get("how", "")]) for k, v in prov.entries.items() if v["from"] != "unknown"}
    from ..evaluation.validate import check_state

    state = nest(facts)
    check_state(state)
    return Conversion(state, notes, dict(sorted(sources.items())), [], [], None, prov.to_dict(), tl)
