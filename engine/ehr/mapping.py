"""The FHIR mapping (``rules/fhir/mapping.yaml``): which codes feed which fact, in which unit.

Checked against ``schemas/fhir-mapping.schema.json`` and the patient-state vocabulary when it
loads; unit factors are plain numbers computed then; value-set names are resolved against
``rules/fhir/valuesets.json`` (plus the mapping's ``local_codes``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError, Problem
from ..evaluation.compile import state_vocabulary
from ..evaluation.load import Document, escape_pointer_token, load_document
from ..evaluation.validate import STATE_SCHEMA, schema, schema_problems
from .terminology import Code, ValueSets, load_valuesets

MAPPING_SCHEMA = "fhir-mapping.schema.json"
#: Default FHIR size limit when the mapping gives none (32 MiB).
DEFAULT_MAX_BUNDLE_BYTES = 32 * 1024 * 1024


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
    """An active Condition in ``valueset`` sets ``fact`` to ``value``; a refuted one to ``refuted_value``."""

    fact: str
    value: Any
    valueset: str
    when_absent: Any = None
    has_when_absent: bool = False
    refuted_value: Any = None
    has_refuted_value: bool = False


@dataclass(frozen=True)
class MedicationRule:
    """A drug: its rate fact (and accepted rate units) or the line_coinfusions member it sets."""

    drug: str
    vasopressor: bool
    valueset: str
    rate_fact: str | None = None
    quantity: str | None = None
    factors: Mapping[str, float] = field(default_factory=dict)
    line_member: str | None = None
    concentration_fact: str | None = None


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
    fluids: Mapping[str, str]
    recognised: tuple[str, ...]
    access: Mapping[str, str]
    shock_recognition: tuple[str, ...]
    trusted_complete: frozenset[str]
    factors: Mapping[str, Mapping[str, float]]
    valuesets: ValueSets
    purpose_system: str
    purpose_codes: Mapping[str, str]
    first_line_inference: bool
    order_drugs: frozenset[str]
    pregnant_false_for_gender: frozenset[str]
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    #: The site's time zone (IANA name): a FHIR time without a zone is read in it, and noted.
    site_timezone: str = "UTC"

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

    def with_trusted(self, names: list[str] | tuple[str, ...] | None) -> "FhirMapping":
        """The same mapping also trusting complete lists for ``names``: fact paths, or ``medications`` (every rate
        fact) or ``conditions`` (every condition fact with a ``when_absent``). Unknown names are refused."""
        if not names:
            return self
        groups = {"medications": {m.rate_fact for m in self.medications if m.rate_fact},
                  "conditions": {c.fact for c in self.conditions if c.has_when_absent}}
        known = set().union(*groups.values())
        out = set(self.trusted_complete)
        for name in names:
            if name in groups:
                out |= groups[name]
            elif name in known:
                out.add(name)
            else:
                raise InputError.single(f"cannot trust a complete list for '{name}'",
                                        suggestion=f"one of medications, conditions, {', '.join(sorted(known))}")
        return replace(self, trusted_complete=frozenset(out))

    def quantity_index(self) -> dict[tuple[str, str], QuantityRule]:
        """(system, code) -> numeric observation rule."""
        return {(c.system, c.code): r for r in self.quantities for c in r.codes}

    def coded_index(self) -> dict[tuple[str, str], CodedRule]:
        """(system, code) -> coded observation rule."""
        return {(c.system, c.code): r for r in self.coded for c in r.codes}

    def observations(self) -> tuple[QuantityRule | CodedRule, ...]:
        """Every observation rule, numeric then coded."""
        return (*self.quantities, *self.coded)

    def observation_codes(self) -> list[Code]:
        """Every observation code the mapping reads (for prefetch templates)."""
        return [c for r in self.quantities for c in r.codes] + [c for r in self.coded for c in r.codes]

    def drug_codes(self, drug: str) -> tuple[Code, ...]:
        """The codes of one drug's value set, the ingredient's first (confirmed, then by length)."""
        med = next(m for m in self.medications if m.drug == drug)
        return tuple(sorted(self.valuesets.codes(med.valueset),
                            key=lambda c: (c.display.lower() != drug.replace("_", " "), not c.verified, len(c.display))))

    @property
    def longest_window_hours(self) -> float:
        """The longest look-back window: older observations are never read."""
        return max(self.lookback_hours.values())


def default_mapping_path() -> Path:
    """The bundled mapping (``pressor.rules/fhir/mapping.yaml``)."""
    from ... import rules

    return Path(rules.DIR, "fhir", "mapping.yaml")


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
    local = {name: [{**c, "system": systems.get(c["system"], c["system"])} for c in codes]
             for name, codes in data.get("local_codes", {}).items()}
    valuesets = load_valuesets(local)

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

    def valueset(name: str, pointer: str) -> str:
        if name not in valuesets.sets:
            report(pointer, f"unknown value set '{name}'", "see rules/fhir/valuesets.json (or add it under local_codes)")
        return name

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
        for key in ("value", "when_absent", "refuted_value"):
            if key in item:
                value_fits(ft, item[key], f"{ptr}/{key}")
        conditions.append(ConditionRule(item["fact"], item["value"], valueset(item["valueset"], f"{ptr}/valueset"),
                                        item.get("when_absent"), "when_absent" in item,
                                        item.get("refuted_value"), "refuted_value" in item))
    medications = []
    line = vocab.get("line_coinfusions")
    for i, item in enumerate(data["medications"]):
        ptr = f"/medications/{i}"
        rate = item.get("rate_fact")
        if rate:
            fact_type(rate, f"{ptr}/rate_fact", "number")
        if item.get("concentration_fact"):
            fact_type(item["concentration_fact"], f"{ptr}/concentration_fact", "number")
        member = item.get("line_member")
        if member is not None and (line is None or member not in line.values):
            report(f"{ptr}/line_member", f"'{member}' is not a member of line_coinfusions")
        if not rate and member is None:
            report(ptr, f"medication '{item['drug']}' sets no fact", "give rate_fact or line_member")
        medications.append(MedicationRule(
            item["drug"], item["vasopressor"], valueset(item["valueset"], f"{ptr}/valueset"), rate, item.get("quantity"),
            check_quantity(item["quantity"], f"{ptr}/quantity") if rate else {}, member, item.get("concentration_fact")))
    fluids = {valueset(f["valueset"], f"/fluids/{i}/valueset"): f["counts_as"] for i, f in enumerate(data["fluids"])}
    access = {}
    for i, a in enumerate(data["access"]):
        fact_type(a["fact"], f"/access/{i}/fact", "boolean")
        access[valueset(a["valueset"], f"/access/{i}/valueset")] = a["fact"]
    recognised = tuple(valueset(n, f"/recognised/{i}") for i, n in enumerate(data.get("recognised", [])))
    shock = tuple(valueset(n, f"/shock_recognition/{i}") for i, n in enumerate(data.get("shock_recognition", [])))
    for i, fact in enumerate(data.get("trusted_complete", [])):
        fact_type(fact, f"/trusted_complete/{i}")
    for q in ("ml", "mcg_ml"):
        if q not in factors:
            report("/quantities", f"quantity '{q}' is needed (fluid volumes, bag concentrations)")
    order_ft = vocab.get("order.drug")
    purpose_ft = vocab.get("order.purpose")
    purpose = data["order_purpose"]
    for code, value in purpose["codes"].items():
        if purpose_ft is None or value not in purpose_ft.values:
            report(f"/order_purpose/codes/{escape_pointer_token(code)}", f"'{value}' is not a value of order.purpose")
    gender = data.get("patient", {}).get("pregnant_false_for_gender", [])
    zone = data.get("site_timezone", "UTC")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(zone)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        report("/site_timezone", f"'{zone}' is not a time zone this machine knows",
               suggestion="an IANA name such as Europe/Paris or America/New_York")
    if problems:
        raise InputError(problems)
    return FhirMapping(
        file=doc.file, sha256=hashlib.sha256(doc.text.encode("utf-8")).hexdigest(),
        lookback_hours=dict(windows), observation_status=frozenset(data["observation_status"]),
        quantities=tuple(quantities), coded=tuple(coded), conditions=tuple(conditions), medications=tuple(medications),
        fluids=fluids, recognised=recognised, access=access, shock_recognition=shock,
        trusted_complete=frozenset(data.get("trusted_complete", [])), factors=factors, valuesets=valuesets,
        purpose_system=purpose["system"], purpose_codes=dict(purpose["codes"]),
        first_line_inference=purpose["first_line_when_no_vasopressor_running"],
        order_drugs=frozenset(order_ft.values if order_ft else ()), pregnant_false_for_gender=frozenset(gender),
        max_bundle_bytes=data.get("max_bundle_bytes", DEFAULT_MAX_BUNDLE_BYTES),
        site_timezone=zone,
    )
