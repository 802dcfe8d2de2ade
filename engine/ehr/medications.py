"""Medications in the record -> infusion facts, fluids, the record's timeline of doses, and draft orders.

A mixin of :class:`.convert.Converter` (one conversion's bookkeeping: ``set``, ``leave_unknown``, the
sources and the timeline live there): what a MedicationAdministration, MedicationStatement or
MedicationRequest says about a running infusion, a bolus or a proposed order changes here alone.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .fhir_values import ORDER_INTENTS, STOPPED, codings, iso
from .mapping import MedicationRule
from .reading import Located
from .timeline import Dose, Fluid, RateChange

if TYPE_CHECKING:
    from .mapping import FhirMapping
    from .reading import Sources
    from .timeline import Timeline


class Medications:
    """Infusions, fluids and orders, read for :class:`.convert.Converter`."""

    src: "Sources"
    now: datetime
    m: "FhirMapping"
    file: str
    facts: dict[str, Any]
    notes: list[str]
    tl: "Timeline"
    by_ref: dict[str, dict[str, Any]]
    drugs: dict[str, MedicationRule]
    med_sets: dict[str, MedicationRule]
    blocked: set[str]
    gaps: list[str]
    vs: Any
    sources: dict[str, list[str]]
    unknown: dict[str, str]

    if TYPE_CHECKING:  # the Converter's bookkeeping, which these methods use
        def set(self, fact: str, value: Any, loc: Located, sub: str, when: datetime | None = None) -> None: ...
        def leave_unknown(self, fact: str, why: str) -> None: ...
        def time(self, text: Any) -> datetime | None: ...
        def of_type(self, *types: str) -> Iterator[Located]: ...
        def convert_quantity(self, q: dict[str, Any], factors: Mapping[str, float], fact: str, loc: Located,
                             sub: str) -> tuple[Any, str]: ...

    def _medication(self, r: dict[str, Any]) -> dict[str, Any] | None:
        """The Medication a resource references (contained or in the input), if it is there and well-formed."""
        ref = (r.get("medicationReference") or {}).get("reference")
        if not isinstance(ref, str):
            return None
        if ref.startswith("#"):
            med = next((c for c in r.get("contained") or [] if isinstance(c, dict) and c.get("id") == ref[1:]), None)
        else:
            med = self.by_ref.get(ref) or self.by_ref.get("/".join(ref.split("/_history")[0].split("/")[-2:]))
        return med if med is not None and self._medication_ok(med) else None

    def _medication_codes(self, r: dict[str, Any]) -> list[tuple[str, str]]:
        """The drug's codes: medicationCodeableConcept, or the referenced Medication's code and ingredients."""
        codes = codings(r.get("medicationCodeableConcept"))
        med = self._medication(r)
        if med is not None:
            codes += codings(med.get("code"))
            for ing in med.get("ingredient") or []:
                codes += codings(ing.get("itemCodeableConcept"))
        return codes

    def _medication_ok(self, med: dict[str, Any]) -> bool:
        from .reading import shape_problem

        return med.get("resourceType") == "Medication" and shape_problem(med) is None

    def classify(self, loc: Located) -> tuple[str, Any]:
        """('drug', MedicationRule) | ('fluid', counts_as) | ('recognised', name) | ('unknown', None)."""
        members = self.vs.members(self._medication_codes(loc.resource))
        for name, code in members:
            if name in self.med_sets:
                if not code.verified:
                    self.notes.append(f"{self.med_sets[name].drug} recognised by code {code.code} ({code.display}), "
                                      "which is not confirmed")
                return "drug", self.med_sets[name]
        for name, code in members:
            if name in self.m.fluids:
                if not code.verified:
                    self.notes.append(f"{loc.label} read as {self.m.fluids[name]} by code {code.code} ({code.display}), "
                                      "which is not confirmed")
                return "fluid", self.m.fluids[name]
            if name in self.m.recognised:
                return "recognised", name
        return "unknown", None

    def _rate(self, loc: Located, med: MedicationRule, fact: str) -> tuple[Any, str, bool]:
        """(converted rate of ``fact`` or None, pointer suffix, whether a rate element is present)."""
        r = loc.resource
        if loc.type == "MedicationAdministration":
            holders = [(r.get("dosage"), "/dosage")]
        else:
            holders = [(dr, f"/dosageInstruction/{i}/doseAndRate/{j}")
                       for i, di in enumerate(r.get("dosageInstruction") or []) for j, dr in enumerate(di.get("doseAndRate") or [])]
        for holder, sub in holders:
            if not holder:
                continue
            if "rateQuantity" in holder:
                v, _ = self.convert_quantity(holder["rateQuantity"], med.factors, fact, loc, f"{sub}/rateQuantity")
                return v, f"{sub}/rateQuantity", True
            if "rateRatio" in holder:
                return self._ratio(holder["rateRatio"], med, fact, loc, f"{sub}/rateRatio"), f"{sub}/rateRatio", True
        return None, "", False

    def _ratio(self, ratio: dict[str, Any], med: MedicationRule, fact: str, loc: Located, sub: str) -> Any:
        num, den = ratio.get("numerator"), ratio.get("denominator")
        if num is None or den is None:
            self.notes.append(f"{loc.where(sub)}: rateRatio needs a numerator and a denominator; {fact} left unknown")
            return None
        dv = den.get("value", 1)
        if dv <= 0:
            self.notes.append(f"{loc.where(sub)}: denominator {dv!r} is not positive; {fact} left unknown")
            return None
        q = {"value": num.get("value") / dv if num.get("value") is not None else None,
             "code": f"{num.get('code', num.get('unit'))}/{den.get('code', den.get('unit'))}", "system": num.get("system")}
        v, _ = self.convert_quantity(q, med.factors, fact, loc, f"{sub}/numerator")
        return v

    def _running(self, loc: Located) -> bool:
        r = loc.resource
        if loc.type == "MedicationAdministration":
            if r.get("status") != "in-progress":
                return False
            end = self.time((r.get("effectivePeriod") or {}).get("end"))
            return end is None or end > self.now
        return r.get("status") == "active" and r.get("intent") in ORDER_INTENTS

    def _start(self, r: dict[str, Any]) -> datetime | None:
        return (self.time((r.get("effectivePeriod") or {}).get("start")) or self.time(r.get("effectiveDateTime"))
                or self.time(r.get("authoredOn")))

    def medications(self) -> None:
        running: dict[str, tuple[int, datetime, Located]] = {}
        stopped: dict[str, tuple[datetime, Located]] = {}
        unidentified: list[tuple[Located, str | None]] = []
        tied: dict[str, list[Located]] = {}
        trusted_zero: list[str] = []
        epoch = datetime.min.replace(tzinfo=timezone.utc)
        for loc in self.of_type("MedicationAdministration", "MedicationRequest"):
            r = loc.resource
            if r.get("status") in ("entered-in-error", "not-done", "cancelled"):
                continue
            kind, what = self.classify(loc)
            start = self._start(r)
            if kind == "fluid":
                self._fluid(loc, what, start)
                continue
            if kind == "recognised":
                if self._running(loc):
                    self.notes.append(f"{what.replace('_', ' ')} is running ({loc.label}); noted, no fact is set from it")
                continue
            if kind == "unknown":
                ref = (r.get("medicationReference") or {}).get("reference")
                if isinstance(ref, str) and self._running(loc) and self._medication(r) is None:
                    self.gaps.append(f"{loc.label} is running, but its drug is named only by reference ({ref}), which was "
                                     "neither in the record nor could be fetched: which drug it is, and so the rate of every "
                                     "drug it could be, is unknown")
                has_rate = bool((r.get("dosage") or {}).get("rateQuantity") or (r.get("dosage") or {}).get("rateRatio")) or any(
                    dr.get("rateQuantity") or dr.get("rateRatio")
                    for di in r.get("dosageInstruction") or [] for dr in di.get("doseAndRate") or [])
                if self._running(loc) and has_rate:
                    rq = (r.get("dosage") or {}).get("rateQuantity") or {}
                    unidentified.append((loc, rq.get("code") or rq.get("unit")))
                continue
            med: MedicationRule = what
            self._history(loc, med, start)
            if self._running(loc):
                rank = 1 if loc.type == "MedicationAdministration" else 0
                key = (rank, start or epoch)
                held = running.get(med.drug)
                if held is None or key > held[:2]:
                    running[med.drug] = (rank, start or epoch, loc)
                    tied.pop(med.drug, None)
                elif key == held[:2]:
                    tied.setdefault(med.drug, []).append(loc)
            elif loc.type == "MedicationAdministration" and r.get("status") in STOPPED:
                end = self.time((r.get("effectivePeriod") or {}).get("end"))
                if end is not None and end <= self.now and (med.drug not in stopped or end > stopped[med.drug][0]):
                    stopped[med.drug] = (end, loc)
        for med in self.m.medications:
            if med.drug in running:
                loc = running[med.drug][2]
                if med.line_member:
                    self.set("line_coinfusions", [med.line_member], loc, "")
                    self.notes.append(f"{med.drug.replace('_', ' ')} is running ({loc.label}); FHIR does not say which line "
                                      "it shares, so it is listed as sharing the norepinephrine line: check the lines")
                if med.rate_fact:
                    rate, sub, present = self._rate(loc, med, med.rate_fact)
                    others = [o for o in tied.get(med.drug, []) if self._rate(o, med, med.rate_fact)[0] != rate]
                    if others:
                        both = ", ".join(f"{x.label} = {self._rate(x, med, med.rate_fact)[0]}" for x in [loc, *others])
                        self.notes.append(f"{med.rate_fact} left unknown: infusions started at the same time disagree ({both})")
                        self.leave_unknown(med.rate_fact, f"infusions started at the same time disagree: {both}")
                    elif rate is None:
                        why = (f"{med.drug} is running ({loc.label}) but its rate could not be read" if present
                               else f"{med.drug} is running ({loc.label}) but no rate is given")
                        if not present:
                            self.notes.append(f"{why}; {med.rate_fact} left unknown")
                        self.leave_unknown(med.rate_fact, why)
                    else:
                        self.set(med.rate_fact, rate, loc, sub)
                if med.concentration_fact:
                    self._concentration(loc, med, med.concentration_fact)
            elif med.rate_fact:
                blockers = [l for l, unit in unidentified if unit is None or unit in med.factors]
                if blockers:
                    why = (f"{blockers[0].label} is a running infusion whose drug pressor cannot identify; "
                           f"it could be {med.drug}")
                    self.leave_unknown(med.rate_fact, why)
                    continue
                if med.rate_fact in self.blocked:
                    continue
                if med.drug in stopped:
                    end, loc = stopped[med.drug]
                    self.set(med.rate_fact, 0, loc, "/status", end)
                    self.notes.append(f"{med.rate_fact} = 0: {loc.label} says the infusion was stopped ({iso(end)})")
                elif med.rate_fact in self.m.trusted_complete and self.src.medications_complete:
                    self.facts[med.rate_fact] = 0
                    self.sources[med.rate_fact] = ["no running administration or active order in the supplied medications "
                                                   "(a complete list, trusted per the mapping)"]
                    trusted_zero.append(med.drug)
                else:
                    self.unknown.setdefault(med.rate_fact, f"no running or stopped {med.drug} in the record "
                                                           "(absence is unknown, not 0)")
        if trusted_zero:
            self.notes.append(f"not running per the supplied medications, a list the mapping trusts as complete "
                              f"(recorded as 0): {', '.join(trusted_zero)}")
        for loc, unit in unidentified:
            could = [m.drug for m in self.m.medications if m.rate_fact and (unit is None or unit in m.factors)
                     and m.drug not in running]
            self.notes.append(f"{loc.label} is a running infusion pressor cannot identify (unit {unit or 'unknown'}); "
                              f"left unknown: the rate of {', '.join(could) or 'no drug (all are identified)'}")
        self.running_vasopressors = [m.drug for m in self.m.medications if m.vasopressor and m.drug in running]

    def _history(self, loc: Located, med: MedicationRule, start: datetime | None) -> None:
        """Rate changes and doses of a recognised drug, for the timeline."""
        r = loc.resource
        if start is None or not med.rate_fact or loc.type != "MedicationAdministration":
            return
        rate, _, present = self._rate(loc, med, med.rate_fact) if med.rate_fact else (None, "", False)
        if not present and "effectivePeriod" not in r:
            self.tl.doses.append(Dose(med.drug, start, f"{loc.label} ({iso(start)})"))
            return
        self.tl.rates.append(RateChange(med.drug, start, rate, f"{loc.label} ({iso(start)})"))
        end = self.time((r.get("effectivePeriod") or {}).get("end"))
        if end is not None and end <= self.now:
            self.tl.rates.append(RateChange(med.drug, end, 0, f"{loc.label} end ({iso(end)})"))

    def _fluid(self, loc: Located, counts_as: str, start: datetime | None) -> None:
        if start is None or loc.type != "MedicationAdministration":
            return
        dose = (loc.resource.get("dosage") or {}).get("dose")
        volume = None
        if dose is not None:
            volume, _ = self.convert_quantity(dose, self.m.factors["ml"], f"{counts_as} volume", loc, "/dosage/dose")
        else:
            self.notes.append(f"{loc.label}: {counts_as} given without a volume (dosage.dose)")
        self.tl.fluids.append(Fluid(counts_as, start, volume, f"{loc.label} ({iso(start)})"))

    def procedures(self) -> None:
        """Fluid-resuscitation Procedures (no volume) and vascular access."""
        for loc in self.of_type("Procedure", "Device"):
            r = loc.resource
            concept = r.get("code") if loc.type == "Procedure" else r.get("type")
            members = self.vs.members(codings(concept))
            if not members:
                continue
            if loc.type == "Procedure" and r.get("status") not in ("completed", "in-progress"):
                continue
            if loc.type == "Device" and r.get("status") not in (None, "active"):
                continue
            for name, code in members:
                if name in self.m.access:
                    fact = self.m.access[name]
                    self.set(fact, True, loc, "/code" if loc.type == "Procedure" else "/type")
                    if not code.verified:
                        self.notes.append(f"{fact} from code {code.code} ({code.display}), which is not confirmed")
                elif name in self.m.fluids and loc.type == "Procedure":
                    when = self.time(r.get("performedDateTime")) or self.time((r.get("performedPeriod") or {}).get("start"))
                    if when is not None:
                        self.tl.fluids.append(Fluid(self.m.fluids[name], when, None, f"{loc.label} ({iso(when)})"))

    def _concentration(self, loc: Located, med: MedicationRule, fact: str) -> None:
        med_res = self._medication(loc.resource)
        if med_res is None:
            return
        for i, ing in enumerate(med_res.get("ingredient") or []):
            strength = ing.get("strength")
            if not strength or not strength.get("numerator") or not strength.get("denominator"):
                continue
            num, den = strength["numerator"], strength["denominator"]
            if not den.get("value"):
                continue
            q = {"value": (num.get("value") or 0) / den["value"],
                 "code": f"{num.get('code', num.get('unit'))}/{den.get('code', den.get('unit'))}", "system": num.get("system")}
            v, _ = self.convert_quantity(q, self.m.factors["mcg_ml"], fact, loc, f"/medication ingredient {i}")
            if v is not None:
                self.set(fact, v, loc, "/medicationReference")
            return

    # -- proposed orders --------------------------------------------------------------------
    def orders(self) -> list[dict[str, Any]]:
        out = []
        for loc in self.src.orders:
            kind, med = self.classify(loc)
            if kind != "drug" or med.drug not in self.m.order_drugs:
                name = med.drug if kind == "drug" else "an unrecognised medication"
                self.notes.append(f"draft order {loc.label} ({name}) is not one the protocol reasons about; ignored")
                continue
            order: dict[str, Any] = {"drug": med.drug, "source": loc.where()}
            purposes = [self.m.purpose_codes[c] for rc in loc.resource.get("reasonCode") or [] for s, c in codings(rc)
                        if s == self.m.purpose_system and c in self.m.purpose_codes]
            vaso_rates = [m.rate_fact for m in self.m.medications if m.vasopressor and m.rate_fact]
            none_running = all(self.facts.get(f) == 0 for f in vaso_rates)
            if purposes:
                order["purpose"] = purposes[0]
            elif self.m.first_line_inference and med.vasopressor and none_running:
                order["purpose"] = "first_line"
                self.notes.append(f"order {loc.label}: purpose first_line, because the record shows no vasopressor running")
            else:
                why = (f"{', '.join(self.running_vasopressors)} already running" if med.vasopressor and self.running_vasopressors
                       else "whether a vasopressor is running is not known" if med.vasopressor and not none_running
                       else "no reasonCode in " + self.m.purpose_system)
                self.notes.append(f"order {loc.label}: purpose unknown ({why}); order.purpose left unknown")
                if med.vasopressor and not self.running_vasopressors:
                    order["unless"] = self._first_line_unless(vaso_rates, none_running)
            out.append(order)
        return out


    def _first_line_unless(self, vaso_rates: list[str], none_running: bool) -> dict[str, Any]:
        """What would make a vasopressor order of unknown purpose first-line: the vasopressors whose rate is
        unknown being at 0 (``assume``), and ``text``, the words for "unless that is not so". A ban on the order
        as first-line is then shown qualified by these words instead of not at all (issue 22, item 3)."""
        unknown = [f for f in vaso_rates if f not in self.facts]
        drugs = [m.drug for m in self.m.medications if m.rate_fact in unknown]
        if drugs:
            first = "norepinephrine" if "norepinephrine" in drugs else drugs[0]
            text = f"{first} is already running" if len(drugs) == 1 else f"{first} (or another vasopressor) is already running"
        else:
            text = "this order is not first-line (no reasonCode gives its purpose)"
        return {"purpose": "first_line", "assume": {f: 0 for f in unknown}, "text": text, "not_known": drugs}
