"""Located, shape-checked resources -> a patient state, a timeline, and where every fact came from.

Open world: absence is unknown. A fact is set only by what the record says (an active or refuted
Condition, an observation in its look-back window, a running or explicitly stopped infusion), or
by a complete list the mapping declares trustworthy for that fact. A resource that cannot be
read (bad shape, no unit, a unit outside the table, ``dataAbsentReason``, same-time conflicting
values) leaves its facts unknown with a note; it never refuses the whole patient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Iterator, Mapping

from ..errors import PatientStateError, Problem
from ..evaluation.compile import state_vocabulary
from ..evaluation.validate import STATE_SCHEMA, check_state, schema
from ..model import RulePack
from .fhir_values import UCUM, ACTIVE_CONDITION, UNUSABLE_OBS, VOID, age_years, codings, iso, parse_time, tidy
from .medications import Medications
from .mapping import CodedRule, FhirMapping
from .reading import FhirError, Located, Sources
from .terminology import Code
from .timeline import Provenance, Reading, Timeline, apply

class PatientDeceased(FhirError):
    """The record says the patient has died: no advice is given (the message says where it says so)."""

    kind = "patient_deceased"


@dataclass
class Conversion:
    """A patient state made from FHIR (or a timeline), with notes, provenance and the timeline."""

    state: dict[str, Any]
    notes: list[str]
    sources: dict[str, str]
    orders: list[dict[str, Any]]
    missing: list[str]
    mapping: FhirMapping | None
    facts: dict[str, dict[str, Any]]
    timeline: Timeline | None = None
    #: Why facts are unknown because the record was cut, truncated or a reference could not be resolved
    #: (in words, for the cards; issue 22).
    gaps: list[str] = field(default_factory=list)

    def states(self) -> list[dict[str, Any]]:
        """The state to evaluate: one per proposed order (the order merged in), or the state alone."""
        return [{**self.state, "order": _order_fact(o)} for o in self.orders] or [self.state]

    def unless_states(self) -> list[tuple[int, dict[str, Any], str]]:
        """``(i, state, words)`` for each proposed order ``i`` whose purpose is unknown but would be first-line
        unless ``words`` (``order["unless"]``): the state with the order first-line and the unknown vasopressor
        rates at 0. Evaluated beside the real state, so that a ban on the order is qualified, not silent."""
        out = []
        for i, o in enumerate(self.orders):
            unless = o.get("unless")
            if not unless:
                continue
            state = {k: dict(v) if isinstance(v, dict) else v for k, v in self.state.items()}
            for path, value in unless["assume"].items():
                section, key = path.split(".", 1)
                state.setdefault(section, {})[key] = value
            state["order"] = {"drug": o["drug"], "purpose": unless["purpose"]}
            out.append((i, state, unless["text"]))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``fhir`` part of ``pressor recommend --fhir --json``)."""
        out = {
            "state": self.state,
            "orders": self.orders,
            "notes": self.notes,
            "sources": self.sources,
            "missing": self.missing,
            "facts": self.facts,
        }
        if self.gaps:
            out["gaps"] = self.gaps
        if self.mapping is not None:
            from pathlib import Path

            out["mapping"] = {"file": Path(self.mapping.file).name, "sha256": self.mapping.sha256,
                              "valuesets": self.mapping.valuesets.version}
        return out


def _walk_codings(node: Any, out: list[tuple[str, str]], depth: int = 0) -> None:
    """Every readable (system, code) anywhere in a resource (for a rejected one), to know which facts it touched."""
    if depth > 12:
        return
    if isinstance(node, dict):
        s, c = node.get("system"), node.get("code")
        if isinstance(s, str) and isinstance(c, str):
            out.append((s, c))
        for v in node.values():
            _walk_codings(v, out, depth + 1)
    elif isinstance(node, list):
        for v in node:
            _walk_codings(v, out, depth + 1)


def relevance(mapping: FhirMapping, now: datetime):
    """A shape-tolerant filter: observations of codes the mapping reads and within the longest look-back window.

    Older matching observations are only counted (``Sources.stale``); everything else passes to the shape check.
    """
    qi, ci = mapping.quantity_index(), mapping.coded_index()
    horizon = now - timedelta(hours=mapping.longest_window_hours)
    surely_older = (horizon - timedelta(days=2)).date().isoformat()  # any date string before this is outside every window

    def loose(concept: Any) -> list[tuple[Any, Any]]:
        coding = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(coding, list):
            return [("?", "?")] if concept is not None else []
        return [(c.get("system"), c.get("code")) if isinstance(c, dict) and isinstance(c.get("system"), (str, type(None)))
                else ("?", "?") for c in coding]  # a system that is not text is unreadable too (and unhashable)

    def relevant(loc: Located, src: Sources) -> bool:
        if loc.type != "Observation":
            return True
        r = loc.resource
        found = loose(r.get("code"))
        comps = r.get("component")
        if isinstance(comps, list):
            for comp in comps:
                found += loose(comp.get("code")) if isinstance(comp, dict) else [("?", "?")]
        elif comps is not None:
            return True
        facts = [(qi[sc] if sc in qi else ci[sc]).fact for sc in found if isinstance(sc[1], str) and (sc in qi or sc in ci)]
        if not facts:
            return any(not isinstance(sc[1], str) or sc == ("?", "?") for sc in found)  # unreadable: let the shape check say so
        when = r.get("effectiveDateTime") or r.get("effectiveInstant")
        if isinstance(when, str) and len(when) >= 10 and when[:10] < surely_older and when[:4].isdigit():
            for fact in facts:
                src.stale.setdefault(fact, []).append(f"{loc.label} ({when})")
            return False
        return True

    return relevant


class Converter(Medications):
    """One conversion: facts, their sources, notes, and the timeline."""

    def __init__(self, src: Sources, now: datetime, mapping: FhirMapping, file: str) -> None:
        self.src, self.now, self.m, self.file = src, now, mapping, file
        from zoneinfo import ZoneInfo

        self.zone = ZoneInfo(mapping.site_timezone)
        self.zoneless: list[str] = []  # times the record gave without a zone (read in the site's)
        self.vs = mapping.valuesets
        self.facts: dict[str, Any] = {}
        self.sources: dict[str, list[str]] = {}
        self.pointers: dict[str, str] = {}
        self.unknown: dict[str, str] = {}
        self.notes: list[str] = list(src.notes)
        self.tl = Timeline()
        self.by_ref: dict[str, dict[str, Any]] = {}
        for loc in src.resources + src.orders:
            rid = loc.resource.get("id")
            if isinstance(rid, str):
                self.by_ref[f"{loc.type}/{rid}"] = loc.resource
            if loc.full_url:
                self.by_ref[loc.full_url] = loc.resource
        self.drugs = {m.drug: m for m in mapping.medications}
        self.med_sets = {m.valueset: m for m in mapping.medications}
        self.blocked: set[str] = set()  # facts a rejected or unidentifiable resource may have fed
        self.gaps: list[str] = []  # facts unknown because a reference could not be resolved, in words

    # -- bookkeeping ----------------------------------------------------------------
    def time(self, text: Any) -> datetime | None:
        """:func:`parse_time` in the site's zone, remembering times given without one."""
        return parse_time(text, self.zone, self.zoneless)

    def set(self, fact: str, value: Any, loc: Located, sub: str, when: datetime | None = None) -> None:
        self.facts[fact] = value
        self.sources[fact] = [loc.where(sub) + (f" ({iso(when)})" if when else "")]
        self.pointers[fact] = loc.pointer + sub
        self.unknown.pop(fact, None)

    def leave_unknown(self, fact: str, why: str) -> None:
        self.facts.pop(fact, None)
        self.sources.pop(fact, None)
        self.unknown[fact] = why

    def of_type(self, *types: str) -> Iterator[Located]:
        return (loc for loc in self.src.resources if loc.type in types)

    # -- rejected resources ---------------------------------------------------------
    def rejected(self) -> None:
        qi, ci = self.m.quantity_index(), self.m.coded_index()
        for loc, pointer, message in self.src.rejected:
            found: list[tuple[str, str]] = []
            _walk_codings(loc.resource, found)
            facts = {qi[sc].fact for sc in found if sc in qi} | {ci[sc].fact for sc in found if sc in ci}
            for name, _ in self.vs.members(found):
                facts |= {r.fact for r in self.m.conditions if r.valueset == name}
                rate_fact = self.med_sets[name].rate_fact if name in self.med_sets else None
                if rate_fact:
                    facts.add(rate_fact)
            if loc.type in ("MedicationAdministration", "MedicationRequest") and not facts:
                facts = {m.rate_fact for m in self.m.medications if m.rate_fact}
            why = f"{loc.label} could not be read ({message} at {pointer})"
            self.notes.append(f"{why}; not used" + (f"; left unknown: {', '.join(sorted(facts))}" if facts else ""))
            self.blocked |= facts
            for fact in facts:
                self.unknown.setdefault(fact, why)

    # -- patient ----------------------------------------------------------------------
    def patient(self) -> None:
        for loc in self.of_type("Patient"):
            r = loc.resource
            died = self.time(r.get("deceasedDateTime")) if "deceasedDateTime" in r else None
            if r.get("deceasedBoolean") is True or (died is not None and died <= self.now) or (
                    "deceasedDateTime" in r and died is None and len(str(r["deceasedDateTime"])) >= 4):
                when = f" ({r['deceasedDateTime']})" if "deceasedDateTime" in r else ""
                raise PatientDeceased.single(f"{loc.label} is recorded as deceased{when}; no advice is given",
                                             file=self.file, pointer=f"{loc.pointer}/"
                                             + ("deceasedDateTime" if "deceasedDateTime" in r else "deceasedBoolean"),
                                             suggestion="check that this is the right patient")
            birth = loc.resource.get("birthDate")
            if birth is not None:
                born = None
                try:
                    born = date.fromisoformat(birth) if len(birth) == 10 else None
                except ValueError:
                    pass
                if born is None:
                    self.notes.append(f"{loc.label}: birthDate '{birth}' is not a full date; age left unknown")
                    self.unknown["patient.age_years"] = f"{loc.label} birthDate '{birth}' is not a full date"
                elif born > self.now.date():
                    self.notes.append(f"{loc.label}: birthDate {birth} is after the evaluation time; age left unknown")
                    self.unknown["patient.age_years"] = f"{loc.label} birthDate is after the evaluation time"
                else:
                    self.set("patient.age_years", age_years(born, self.now), loc, "/birthDate")
            gender = loc.resource.get("gender")
            if gender in self.m.pregnant_false_for_gender:
                self.set("patient.pregnant", False, loc, "/gender")
                self.notes.append(f"patient.pregnant = false from {loc.label} gender '{gender}'")

    # -- observations -------------------------------------------------------------------
    def _time_of(self, r: dict[str, Any]) -> datetime | None:
        for key in ("effectiveDateTime", "effectiveInstant"):
            if key in r:
                return self.time(r[key])
        period = r.get("effectivePeriod")
        if isinstance(period, dict):
            return self.time(period.get("end") or period.get("start"))
        return self.time(r.get("issued"))

    def _matches(self, loc: Located, qi: Mapping, ci: Mapping) -> Iterator[tuple[Any, str, dict[str, Any], tuple[str, str]]]:
        r = loc.resource
        for sc in codings(r.get("code")):
            rule = qi.get(sc) or ci.get(sc)
            if rule is not None:
                yield rule, "", r, sc
        for i, comp in enumerate(r.get("component") or []):
            for sc in codings(comp.get("code")):
                rule = qi.get(sc) or ci.get(sc)
                if rule is not None:
                    yield rule, f"/component/{i}", comp, sc

    def observations(self) -> None:
        qi, ci = self.m.quantity_index(), self.m.coded_index()
        horizon = self.now - timedelta(hours=self.m.longest_window_hours)
        stale: dict[str, list[str]] = {k: list(v) for k, v in self.src.stale.items()}
        readings: dict[str, list[tuple[datetime, Any, Located, str, str, list[Code]]]] = {}
        for loc in self.of_type("Observation"):
            r = loc.resource
            matches = list(self._matches(loc, qi, ci))
            if not matches:
                continue
            when = self._time_of(r)
            if when is None:
                self.notes.append(f"{loc.label}: no readable effective time; not used")
                continue
            if when < horizon:
                for rule, *_ in matches:
                    stale.setdefault(rule.fact, []).append(f"{loc.label} ({iso(when)})")
                continue
            status = r.get("status")
            if status not in self.m.observation_status:
                if status in UNUSABLE_OBS:
                    self.notes.append(f"{loc.label}: status '{status}'; not used")
                else:
                    self.notes.append(f"{loc.label}: status '{status}' is not used")
                continue
            if when > self.now + timedelta(minutes=5):
                self.notes.append(f"{loc.label}: dated {iso(when)}, after the evaluation time; not used")
                continue
            for rule, sub, element, matched in matches:
                window = self.m.lookback_hours[rule.window]
                in_window = when >= self.now - timedelta(hours=window)
                value, why = self._observed(rule, loc, sub, element)
                used = [c for c in rule.codes if (c.system, c.code) == matched]
                if isinstance(rule, CodedRule) and value is not None:
                    value, value_code = value
                    used.append(value_code)
                where = loc.where(sub)
                self.tl.readings.append(Reading(rule.fact, when, value, f"{where} ({iso(when)})", why))
                if not in_window:
                    stale.setdefault(rule.fact, []).append(f"{loc.label} ({iso(when)})")
                    continue
                readings.setdefault(rule.fact, []).append((when, value, loc, sub, why, [c for c in used if not c.verified]))
        for fact, items in readings.items():
            latest_t = max(t for t, *_ in items)
            latest = [it for it in items if it[0] == latest_t]
            usable = [it for it in latest if it[1] is not None]
            bad = [it for it in latest if it[1] is None]
            if bad:
                self.leave_unknown(fact, f"the latest reading {bad[0][2].where(bad[0][3])} ({iso(latest_t)}) is unusable: {bad[0][4]}")
                self.notes.append(f"{fact} left unknown: the latest reading, {bad[0][2].label} ({iso(latest_t)}), "
                                  f"is unusable ({bad[0][4]}); older values are not used in its place")
                continue
            values = {repr(it[1]) for it in usable}
            if len(values) > 1:
                both = ", ".join(f"{it[2].label} = {it[1]}" for it in usable)
                self.leave_unknown(fact, f"conflicting values at {iso(latest_t)}: {both}")
                self.notes.append(f"{fact} left unknown: conflicting values at the same time ({both})")
                continue
            when, value, loc, sub, _, unverified = usable[0]
            self.set(fact, value, loc, sub, when)
            for code in unverified:
                self.notes.append(f"{fact} comes from code {code.code} ({code.display}), which is not verified in the mapping")
        for fact, old in stale.items():
            rule = next(r for r in self.m.observations() if r.fact == fact)
            hours = self.m.lookback_hours[rule.window]
            left = "" if fact in self.facts or fact in self.unknown else f"; {fact} left unknown"
            shown = ", ".join(old[:5]) + (f" and {len(old) - 5} more" if len(old) > 5 else "")
            self.notes.append(f"ignored {len(old)} observation(s) for {fact} older than {hours:g} h: {shown}{left}")
            if fact not in self.facts and fact not in self.unknown:
                self.unknown[fact] = f"no observation within {hours:g} h ({len(old)} older ignored)"

    def _observed(self, rule: Any, loc: Located, sub: str, element: dict[str, Any]) -> tuple[Any, str]:
        """(value, '') or (None, why unusable)."""
        if "dataAbsentReason" in element:
            reason = next((c for _, c in codings(element["dataAbsentReason"])), None) or element["dataAbsentReason"].get("text", "")
            self.notes.append(f"{loc.where(sub)}: dataAbsentReason '{reason}' for {rule.fact}")
            return None, f"dataAbsentReason '{reason}'"
        if isinstance(rule, CodedRule):
            concept = element.get("valueCodeableConcept")
            for sc in codings(concept):
                if sc in rule.values:
                    return rule.values[sc], ""
            self.notes.append(f"{loc.label}: value of {rule.fact} not recognised; not used")
            return None, "value not recognised"
        if "valueQuantity" not in element:
            self.notes.append(f"{loc.where(sub)}: no valueQuantity for {rule.fact}; not used")
            return None, "no valueQuantity"
        return self.convert_quantity(element["valueQuantity"], rule.factors, rule.fact, loc, f"{sub}/valueQuantity")

    def convert_quantity(self, q: dict[str, Any], factors: Mapping[str, float], fact: str, loc: Located, sub: str) -> tuple[Any, str]:
        """(converted value, '') or (None, why) for a shape-checked Quantity; every refusal is noted."""
        value = q.get("value")
        why = ""
        unit = q.get("code") if q.get("code") is not None else q.get("unit")
        if value is None or not math.isfinite(value):
            why = "no numeric value"
        elif q.get("comparator"):
            why = f"value {q['comparator']}{value} is not exact"
        elif unit is None:
            why = "no unit"
        elif q.get("code") is not None and q.get("system") not in (None, UCUM):
            why = f"unit system '{q.get('system')}' is not UCUM"
        elif unit not in factors:
            why = f"unit '{unit}' is not accepted for {fact} (accepted: {', '.join(factors)})"
        if why or value is None or unit is None:  # no value or no unit: ``why`` says so
            self.notes.append(f"{loc.where(sub)}: {why}; {fact} from it left unknown")
            return None, why
        factor = factors[unit]
        if factor != 1:
            self.notes.append(f"{fact}: {value:g} {unit} from {loc.label} converted to {tidy(value * factor):g}")
        return tidy(value * factor), ""

    # -- conditions -----------------------------------------------------------------------
    def conditions(self) -> None:
        by_set: dict[str, list] = {}
        for rule in self.m.conditions:
            by_set.setdefault(rule.valueset, []).append(rule)
        found: dict[str, list[tuple[Any, Located]]] = {}
        for loc in self.of_type("Condition"):
            r = loc.resource
            members = self.vs.members(codings(r.get("code")), by_set)
            if not members:
                continue
            clinical = {c for _, c in codings(r.get("clinicalStatus"))}
            verification = {c for _, c in codings(r.get("verificationStatus"))}
            if verification & VOID:
                self.notes.append(f"{loc.label}: entered-in-error; not used")
                continue
            refuted = "refuted" in verification
            if not refuted and clinical and not clinical & ACTIVE_CONDITION:
                continue
            if not refuted and not clinical:
                self.notes.append(f"{loc.label}: no clinicalStatus; read as active")
            for name, code in members:
                if not code.verified:
                    self.notes.append(f"{loc.label} recognised by code {code.code} ({code.display}), which is not confirmed ({name})")
                elif code.local:
                    self.notes.append(f"{loc.label} recognised by the site's local code {code.code} ({name})")
                for rule in by_set[name]:
                    if refuted:
                        if rule.has_refuted_value:
                            found.setdefault(rule.fact, []).append((rule.refuted_value, loc))
                    else:
                        found.setdefault(rule.fact, []).append((rule.value, loc))
                        if name in self.m.shock_recognition:
                            onset = self.time(r.get("onsetDateTime")) or self.time(r.get("recordedDate"))
                            held = self.tl.markers.get("shock_recognised")
                            if onset is not None and onset <= self.now and (held is None or onset < held[0]):
                                self.tl.markers["shock_recognised"] = (onset, f"{loc.where('/onsetDateTime')} ({iso(onset)})")
        for fact, items in found.items():
            values = {repr(v) for v, _ in items}
            if fact in self.facts and values != {repr(self.facts[fact])}:
                others = ", ".join(l.label for _, l in items)
                self.notes.append(f"{fact}: {self.sources[fact][0]} and Condition(s) {others} disagree; left unknown")
                self.leave_unknown(fact, f"{self.sources[fact][0]} and {others} disagree")
                continue
            if len(values) > 1:
                both = ", ".join(f"{l.label} = {v}" for v, l in items)
                self.notes.append(f"{fact}: conflicting Conditions ({both}); left unknown")
                self.leave_unknown(fact, f"conflicting Conditions: {both}")
                continue
            self.set(fact, items[0][0], items[0][1], "/code")
            if len(items) > 1:
                self.sources[fact] += [l.where("/code") for _, l in items[1:]]
        for rule in self.m.conditions:
            if rule.fact in found or rule.fact in self.facts:
                continue
            if rule.has_when_absent and rule.fact in self.m.trusted_complete and self.src.conditions_complete:
                self.facts[rule.fact] = rule.when_absent
                self.sources[rule.fact] = ["no matching Condition in the supplied conditions (a complete list, trusted per the mapping)"]
                self.notes.append(f"{rule.fact} = {str(rule.when_absent).lower()}: no Condition in '{rule.valueset}' among "
                                  "the supplied conditions, a list the mapping trusts as complete")
            else:
                self.unknown.setdefault(rule.fact, f"no Condition in '{rule.valueset}' (absence is unknown, not false)")

    # -- medications ----------------------------------------------------------------------


def convert(src: Sources, *, now: datetime, mapping: FhirMapping, file: str = "<bundle>",
            pack: RulePack | None = None) -> Conversion:
    """Turn admitted resources into a checked patient state (temporal facts too when ``pack`` is given)."""
    c = Converter(src, now, mapping, file)
    c.rejected()
    c.patient()
    c.observations()
    c.conditions()
    c.medications()
    c.procedures()
    orders = c.orders()
    if c.zoneless:
        seen = list(dict.fromkeys(c.zoneless))
        c.notes.append(f"{len(seen)} time(s) in the record had no time zone (e.g. {seen[0]!r}), which FHIR requires; "
                       f"read in the site's zone {mapping.site_timezone} (site_timezone in the FHIR mapping)")
    prov = Provenance()
    for fact, value in c.facts.items():
        prov.record(fact, value, c.sources[fact])
    for fact, why in c.unknown.items():
        if fact not in c.facts:
            prov.unknown(fact, why)
    if pack is not None:
        drug_of_rate = {m.rate_fact: m.drug for m in mapping.medications if m.rate_fact}
        c.notes += apply(pack, c.tl, c.facts, set(), prov, now, drug_of_rate)
        for tf in pack.temporal:
            if tf.fact in c.facts and tf.fact not in c.sources:
                c.sources[tf.fact] = [prov.entries[tf.fact]["how"]]
    fill_unmapped(prov, "no FHIR mapping for this fact")
    state = checked_state(c, orders, prov, file)
    sources = {k: "; ".join(v) for k, v in sorted(c.sources.items())}
    return Conversion(state, c.notes, sources, orders, list(dict.fromkeys(src.missing)), mapping, prov.to_dict(), c.tl,
                      gaps=c.gaps)


def checked_state(c: Converter, orders: list[dict[str, Any]], prov: Provenance, file: str) -> dict[str, Any]:
    """The nested state, checked; a value the patient-state schema refuses is left unknown with a note (one bad
    resource never refuses the whole patient); a problem no single fact explains is a :class:`FhirError`."""
    for _ in range(len(c.facts) + 1):
        state = nest(c.facts)
        try:
            for s in [{**state, "order": _order_fact(o)} for o in orders] or [state]:
                check_state(s)
            return state
        except PatientStateError as exc:
            dropped = False
            for p in exc.problems:
                fact = ".".join((p.fact_path or "").split(".")[:2])
                if fact in c.facts and fact in c.sources:
                    origin = "; ".join(c.sources[fact])
                    c.notes.append(f"{fact} = {c.facts[fact]!r} from {origin} is refused ({p.message}); left unknown")
                    prov.unknown(fact, f"{c.facts[fact]!r} from {origin} is refused: {p.message}")
                    c.leave_unknown(fact, p.message)
                    dropped = True
            if not dropped:
                raise FhirError([_locate(p, c, file) for p in exc.problems]) from exc
    raise FhirError.single("the converted state could not be checked", file=file)


def fill_unmapped(prov: Provenance, why: str) -> None:
    """Every state fact (not order, not derived) gets an entry: unknown with ``why`` if nothing else said."""
    for path in _unmapped_candidates():
        if path not in prov.entries:
            prov.unknown(path, why)


@lru_cache(maxsize=1)
def _unmapped_candidates() -> tuple[str, ...]:
    """The state facts :func:`fill_unmapped` covers, in the schema's order (read off it once per process)."""
    return tuple(path for path, ft in state_vocabulary(schema(STATE_SCHEMA)).items()
                 if not ft.derived and not path.startswith("order."))


def _order_fact(order: Mapping[str, Any]) -> dict[str, Any]:
    """The ``order`` section of a state from a proposed order (its source stays in the notes)."""
    return {k: v for k, v in order.items() if k in ("drug", "purpose")}


def _locate(p: Problem, c: Converter, file: str) -> Problem:
    """A patient-state problem, pointed back at the resource the fact came from."""
    fact = p.fact_path
    if fact and fact.count(".") > 1:
        fact = ".".join(fact.split(".")[:2])
    origin = "; ".join(c.sources.get(fact or "", []))
    message = f"{p.message} (from {origin})" if origin else p.message
    return Problem(message, file=file, pointer=c.pointers.get(fact or "", p.pointer), fact_path=p.fact_path,
                   suggestion=p.suggestion)


def nest(facts: Mapping[str, Any]) -> dict[str, Any]:
    """Flat fact paths -> a nested patient state."""
    out: dict[str, Any] = {}
    for path, value in sorted(facts.items()):
        if "." in path:
            section, key = path.split(".", 1)
            out.setdefault(section, {})[key] = value
        else:
            out[path] = value
    return out
