"""FHIR R4 in: a Bundle (or a CDS Hooks request's prefetch) -> a patient state, with notes.

Which code feeds which fact, in which unit, is data (``rules/fhir/mapping.yaml``, checked
against ``schemas/fhir-mapping.schema.json`` and the patient-state vocabulary when it loads;
unit factors are plain numbers computed then). This module only walks resources:

- Observations: the latest one inside its look-back window wins; older ones are ignored
  and said so. A code matches ``Observation.code`` or ``Observation.component.code``.
- Conditions: active ones set a fact; ``when_absent`` applies only when the input carries
  the patient's conditions (closed-world reading, always noted).
- Medications: running infusions give rates; with the patient's medications in hand a
  drug that is not running is 0, otherwise unknown. Draft MedicationRequests are proposed
  orders (one state per order).

A unit outside the closed table, or a value that is not a number, is a :class:`FhirError`
naming the resource and the JSON pointer; nothing is guessed.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from importlib import resources as _resources
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..evaluation.compile import state_vocabulary
from ..errors import InputError, PatientStateError, Problem
from ..evaluation.load import Document, escape_pointer_token, load_document
from ..evaluation.validate import STATE_SCHEMA, check_state, schema, schema_problems

MAPPING_SCHEMA = "fhir-mapping.schema.json"
UCUM = "http://unitsofmeasure.org"
_ACTIVE_CONDITION = {"active", "recurrence", "relapse"}
_VOID_VERIFICATION = {"refuted", "entered-in-error"}
_ORDER_INTENTS = {"order", "original-order", "instance-order"}


class FhirError(InputError):
    """A FHIR input that cannot be turned into a patient state (bad unit, bad value, bad shape)."""

    kind = "fhir_error"


# --- the mapping ---------------------------------------------------------------


@dataclass(frozen=True)
class Code:
    """One code of the mapping, with where it was confirmed."""

    system: str
    code: str
    display: str
    verified: bool
    source: str


@dataclass(frozen=True)
class QuantityRule:
    """A numeric observation: fact, look-back window, accepted units and their factors."""

    fact: str
    window: str
    quantity: str
    factors: Mapping[str, float]
    codes: tuple[Code, ...]


@dataclass(frozen=True)
class CodedRule:
    """An observation whose coded value sets a fact (pregnancy status)."""

    fact: str
    window: str
    codes: tuple[Code, ...]
    values: Mapping[tuple[str, str], tuple[Any, Code]]


@dataclass(frozen=True)
class ConditionRule:
    """An active Condition with one of ``codes`` sets ``fact`` to ``value``."""

    fact: str
    value: Any
    codes: tuple[Code, ...]
    when_absent: Any = None
    has_when_absent: bool = False


@dataclass(frozen=True)
class MedicationRule:
    """A drug: its rate fact (and accepted rate units) or the line_coinfusions member it sets."""

    drug: str
    vasopressor: bool
    codes: tuple[Code, ...]
    rate_fact: str | None = None
    quantity: str | None = None
    factors: Mapping[str, float] = field(default_factory=dict)
    line_member: str | None = None


@dataclass(frozen=True)
class FhirMapping:
    """A loaded, checked mapping file."""

    file: str
    sha256: str
    lookback_hours: Mapping[str, float]
    observation_status: frozenset[str]
    quantities: tuple[QuantityRule, ...]
    coded: tuple[CodedRule, ...]
    conditions: tuple[ConditionRule, ...]
    medications: tuple[MedicationRule, ...]
    purpose_system: str
    purpose_codes: Mapping[str, str]
    first_line_inference: bool
    order_drugs: frozenset[str]
    pregnant_false_for_gender: frozenset[str]

    def with_lookback(self, overrides: Mapping[str, float] | None) -> "FhirMapping":
        """The same mapping with some look-back windows replaced (unknown window names are refused)."""
        if not overrides:
            return self
        unknown = sorted(set(overrides) - set(self.lookback_hours))
        if unknown:
            raise InputError.single(f"unknown look-back window(s) {', '.join(unknown)}",
                                    suggestion=f"windows are: {', '.join(sorted(self.lookback_hours))}")
        bad = sorted(k for k, v in overrides.items() if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0)
        if bad:
            raise InputError.single(f"look-back hours for {', '.join(bad)} must be positive numbers")
        return replace(self, lookback_hours={**self.lookback_hours, **overrides})

    def quantity_index(self) -> dict[tuple[str, str], QuantityRule]:
        """(system, code) -> numeric observation rule."""
        return {(c.system, c.code): r for r in self.quantities for c in r.codes}

    def observation_codes(self) -> list[Code]:
        """Every observation code the mapping reads (for prefetch templates)."""
        return [c for r in self.quantities for c in r.codes] + [c for r in self.coded for c in r.codes]


def default_mapping_path() -> Path:
    """The bundled mapping (``pressor.rules/fhir/mapping.yaml``)."""
    return Path(str(_resources.files("pressor.rules").joinpath("fhir", "mapping.yaml")))


@lru_cache(maxsize=8)
def _load_cached(path: str) -> FhirMapping:
    return _build_mapping(load_document(path))


def load_mapping(path: str | Path | None = None, *, lookback_hours: Mapping[str, float] | None = None) -> FhirMapping:
    """Load and check a mapping file (default: the bundled one); loaded once per path per process."""
    mapping = _load_cached(str(path) if path is not None else str(default_mapping_path()))
    return mapping.with_lookback(lookback_hours)


def _build_mapping(doc: Document) -> FhirMapping:
    problems = schema_problems(doc, MAPPING_SCHEMA) if isinstance(doc.data, dict) else [
        Problem("a FHIR mapping must be a mapping", **doc.where(""))]
    if problems:
        raise InputError(problems)
    data = doc.data
    vocab = state_vocabulary(schema(STATE_SCHEMA))
    systems = data["systems"]
    windows = data["lookback_hours"]

    def report(pointer: str, message: str, suggestion: str | None = None) -> None:
        problems.append(Problem(message, suggestion=suggestion, **doc.where(pointer)))

    def codes(items: list[dict[str, Any]], pointer: str) -> tuple[Code, ...]:
        out = []
        for i, c in enumerate(items):
            system = systems.get(c["system"], c["system"])
            if "://" not in system and not system.startswith("urn:"):
                report(f"{pointer}/{i}/system", f"unknown code system '{c['system']}'",
                       f"use one of {', '.join(sorted(systems))} or a URI")
            out.append(Code(system, c["code"], c["display"], c["verified"], c["source"]))
        return tuple(out)

    def fact_type(fact: str, pointer: str, kind: str | None = None):
        ft = vocab.get(fact)
        if ft is None:
            report(pointer, f"unknown fact '{fact}'", "see schemas/patient-state.schema.json")
        elif kind is not None and ft.kind != kind:
            report(pointer, f"'{fact}' is a {ft.kind} fact, not a {kind}")
        return ft

    def value_fits(ft: Any, value: Any, pointer: str) -> None:
        if ft is None:
            return
        ok = (isinstance(value, bool) if ft.kind == "boolean" else value in ft.values if ft.kind == "enum" else False)
        if not ok:
            report(pointer, f"{value!r} is not a value of '{ft.path}' ({ft.kind})")

    factors: dict[str, dict[str, float]] = {
        name: {unit: spec.get("factor", 1.0) / spec.get("divisor", 1.0) for unit, spec in units.items()}
        for name, units in data["quantities"].items()
    }

    def check_window(name: str, pointer: str) -> None:
        if name not in windows:
            report(pointer, f"unknown look-back window '{name}'", f"windows are: {', '.join(sorted(windows))}")

    def check_quantity(name: str, pointer: str) -> dict[str, float]:
        if name not in factors:
            report(pointer, f"unknown quantity '{name}'", f"quantities are: {', '.join(sorted(factors))}")
            return {}
        return factors[name]

    quantities = []
    for i, item in enumerate(data["observations"]):
        ptr = f"/observations/{i}"
        fact_type(item["fact"], f"{ptr}/fact", "number")
        check_window(item["window"], f"{ptr}/window")
        quantities.append(QuantityRule(item["fact"], item["window"], item["quantity"],
                                       check_quantity(item["quantity"], f"{ptr}/quantity"), codes(item["codes"], f"{ptr}/codes")))
    coded = []
    for i, item in enumerate(data["coded_observations"]):
        ptr = f"/coded_observations/{i}"
        ft = fact_type(item["fact"], f"{ptr}/fact")
        check_window(item["window"], f"{ptr}/window")
        values: dict[tuple[str, str], tuple[Any, Code]] = {}
        for j, v in enumerate(item["values"]):
            value_fits(ft, v["value"], f"{ptr}/values/{j}/value")
            for c in codes(v["codes"], f"{ptr}/values/{j}/codes"):
                values[(c.system, c.code)] = (v["value"], c)
        coded.append(CodedRule(item["fact"], item["window"], codes(item["codes"], f"{ptr}/codes"), values))
    conditions = []
    for i, item in enumerate(data["conditions"]):
        ptr = f"/conditions/{i}"
        ft = fact_type(item["fact"], f"{ptr}/fact")
        value_fits(ft, item["value"], f"{ptr}/value")
        if "when_absent" in item:
            value_fits(ft, item["when_absent"], f"{ptr}/when_absent")
        conditions.append(ConditionRule(item["fact"], item["value"], codes(item["codes"], f"{ptr}/codes"),
                                        item.get("when_absent"), "when_absent" in item))
    medications = []
    line = vocab.get("line_coinfusions")
    for i, item in enumerate(data["medications"]):
        ptr = f"/medications/{i}"
        rate = item.get("rate_fact")
        if rate:
            fact_type(rate, f"{ptr}/rate_fact", "number")
        member = item.get("line_member")
        if member is not None and (line is None or member not in line.values):
            report(f"{ptr}/line_member", f"'{member}' is not a member of line_coinfusions")
        if not rate and member is None:
            report(ptr, f"medication '{item['drug']}' sets no fact", "give rate_fact or line_member")
        medications.append(MedicationRule(
            item["drug"], item["vasopressor"], codes(item["codes"], f"{ptr}/codes"), rate, item.get("quantity"),
            check_quantity(item["quantity"], f"{ptr}/quantity") if rate else {}, member))
    order_ft = vocab.get("order.drug")
    purpose_ft = vocab.get("order.purpose")
    purpose = data["order_purpose"]
    for code, value in purpose["codes"].items():
        if purpose_ft is None or value not in purpose_ft.values:
            report(f"/order_purpose/codes/{escape_pointer_token(code)}", f"'{value}' is not a value of order.purpose")
    gender = data.get("patient", {}).get("pregnant_false_for_gender", [])
    if problems:
        raise InputError(problems)
    return FhirMapping(
        file=doc.file, sha256=hashlib.sha256(doc.text.encode("utf-8")).hexdigest(),
        lookback_hours=dict(windows), observation_status=frozenset(data["observation_status"]),
        quantities=tuple(quantities), coded=tuple(coded), conditions=tuple(conditions), medications=tuple(medications),
        purpose_system=purpose["system"], purpose_codes=dict(purpose["codes"]),
        first_line_inference=purpose["first_line_when_no_vasopressor_running"],
        order_drugs=frozenset(order_ft.values if order_ft else ()), pregnant_false_for_gender=frozenset(gender),
    )


# --- what goes in ----------------------------------------------------------------


@dataclass(frozen=True)
class Located:
    """A resource and the JSON pointer to it in the request or bundle."""

    resource: dict[str, Any]
    pointer: str

    @property
    def label(self) -> str:
        """``Observation/bp-1`` (or the type alone when it has no id)."""
        rid = self.resource.get("id")
        return f"{self.resource.get('resourceType')}/{rid}" if rid else f"{self.resource.get('resourceType')} (no id)"

    def where(self, sub: str = "") -> str:
        """``Observation/bp-1 at /entry/2/resource/valueQuantity``."""
        return f"{self.label} at {self.pointer}{sub}"


@dataclass
class Sources:
    """What the input holds, and which parts of the record it covers completely."""

    resources: list[Located] = field(default_factory=list)
    orders: list[Located] = field(default_factory=list)
    conditions_complete: bool = True
    medications_complete: bool = True
    missing: list[str] = field(default_factory=list)


@dataclass
class Conversion:
    """A patient state made from FHIR, with the notes that explain it and where each fact came from."""

    state: dict[str, Any]
    notes: list[str]
    sources: dict[str, str]
    orders: list[dict[str, Any]]
    missing: list[str]
    mapping: FhirMapping

    def states(self) -> list[dict[str, Any]]:
        """The state to evaluate: one per proposed order (the order merged in), or the state alone."""
        return [{**self.state, "order": _order_fact(o)} for o in self.orders] or [self.state]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``fhir`` part of ``pressor recommend --fhir --json``)."""
        return {
            "state": self.state,
            "orders": self.orders,
            "notes": self.notes,
            "sources": self.sources,
            "missing": self.missing,
            "mapping": {"file": Path(self.mapping.file).name, "sha256": self.mapping.sha256},
        }


def _entries(bundle: Any, pointer: str, problems: list[Problem], file: str) -> Iterator[Located]:
    """Resources of a Bundle (or a single resource), located."""
    if not isinstance(bundle, dict) or not isinstance(bundle.get("resourceType"), str):
        problems.append(Problem("expected a FHIR resource (an object with resourceType)", file=file, pointer=pointer))
        return
    if bundle["resourceType"] != "Bundle":
        yield Located(bundle, pointer)
        return
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        problems.append(Problem("Bundle.entry must be an array", file=file, pointer=f"{pointer}/entry"))
        return
    for i, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, dict) else None
        ptr = f"{pointer}/entry/{i}/resource"
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            problems.append(Problem("entry has no resource with a resourceType", file=file, pointer=f"{pointer}/entry/{i}"))
            continue
        if res["resourceType"] == "Bundle":
            yield from _entries(res, ptr, problems, file)
        else:
            yield Located(res, ptr)


def from_bundle(bundle: Any, *, now: datetime, mapping: FhirMapping | None = None, file: str = "<bundle>") -> Conversion:
    """A Bundle holding the patient's record (complete for conditions and medications).

    A MedicationRequest with status ``draft`` is a proposed order.
    """
    mapping = mapping or load_mapping()
    problems: list[Problem] = []
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError.single("expected a FHIR Bundle (resourceType: Bundle)", file=file, pointer="",
                               suggestion="pass a Bundle of the patient's Patient, Observation, Condition and medication resources")
    src = Sources()
    for loc in _entries(bundle, "", problems, file):
        if loc.resource["resourceType"] == "MedicationRequest" and loc.resource.get("status") == "draft":
            src.orders.append(loc)
        else:
            src.resources.append(loc)
    if problems:
        raise FhirError(problems)
    if not any(r.resource["resourceType"] == "Patient" for r in src.resources):
        src.missing.append("Patient")
    return convert(src, now=now, mapping=mapping, file=file)


#: Prefetch keys the service asks for, and what each covers.
PREFETCH_PATIENT = "patient"
PREFETCH_OBSERVATIONS = "observations"
PREFETCH_CONDITIONS = "conditions"
PREFETCH_MED_ADMIN = "medicationAdministrations"
PREFETCH_MED_REQUEST = "medicationRequests"
PREFETCH_KEYS = (PREFETCH_PATIENT, PREFETCH_OBSERVATIONS, PREFETCH_CONDITIONS, PREFETCH_MED_ADMIN, PREFETCH_MED_REQUEST)


def prefetch_templates(mapping: FhirMapping | None = None) -> dict[str, str]:
    """The prefetch templates the service advertises (observation codes come from the mapping)."""
    mapping = mapping or load_mapping()
    codes = ",".join(dict.fromkeys(f"{c.system}|{c.code}" for c in mapping.observation_codes()))
    return {
        PREFETCH_PATIENT: "Patient/{{context.patientId}}",
        PREFETCH_OBSERVATIONS: f"Observation?patient={{{{context.patientId}}}}&code={codes}&_sort=-date",
        PREFETCH_CONDITIONS: "Condition?patient={{context.patientId}}",
        PREFETCH_MED_ADMIN: "MedicationAdministration?patient={{context.patientId}}&status=in-progress",
        PREFETCH_MED_REQUEST: "MedicationRequest?patient={{context.patientId}}&status=active",
    }


def from_hook_request(request: Mapping[str, Any], *, now: datetime, mapping: FhirMapping | None = None,
                      file: str = "<request>") -> Conversion:
    """A CDS Hooks request: prefetch (absent key = not supplied; null = supplied, nothing found) and draft orders.

    Nothing is fetched from outside: what is not supplied stays unknown and is listed in ``missing``.
    """
    mapping = mapping or load_mapping()
    problems: list[Problem] = []
    prefetch = request.get("prefetch") or {}
    src = Sources()
    for key in PREFETCH_KEYS:
        if key not in prefetch:
            src.missing.append(key)
            continue
        if prefetch[key] is None:
            continue
        src.resources.extend(_entries(prefetch[key], f"/prefetch/{escape_pointer_token(key)}", problems, file))
    drafts = (request.get("context") or {}).get("draftOrders")
    if drafts is not None:
        for loc in _entries(drafts, "/context/draftOrders", problems, file):
            if loc.resource["resourceType"] == "MedicationRequest":
                src.orders.append(loc)
    if problems:
        raise FhirError(problems)
    src.conditions_complete = PREFETCH_CONDITIONS not in src.missing
    src.medications_complete = not (PREFETCH_MED_ADMIN in src.missing and PREFETCH_MED_REQUEST in src.missing)
    return convert(src, now=now, mapping=mapping, file=file)


# --- conversion ------------------------------------------------------------------


def _codings(concept: Any) -> list[tuple[str, str]]:
    if not isinstance(concept, dict):
        return []
    return [(c.get("system"), c.get("code")) for c in concept.get("coding", []) if isinstance(c, dict)]


def _parse_time(text: Any) -> datetime | None:
    """A FHIR date, dateTime or instant as an aware datetime (a date alone is midnight UTC); None if unreadable."""
    if not isinstance(text, str):
        return None
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _tidy(x: float) -> float | int:
    r = round(float(x) + 0.0, 6)
    return int(r) if r == int(r) else r


def _age_years(birth: date, now: datetime) -> float:
    """Completed years; for children under 2, completed months as a fraction of a year."""
    today = now.astimezone(timezone.utc).date()
    years = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    if years >= 2:
        return years
    months = (today.year - birth.year) * 12 + today.month - birth.month - (today.day < birth.day)
    return round(max(months, 0) / 12.0, 2)


class _Converter:
    """One conversion: collects facts, notes, sources and problems."""

    def __init__(self, src: Sources, now: datetime, mapping: FhirMapping, file: str) -> None:
        self.src, self.now, self.m, self.file = src, now, mapping, file
        self.facts: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.pointers: dict[str, str] = {}
        self.notes: list[str] = []
        self.problems: list[Problem] = []
        self.by_ref = self._index()
        self.running_vasopressors: list[str] = []

    def _index(self) -> dict[str, dict[str, Any]]:
        out = {}
        for loc in self.src.resources + self.src.orders:
            r = loc.resource
            if r.get("id"):
                out[f"{r['resourceType']}/{r['id']}"] = r
        return out

    def problem(self, loc: Located, sub: str, message: str, suggestion: str | None = None) -> None:
        self.problems.append(Problem(f"{loc.label}: {message}", file=self.file, pointer=loc.pointer + sub, suggestion=suggestion))

    def set(self, fact: str, value: Any, loc: Located, sub: str, when: datetime | None = None) -> None:
        self.facts[fact] = value
        self.sources[fact] = loc.where(sub) + (f" ({_iso(when)})" if when else "")
        self.pointers[fact] = loc.pointer + sub

    def of_type(self, *types: str) -> Iterator[Located]:
        return (loc for loc in self.src.resources if loc.resource["resourceType"] in types)

    # -- patient ------------------------------------------------------------------
    def patient(self) -> None:
        patients = list(self.of_type("Patient"))
        if not patients:
            return
        if len(patients) > 1:
            self.notes.append(f"{len(patients)} Patient resources; using {patients[0].label}")
        loc = patients[0]
        birth = loc.resource.get("birthDate")
        if birth is not None:
            try:
                born = date.fromisoformat(birth) if isinstance(birth, str) and len(birth) == 10 else None
            except ValueError:
                born = None
            if born is None:
                self.notes.append(f"{loc.label}: birthDate '{birth}' is not a full date; age left unknown")
            elif born > self.now.date():
                self.problem(loc, "/birthDate", f"birthDate {birth} is after the evaluation time")
            else:
                self.set("patient.age_years", _age_years(born, self.now), loc, "/birthDate")
        gender = loc.resource.get("gender")
        if gender in self.m.pregnant_false_for_gender:
            self.set("patient.pregnant", False, loc, "/gender")
            self.notes.append(f"patient.pregnant = false from {loc.label} gender '{gender}'")

    # -- observations -------------------------------------------------------------
    def _time_of(self, loc: Located) -> datetime | None:
        r = loc.resource
        for key in ("effectiveDateTime", "effectiveInstant"):
            if key in r:
                return _parse_time(r[key])
        period = r.get("effectivePeriod")
        if isinstance(period, dict):
            return _parse_time(period.get("end") or period.get("start"))
        return _parse_time(r.get("issued"))

    def _matches(self, loc: Located, index: Mapping[tuple[str, str], Any]) -> Iterator[tuple[Any, str, dict[str, Any], tuple[str, str]]]:
        """(rule, pointer suffix, element holding the value, matched code) for the Observation and its components."""
        r = loc.resource
        for sc in _codings(r.get("code")):
            if sc in index:
                yield index[sc], "", r, sc
        for i, comp in enumerate(r.get("component") or []):
            if isinstance(comp, dict):
                for sc in _codings(comp.get("code")):
                    if sc in index:
                        yield index[sc], f"/component/{i}", comp, sc

    def observations(self) -> None:
        quantity_index = self.m.quantity_index()
        coded_index = {(c.system, c.code): rule for rule in self.m.coded for c in rule.codes}
        latest: dict[str, tuple[datetime, Any, Located, str, list[Code]]] = {}
        stale: dict[str, list[str]] = {}
        for loc in self.of_type("Observation"):
            matches = list(self._matches(loc, quantity_index)) + list(self._matches(loc, coded_index))
            if not matches:
                continue
            status = loc.resource.get("status")
            if status not in self.m.observation_status:
                self.notes.append(f"{loc.label}: status '{status}' is not used")
                continue
            when = self._time_of(loc)
            if when is None:
                self.notes.append(f"{loc.label}: no readable effective time; ignored")
                continue
            if when > self.now + timedelta(minutes=5):
                self.notes.append(f"{loc.label}: dated {_iso(when)}, after the evaluation time; ignored")
                continue
            for rule, sub, element, matched in matches:
                window = self.m.lookback_hours[rule.window]
                if when < self.now - timedelta(hours=window):
                    stale.setdefault(rule.fact, []).append(f"{loc.label} ({_iso(when)})")
                    continue
                value = self._observed(rule, loc, sub, element)
                if value is None:
                    continue
                used = [c for c in rule.codes if (c.system, c.code) == matched]
                if isinstance(rule, CodedRule):
                    value, value_code = value
                    used.append(value_code)
                held = latest.get(rule.fact)
                if held is None or when > held[0]:
                    latest[rule.fact] = (when, value, loc, sub, [c for c in used if not c.verified])
        for fact, (when, value, loc, sub, unverified) in latest.items():
            self.set(fact, value, loc, sub, when)
            for code in unverified:
                self.notes.append(f"{fact} comes from code {code.code} ({code.display}), which is not verified in the mapping")
        for fact, items in stale.items():
            window = next(self.m.lookback_hours[r.window] for r in (*self.m.quantities, *self.m.coded) if r.fact == fact)
            used = "" if fact in latest else f"; {fact} left unknown"
            self.notes.append(f"ignored {len(items)} observation(s) for {fact} older than {window:g} h: {', '.join(items)}{used}")

    def _observed(self, rule: Any, loc: Located, sub: str, element: dict[str, Any]) -> Any:
        if isinstance(rule, CodedRule):
            concept = element.get("valueCodeableConcept")
            for sc in _codings(concept):
                if sc in rule.values:
                    return rule.values[sc]
            if concept is not None:
                self.notes.append(f"{loc.label}: value of {rule.fact} not recognised; ignored")
            return None
        if "valueQuantity" not in element:
            if "dataAbsentReason" not in element:
                self.problem(loc, sub, f"no valueQuantity for {rule.fact}", "give the value as valueQuantity with a UCUM code")
            return None
        converted = self._convert(element["valueQuantity"], rule.factors, rule.fact, loc, f"{sub}/valueQuantity")
        return converted

    def _convert(self, q: Any, factors: Mapping[str, float], fact: str, loc: Located, sub: str) -> float | int | None:
        if not isinstance(q, dict):
            self.problem(loc, sub, "a Quantity must be an object")
            return None
        value = q.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.problem(loc, f"{sub}/value", f"{value!r} is not a number", "a Quantity needs a numeric value")
            return None
        if q.get("comparator"):
            self.notes.append(f"{loc.label}: value {q['comparator']}{value} is not exact; ignored for {fact}")
            return None
        unit = q.get("code") if q.get("code") is not None else q.get("unit")
        if unit is None:
            self.problem(loc, sub, f"no unit for {fact}", f"give a UCUM code: one of {', '.join(factors)}")
            return None
        if q.get("code") is not None and q.get("system") not in (None, UCUM):
            self.problem(loc, f"{sub}/system", f"unit system '{q.get('system')}' is not UCUM ({UCUM})")
            return None
        factor = factors.get(unit)
        if factor is None:
            self.problem(loc, f"{sub}/code" if q.get("code") is not None else f"{sub}/unit",
                         f"unit '{unit}' is not accepted for {fact}", f"accepted UCUM codes: {', '.join(factors)}")
            return None
        if factor != 1:
            self.notes.append(f"{fact}: {value:g} {unit} from {loc.label} converted to {_tidy(value * factor):g}")
        return _tidy(value * factor)

    # -- conditions ---------------------------------------------------------------
    def conditions(self) -> None:
        index = {(c.system, c.code): rule for rule in self.m.conditions for c in rule.codes}
        found: dict[str, list[tuple[Any, Located]]] = {}
        for loc in self.of_type("Condition"):
            r = loc.resource
            rules = [index[sc] for sc in _codings(r.get("code")) if sc in index]
            if not rules:
                continue
            clinical = {c for _, c in _codings(r.get("clinicalStatus"))}
            verification = {c for _, c in _codings(r.get("verificationStatus"))}
            if verification & _VOID_VERIFICATION or (clinical and not clinical & _ACTIVE_CONDITION):
                continue
            if not clinical:
                self.notes.append(f"{loc.label}: no clinicalStatus; read as active")
            for rule in rules:
                found.setdefault(rule.fact, []).append((rule.value, loc))
        for fact, items in found.items():
            values = {v for v, _ in items}
            if fact in self.facts and values != {self.facts[fact]}:
                self.notes.append(f"{fact}: {self.sources[fact]} and Condition(s) "
                                  f"{', '.join(l.label for _, l in items)} disagree; left unknown")
                self.facts.pop(fact)
                self.sources.pop(fact)
                continue
            if len(values) > 1:
                self.notes.append(f"{fact}: conflicting Conditions ({', '.join(f'{l.label} = {v}' for v, l in items)}); left unknown")
                continue
            self.set(fact, items[0][0], items[0][1], "/code")
        for rule in self.m.conditions:
            if rule.has_when_absent and rule.fact not in found and rule.fact not in self.facts and self.src.conditions_complete:
                self.facts[rule.fact] = rule.when_absent
                self.sources[rule.fact] = "no matching active Condition in the supplied conditions"
                self.notes.append(f"{rule.fact} = {str(rule.when_absent).lower()}: no active Condition coded "
                                  f"{'/'.join(c.code for c in rule.codes)} among the supplied conditions")

    # -- medications --------------------------------------------------------------
    def _drug_codes(self, loc: Located) -> list[tuple[str, str]]:
        r = loc.resource
        codes = _codings(r.get("medicationCodeableConcept"))
        ref = (r.get("medicationReference") or {}).get("reference")
        if isinstance(ref, str):
            med = None
            if ref.startswith("#"):
                med = next((c for c in r.get("contained", []) if isinstance(c, dict) and c.get("id") == ref[1:]), None)
            else:
                med = self.by_ref.get("/".join(ref.split("/_history")[0].split("/")[-2:]))
            if med is not None:
                codes += _codings(med.get("code"))
                for ing in med.get("ingredient") or []:
                    if isinstance(ing, dict):
                        codes += _codings(ing.get("itemCodeableConcept"))
        return codes

    def _drug(self, loc: Located) -> MedicationRule | None:
        index = {(c.system, c.code): m for m in self.m.medications for c in m.codes}
        return next((index[sc] for sc in self._drug_codes(loc) if sc in index), None)

    def _rate(self, loc: Located, med: MedicationRule) -> tuple[Any, str] | None:
        """(converted rate or None if unknown, pointer suffix) for a running infusion."""
        r = loc.resource
        if r["resourceType"] == "MedicationAdministration":
            holders = [(r.get("dosage"), "/dosage")]
        else:
            holders = []
            for i, di in enumerate(r.get("dosageInstruction") or []):
                for j, dr in enumerate((di or {}).get("doseAndRate") or []):
                    holders.append((dr, f"/dosageInstruction/{i}/doseAndRate/{j}"))
        for holder, sub in holders:
            if not isinstance(holder, dict):
                continue
            if "rateQuantity" in holder:
                return self._convert(holder["rateQuantity"], med.factors, med.rate_fact, loc, f"{sub}/rateQuantity"), f"{sub}/rateQuantity"
            if "rateRatio" in holder:
                return self._ratio(holder["rateRatio"], med, loc, f"{sub}/rateRatio"), f"{sub}/rateRatio"
        return None, ""

    def _ratio(self, ratio: Any, med: MedicationRule, loc: Located, sub: str) -> Any:
        num, den = (ratio or {}).get("numerator"), (ratio or {}).get("denominator")
        if not isinstance(num, dict) or not isinstance(den, dict):
            self.problem(loc, sub, "rateRatio needs a numerator and a denominator")
            return None
        dv = den.get("value", 1)
        if isinstance(dv, bool) or not isinstance(dv, (int, float)) or dv <= 0:
            self.problem(loc, f"{sub}/denominator/value", f"{dv!r} is not a positive number")
            return None
        unit = f"{num.get('code', num.get('unit'))}/{den.get('code', den.get('unit'))}"
        q = {"value": num.get("value"), "code": unit, "system": num.get("system")}
        if isinstance(q["value"], (int, float)) and not isinstance(q["value"], bool):
            q["value"] = q["value"] / dv
        return self._convert(q, med.factors, med.rate_fact, loc, f"{sub}/numerator")

    def _running(self, loc: Located) -> bool:
        r = loc.resource
        if r["resourceType"] == "MedicationAdministration":
            if r.get("status") != "in-progress":
                return False
            end = _parse_time((r.get("effectivePeriod") or {}).get("end"))
            return end is None or end > self.now
        return r.get("status") == "active" and r.get("intent") in _ORDER_INTENTS

    def medications(self) -> None:
        running: dict[str, tuple[int, datetime, Located]] = {}
        for loc in self.of_type("MedicationAdministration", "MedicationRequest"):
            med = self._drug(loc)
            if med is None or not self._running(loc):
                continue
            r = loc.resource
            rank = 1 if r["resourceType"] == "MedicationAdministration" else 0
            when = (_parse_time((r.get("effectivePeriod") or {}).get("start")) or _parse_time(r.get("effectiveDateTime"))
                    or _parse_time(r.get("authoredOn")) or datetime.min.replace(tzinfo=timezone.utc))
            held = running.get(med.drug)
            if held is None or (rank, when) > held[:2]:
                running[med.drug] = (rank, when, loc)
        not_running = []
        for med in self.m.medications:
            if med.drug in running:
                loc = running[med.drug][2]
                if med.line_member:
                    self.set("line_coinfusions", [med.line_member], loc, "")
                    self.notes.append(f"{med.drug.replace('_', ' ')} is running ({loc.label}); FHIR does not say which line "
                                      "it shares, so it is listed as sharing the norepinephrine line: check the lines")
                if med.rate_fact:
                    rate, sub = self._rate(loc, med)
                    if rate is None:
                        if not sub:
                            self.notes.append(f"{med.drug} is running ({loc.label}) but no rate is given; {med.rate_fact} left unknown")
                    else:
                        self.set(med.rate_fact, rate, loc, sub)
                code = next((c for c in med.codes if not c.verified), None)
                if code is not None:
                    self.notes.append(f"{med.drug} recognised by code {code.code}, which is not verified in the mapping")
            elif med.rate_fact and self.src.medications_complete:
                self.facts[med.rate_fact] = 0
                self.sources[med.rate_fact] = "no running administration or active order in the supplied medications"
                not_running.append(med.drug)
        if not_running:
            self.notes.append(f"not running per the supplied medications (recorded as 0): {', '.join(not_running)}")
        self.running_vasopressors = [m.drug for m in self.m.medications if m.vasopressor and m.drug in running]

    # -- proposed orders ----------------------------------------------------------
    def orders(self) -> list[dict[str, Any]]:
        out = []
        for loc in self.src.orders:
            med = self._drug(loc)
            if med is None or med.drug not in self.m.order_drugs:
                name = med.drug if med else "an unrecognised medication"
                self.notes.append(f"draft order {loc.label} ({name}) is not one the protocol reasons about; ignored")
                continue
            order: dict[str, Any] = {"drug": med.drug, "source": loc.where()}
            purposes = [self.m.purpose_codes[c] for s, c in
                        (sc for rc in loc.resource.get("reasonCode") or [] for sc in _codings(rc))
                        if s == self.m.purpose_system and c in self.m.purpose_codes]
            if purposes:
                order["purpose"] = purposes[0]
            elif (self.m.first_line_inference and med.vasopressor and self.src.medications_complete
                  and not self.running_vasopressors):
                order["purpose"] = "first_line"
                self.notes.append(f"order {loc.label}: purpose first_line, because no vasopressor is running per the supplied medications")
            else:
                why = "the medications were not supplied" if not self.src.medications_complete else (
                    f"{', '.join(self.running_vasopressors)} already running" if med.vasopressor and self.running_vasopressors
                    else "no reasonCode in " + self.m.purpose_system)
                self.notes.append(f"order {loc.label}: purpose unknown ({why}); order.purpose left unknown")
            out.append(order)
        return out


def convert(src: Sources, *, now: datetime, mapping: FhirMapping, file: str = "<bundle>") -> Conversion:
    """Turn located resources into a checked patient state; raise :class:`FhirError` listing every problem."""
    c = _Converter(src, now, mapping, file)
    c.patient()
    c.observations()
    c.conditions()
    c.medications()
    orders = c.orders()
    if c.problems:
        raise FhirError(c.problems)
    state = _nest(c.facts)
    try:
        for s in [{**state, "order": _order_fact(o)} for o in orders] or [state]:
            check_state(s)
    except PatientStateError as exc:
        raise FhirError([_locate(p, c, file) for p in exc.problems]) from exc
    return Conversion(state, c.notes, dict(sorted(c.sources.items())), orders, list(src.missing), mapping)


def _order_fact(order: Mapping[str, Any]) -> dict[str, Any]:
    """The ``order`` section of a state from a proposed order (its source stays in the notes)."""
    return {k: v for k, v in order.items() if k in ("drug", "purpose")}


def _locate(p: Problem, c: _Converter, file: str) -> Problem:
    """A patient-state problem, pointed back at the resource the fact came from."""
    fact = p.fact_path
    if fact and fact.count(".") > 1:
        fact = ".".join(fact.split(".")[:2])
    origin = c.sources.get(fact or "")
    message = f"{p.message} (from {origin})" if origin else p.message
    return Problem(message, file=file, pointer=c.pointers.get(fact or "", p.pointer), fact_path=p.fact_path,
                   suggestion=p.suggestion)


def _nest(facts: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in sorted(facts.items()):
        if "." in path:
            section, key = path.split(".", 1)
            out.setdefault(section, {})[key] = value
        else:
            out[path] = value
    return out
