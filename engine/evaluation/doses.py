"""Dose arithmetic for one fired rule: the authored range, the amount for this weight, pump rates.

The per-minute amount and the pump rate are always computed from the weight-based
dose and the weight; figures the source states as equivalents are never used here
(they live in reviewer notes and ``stated_equivalents``, which the lint checks).
Per-kg figures use the weight the pack declares for the drug (``dosing.weights``: actual, ideal,
adjusted or dry); pump rates use the bag in use when the state gives it (``dosing.bags_in_use``),
else each of the pack's bags for the population. No weight, no weight-based figure: the facts it
needs (``patient.weight_kg``, or the height and sex for an ideal weight) are reported as missing.
"""
from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Mapping

from ..dosing_policy import DosingPolicy
from ..model import DoseSpec, Preparation, Quantity
from .dosing_weight import dosing_weight
from .units import parse_unit



def _r(x: float, places: int = 2) -> float:
    """Round half up at ``places`` decimals (5.85 mL/h -> 5.9), immune to binary noise."""
    exact = Decimal(repr(round(x, 9)))
    return float(exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _places(x: float, places: int) -> int:
    """Decimals that keep at least two significant digits of a small amount (0.0014 units/min, not 0.0)."""
    if x == 0 or abs(x) >= 10.0 ** -(places - 1):
        return places
    return max(places, 1 - math.floor(math.log10(abs(x))))


def _scaled(q: Quantity, factor: float, unit: str, cap: float | None = None, places: int = 2) -> dict[str, Any]:
    lo, hi = q.low * factor, q.high * factor
    places = _places(min(abs(lo), abs(hi)) or max(abs(lo), abs(hi)), places)
    out: dict[str, Any] = {}
    if cap is not None and hi > cap:
        lo, hi = min(lo, cap), min(hi, cap)
        out["capped_at"] = cap
    body = {"low": _r(lo, places), "high": _r(hi, places)} if q.is_range else {"value": _r(lo, places)}
    return {**body, "unit": unit, **out}


def compute_dose(spec: DoseSpec, facts: Mapping[str, Any], preparations: tuple[Preparation, ...],
                 dosing: DosingPolicy | None = None) -> dict[str, Any]:
    """JSON-ready dose for a fired rule, given the patient's facts (see ``result.schema.json``)."""
    dosing = dosing or DosingPolicy()
    unit = parse_unit(spec.range.unit)
    chosen = dosing_weight(spec.drug, facts, dosing) if unit.per_kg or spec.pump_rate else None
    weight = chosen.weight_kg if chosen else None
    out: dict[str, Any] = {"drug": spec.drug, "range": spec.range.to_dict()}
    if spec.step:
        out["step"] = True
    for key in ("typical", "maximum", "alternative", "cap"):
        q = getattr(spec, key)
        if q is not None:
            out[key] = q.to_dict()
    for key in ("route", "frequency", "within"):
        if getattr(spec, key):
            out[key] = getattr(spec, key)
    missing: list[str] = []

    if unit.per_kg and chosen is not None:
        if weight is None:
            missing.extend(chosen.missing)
        else:
            out["for_weight"] = _for_weight(spec, unit, weight, facts, dosing.facts.weight)
            if chosen.basis is not None:
                out["for_weight"]["weight_basis"] = chosen.basis

    if spec.pump_rate:
        rates, needs = _pump_rates(spec, unit, weight, facts, preparations, dosing)
        if unit.per_kg and weight is None and chosen is not None:
            needs = chosen.missing
        out["pump_rates"] = rates
        missing.extend(m for m in needs if m not in missing)
    if missing:
        out["missing"] = missing
        out["unavailable"] = "weight-based figures need " + ", ".join(missing)
    return out


def _for_weight(spec: DoseSpec, unit: Any, weight: float, facts: Mapping[str, Any], weight_fact: str) -> dict[str, Any]:
    shown = unit.without_kg()
    cap = None
    if spec.cap is not None:
        cap_unit = parse_unit(spec.cap.unit)
        cap = spec.cap.high * cap_unit.to_base / unit.to_base
    result: dict[str, Any] = {"weight_kg": weight, "range": _scaled(spec.range, weight, shown, cap)}
    for key in ("typical", "maximum", "alternative"):
        q = getattr(spec, key)
        if q is not None and parse_unit(q.unit).per_kg:
            result[key] = _scaled(q, weight, parse_unit(q.unit).without_kg(), cap)
    if spec.remaining_after is not None and spec.remaining_after in facts:
        # what was given is recorded per kg of the actual weight; the target is per kg of the dosing weight
        given = facts[spec.remaining_after] * facts.get(weight_fact, weight)
        result["already_given"] = {"value": _r(given, 0), "unit": shown}
        result["remaining"] = {"value": _r(max(0.0, spec.range.high * weight - given), 0), "unit": shown}
    return result


def _pump_rates(spec: DoseSpec, unit: Any, weight: float | None, facts: Mapping[str, Any],
                preparations: tuple[Preparation, ...], dosing: DosingPolicy) -> tuple[list[dict[str, Any]], list[str]]:
    """mL/h at the concentration in use, or at each of the pack's preparations for this population.

    Children under the pack's dosing cut-off (``derived.pediatric_dosing``) get the paediatric bags,
    everyone else the adult ones; a bag with ``max_weight_kg`` is offered only up to that weight.
    A drug dosed in units (vasopressin) gets units/h beside mL/h.
    """
    if unit.per_kg and weight is None:
        return [], [dosing.facts.weight]
    # amount per minute (mcg or units) per unit of dose
    per_min = unit.to_base * unit.per_minute_factor * (weight if unit.per_kg else 1.0)
    in_units = unit.dimension == "units"
    bags: list[tuple[str, float]] = []
    needs: list[str] = []
    in_use_fact = dosing.bags_in_use.get(spec.drug)
    if in_use_fact is not None and facts.get(in_use_fact) is not None:
        bags.append(("in use", facts[in_use_fact]))
    else:
        pediatric = facts.get(dosing.facts.pediatric)
        for prep in preparations:
            if prep.drug != spec.drug:
                continue
            if prep.population != "all" and pediatric is not None and (prep.population == "pediatric") != pediatric:
                continue
            if prep.max_weight_kg is not None and (weight is None or weight > prep.max_weight_kg):
                continue
            conc = prep.concentration_mcg_ml(weight)
            if conc is None:
                needs.append(dosing.facts.weight)
                continue
            bags.append((prep.id, conc))
    rates = []
    for source, conc in bags:
        mlh = per_min * 60.0 / conc
        rate: dict[str, Any] = {"preparation": source}
        rate["concentration_units_ml" if in_units else "concentration_mcg_ml"] = _r(conc, 3)
        if spec.range.is_range:
            rate.update(low_ml_h=_r(spec.range.low * mlh, 1), high_ml_h=_r(spec.range.high * mlh, 1))
            if in_units:
                rate.update(low_units_h=_r(spec.range.low * per_min * 60.0, 3), high_units_h=_r(spec.range.high * per_min * 60.0, 3))
        else:
            rate["ml_h"] = _r(spec.range.low * mlh, 1)
            if in_units:
                rate["units_h"] = _r(spec.range.low * per_min * 60.0, 3)
        rates.append(rate)
    return rates, needs
