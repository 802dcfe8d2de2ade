"""Lint checks on the units and sizes of doses: a unit that cannot be 60 times wrong.

The pack declares, per drug, the units it is plausibly dosed in and the band of plausible values in each
(``dose_units:``, read from the pack's files). A rule's dose in any other unit is ``dose-unit-implausible``
(a norepinephrine dose in mcg/kg/h is legal, converts, and is 60 times too low); a dose in a declared unit
but outside its band is ``dose-out-of-band``. A rule whose dose says why (``dose.unit_reason``) gets a
warning quoting the reason instead. A drug the pack doses without declaring its units is a warning, once
the pack declares any.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..evaluation.load import Document
from ..model import Quantity, Rule, RulePack
from .findings import Finding, severity_for

Locate = Callable[[str, str, str], "tuple[str | None, int | None]"]
#: The parts of a dose that are amounts of the drug (a cap is per patient, a step a change of rate).
DOSE_PARTS = ("range", "typical", "maximum", "alternative")


def declared_units(docs: Mapping[str, Document]) -> dict[str, dict[str, tuple[float, float]]]:
    """Drug -> unit -> (low, high), from every file's ``dose_units:``."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for doc in docs.values():
        items = doc.data.get("dose_units") if isinstance(doc.data, dict) else None
        for item in items if isinstance(items, list) else ():
            out.setdefault(item["drug"], {})[item["unit"].strip()] = (float(item["low"]), float(item["high"]))
    return out


def check_dose_units(pack: RulePack, docs: Mapping[str, Document], locate: Locate) -> list[Finding]:
    """Every dose-unit finding of the pack."""
    declared = declared_units(docs)
    if not declared:
        return []
    out: list[Finding] = []
    undeclared: dict[str, list[Rule]] = {}
    for rule in pack.rules:
        if rule.status == "retired" or rule.dose is None:
            continue
        bands = declared.get(rule.dose.drug)
        if bands is None:
            undeclared.setdefault(rule.dose.drug, []).append(rule)
            continue
        reason = (rule.raw.get("dose") or {}).get("unit_reason")
        for part in DOSE_PARTS:
            q: Quantity | None = getattr(rule.dose, part)
            if q is not None:
                out += _quantity(rule, part, q, bands, reason, locate)
    for drug, rules in sorted(undeclared.items()):
        file, line = locate("rules", rules[0].id, "/dose/drug")
        out.append(Finding("dose-unit-undeclared", "warning",
                           f"{drug} is dosed by {', '.join(r.id for r in rules)} but dose_units declares no unit for it",
                           file, line, tuple(r.id for r in rules), details={"drug": drug},
                           suggestion=f"add '{{drug: {drug}, unit: ..., low: ..., high: ...}}' to dose_units"))
    return out


def _quantity(rule: Rule, part: str, q: Quantity, bands: Mapping[str, tuple[float, float]], reason: Any,
              locate: Locate) -> list[Finding]:
    drug, unit = rule.dose.drug if rule.dose else "", q.unit.strip()
    file, line = locate("rules", rule.id, f"/dose/{part}")
    said = f" (the rule says why: {reason})" if reason else ""
    severity = "warning" if reason else severity_for([rule])
    if unit not in bands:
        return [Finding("dose-unit-implausible", severity,
                        f"'{rule.id}': {drug} dose {part} in {unit}, a unit this pack does not dose {drug} in "
                        f"({', '.join(bands)}){said}", file, line, (rule.id,),
                        details={"drug": drug, "unit": unit, "plausible": list(bands)},
                        suggestion=None if reason else f"give the dose in {' or '.join(bands)}, or say why in dose.unit_reason")]
    low, high = bands[unit]
    if q.low < low or q.high > high:
        span = f"{q.low:g}" if q.low == q.high else f"{q.low:g}-{q.high:g}"
        return [Finding("dose-out-of-band", severity,
                        f"'{rule.id}': {drug} dose {part} {span} {unit} is outside the plausible {low:g}-{high:g} {unit}{said}",
                        file, line, (rule.id,), details={"drug": drug, "unit": unit, "band": [low, high]},
                        suggestion=None if reason else "check the number and its unit against the source, or say why in dose.unit_reason")]
    return []
