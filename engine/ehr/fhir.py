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
from .convert import Conversion, PatientDeceased, convert, fill_unmapped, nest, relevance
from .mapping import FhirMapping, default_mapping_path, load_mapping
from .reading import FhirError, Located, Sources, collect, entries, normal_base, pointer_key, read_bundle
from .timeline import Provenance, apply, from_document

__all__ = ["Conversion", "FhirError", "FhirMapping", "PatientDeceased", "cut_observations", "observation_windows", "default_mapping_path",
           "from_bundle", "unusable_prefetch", "from_hook_request", "from_timeline", "load_bundle", "load_mapping", "prefetch_templates"]


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
    if not any(r.type == "Patient" for r in src.resources) and not any(r.type == "Patient" for r in located):
        # Without it nothing says whose record this is, nor the age and sex the protocol asks for: a result
        # of nothing but unknowns would look like advice (issue 22).
        raise FhirError.single("the bundle has no Patient resource; a patient's record starts with it", file=file,
                               pointer="/entry", suggestion="include the Patient (with birthDate and gender) that the "
                               "other resources' subject names")
    if not any(r.type == "Patient" for r in src.resources):
        src.missing.append("Patient")  # there, but not readable (its note says why)
    return convert(src, now=now, mapping=mapping, file=file, pack=pack)


#: Prefetch keys the service asks for, and what each covers.
PREFETCH_PATIENT = "patient"
PREFETCH_OBSERVATIONS = "observations"
PREFETCH_LABS = "labs"
PREFETCH_WEIGHT = "weight"
PREFETCH_CONDITIONS = "conditions"
PREFETCH_MED_ADMIN = "medicationAdministrations"
PREFETCH_MED_REQUEST = "medicationRequests"
PREFETCH_PROCEDURES = "procedures"
#: Not a template: Medication resources the service fetched by reference (``medicationReference``).
PREFETCH_MEDICATIONS = "medications"
#: LOINC blood-pressure panel (components 8480-6 systolic, 8462-4 diastolic).
BP_PANEL = "http://loinc.org|85354-9"
PREFETCH_KEYS = (PREFETCH_PATIENT, PREFETCH_OBSERVATIONS, PREFETCH_LABS, PREFETCH_WEIGHT, PREFETCH_CONDITIONS,
                 PREFETCH_MED_ADMIN, PREFETCH_MED_REQUEST, PREFETCH_PROCEDURES)
#: Observation prefetch keys and the look-back window (of the mapping) each covers. Each is its own search,
#: newest first and bounded by ``_count``, so that minute-level vital signs can never crowd a lactate or a
#: two-day-old weight out of the EHR's answer (CDS Hooks 2.0 prefetch tokens name context fields only, so a
#: template cannot carry a relative date; the service adds ``date=ge`` when it fetches itself).
OBSERVATION_KEYS = {PREFETCH_OBSERVATIONS: "vitals", PREFETCH_LABS: "labs", PREFETCH_WEIGHT: "weight"}
#: ``_count`` of each observation template: the newest readings that are enough for the latest value of
#: every code of its window (and, for vital signs, several hours of the time-derived facts at 15-minute charting).
OBSERVATION_COUNT = {PREFETCH_OBSERVATIONS: 200, PREFETCH_LABS: 20, PREFETCH_WEIGHT: 5}


def observation_codes_of(mapping: FhirMapping, window: str) -> list[str]:
    """``system|code`` of every observation the mapping reads in ``window`` (the BP panel with the vitals)."""
    codes = [f"{c.system}|{c.code}" for r in mapping.observations() if r.window == window for c in r.codes]
    return list(dict.fromkeys(codes + ([BP_PANEL] if window == "vitals" else [])))


def prefetch_templates(mapping: FhirMapping | None = None) -> dict[str, str]:
    """The prefetch templates the service advertises (observation codes and windows come from the mapping)."""
    mapping = mapping or load_mapping()
    # A search by code= matches Observation.code, never a component's: the blood-pressure panel,
    # whose components carry SBP and DBP, is asked for by its own code as well.
    observations = {key: f"Observation?patient={{{{context.patientId}}}}&code={','.join(observation_codes_of(mapping, window))}"
                         f"&_sort=-date&_count={OBSERVATION_COUNT[key]}"
                    for key, window in OBSERVATION_KEYS.items() if observation_codes_of(mapping, window)}
    return {
        PREFETCH_PATIENT: "Patient/{{context.patientId}}",
        **observations,
        PREFETCH_CONDITIONS: "Condition?patient={{context.patientId}}",
        PREFETCH_MED_ADMIN: "MedicationAdministration?patient={{context.patientId}}",
        PREFETCH_MED_REQUEST: "MedicationRequest?patient={{context.patientId}}&status=active",
        PREFETCH_PROCEDURES: "Procedure?patient={{context.patientId}}",
    }


def observation_windows(mapping: FhirMapping) -> dict[str, float]:
    """Hours of look-back of each observation prefetch key (what the service's own fetch sends as ``date=ge``)."""
    return {key: mapping.lookback_hours[window] for key, window in OBSERVATION_KEYS.items() if window in mapping.lookback_hours}


def cut_observations(prefetch: Mapping[str, Any]) -> list[str]:
    """Words for each observation prefetch that holds as many readings as its template's ``_count``: older
    readings within the look-back window may exist that the EHR did not send."""
    out = []
    for key, count in OBSERVATION_COUNT.items():
        bundle = prefetch.get(key)
        if not isinstance(bundle, dict) or not isinstance(entries_ := bundle.get("entry"), list):
            continue
        total = bundle.get("total")
        if (isinstance(total, int) and total > len(entries_)) or (not isinstance(total, int) and len(entries_) >= count):
            out.append(f"{key}: only the newest {len(entries_)} readings came (the prefetch's _count or the fetch's page "
                       "limit); older ones in the look-back window were cut, so facts computed over time may be unknown")
    return out


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
    server = request.get("fhirServer")
    src.base = normal_base(server) if isinstance(server, str) else None
    located: list[Located] = []
    for key in (*PREFETCH_KEYS, PREFETCH_MEDICATIONS):
        if key not in prefetch:
            # labs and weight are their own searches since issue 22; a client that registered the older
            # templates sends them within observations.
            if key != PREFETCH_MEDICATIONS and not (key in (PREFETCH_LABS, PREFETCH_WEIGHT) and PREFETCH_OBSERVATIONS in prefetch):
                src.missing.append(key)
            continue
        if prefetch[key] is None:
            continue
        found = list(entries(prefetch[key], f"/prefetch/{pointer_key(key)}", src, problems, file, key))
        if key == PREFETCH_PATIENT:
            for loc in found:
                if loc.type != "Patient":  # answered without a patient otherwise (issue 24)
                    problems.append(Problem(f"prefetch 'patient' holds a {loc.type}, not a Patient; refused", file=file,
                                            pointer=f"{loc.pointer}/resourceType",
                                            suggestion="prefetch 'patient' is the Patient of context.patientId"))
        located.extend(found)
    drafts = context.get("draftOrders")
    orders = list(entries(drafts, "/context/draftOrders", src, problems, file, "draftOrders")) if drafts is not None else []
    if not problems:
        patient_id = context.get("patientId") if isinstance(context.get("patientId"), str) else None
        collect(located, src, problems, file, context_id=patient_id, orders=orders, relevant=relevance(mapping, now))
    if problems:
        raise FhirError(problems)
    src.conditions_complete = PREFETCH_CONDITIONS not in src.missing
    src.medications_complete = not (PREFETCH_MED_ADMIN in src.missing or PREFETCH_MED_REQUEST in src.missing)
    conversion = convert(src, now=now, mapping=mapping, file=file, pack=pack)
    conversion.gaps[:0] = cut_observations(prefetch)
    return conversion


def unusable_prefetch(value: Any) -> str | None:
    """Why a prefetch value is not the search result it stands for (None when it is): an OperationOutcome (the
    EHR's error report) or one page of several (a Bundle with a ``next`` link). The service fetches such a key
    itself, and answers 412 when it is required and cannot be had."""
    if not isinstance(value, dict):
        return None
    if value.get("resourceType") == "OperationOutcome":
        return "the prefetch was an OperationOutcome (the EHR's error report), not a result"
    links = value.get("link") if value.get("resourceType") == "Bundle" else None
    if isinstance(links, list) and any(isinstance(link, dict) and link.get("relation") == "next" for link in links):
        return "the prefetch was one page of several (a Bundle with a 'next' link)"
    return None


def from_timeline(doc: Document, *, now: datetime, pack: RulePack) -> Conversion:
    """A timeline input (``schemas/timeline.schema.json``): facts given directly, plus those the pack computes
    from the events; the latest reading of each observed fact is its value unless given directly."""
    given, tl = from_document(doc, now)
    facts = dict(given)
    prov = Provenance()
    for fact, value in given.items():
        prov.given(fact, value, f"{doc.file} /timeline/state")
    mapping = load_mapping()
    windows = {r.fact: mapping.lookback_hours[r.window] for r in mapping.observations()}
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
