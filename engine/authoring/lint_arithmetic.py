"""The lint's unit arithmetic: every numeric statement of equivalence in the pack, recomputed with pint.

pint is imported here only, and this module only by the lint, so it never sits on
the evaluation path. One :class:`pint.UnitRegistry` is built per lint run.

Checked: a preparation's stated concentration (amount / volume), a preparation's
stated rate (the rule of 6: 0.6 mg/kg in 100 mL at 1 mL/h is 0.1 mcg/kg/min), a
dose's ``stated_equivalents`` (a weight-based dose against its per-minute or
per-hour figures at a stated reference weight), and the units within one dose.
"""
from __future__ import annotations

from typing import Any, Callable

from .findings import Finding, severity_for
from ..model import DoseSpec, Preparation, Quantity, Rule, RulePack
from ..evaluation.units import UnitError, parse_unit

#: Relative tolerance for an exact statement (a concentration, a rate).
EXACT = 0.005
#: Relative tolerance for a stated equivalent, which the source words as "about".
APPROXIMATE = 0.05

_AMOUNT = {"mcg": "microgram", "mg": "milligram", "g": "gram", "units": "drug_unit", "mL": "milliliter", "L": "liter"}
_TIME = {"min": "minute", "h": "hour", "day": "day"}

Locate = Callable[..., tuple[str | None, int | None]]


class _Units:
    """One registry per run, and our unit strings turned into pint units."""

    def __init__(self) -> None:
        import pint

        self.pint = pint
        self.ureg: Any = pint.UnitRegistry()
        self.ureg.define("drug_unit = [drug_activity]")  # "units" of vasopressin: not convertible to mass

    def unit(self, text: str) -> Any:
        """Our ``mcg/kg/min`` as a pint unit (raises UnitError outside the vocabulary)."""
        u = parse_unit(text)
        expr = _AMOUNT[u.amount] + ("/kilogram" if u.per_kg else "") + (f"/{_TIME[u.per_time]}" if u.per_time else "")
        return self.ureg.Unit(expr)

    def q(self, value: float, text: str) -> Any:
        """A pint quantity."""
        return self.ureg.Quantity(value, self.unit(text))


#: A prepared concentration more than this many times the drug's standard one is flagged.
STRENGTH_LIMIT = 4


def check_arithmetic(pack: RulePack, locate: Locate) -> list[Finding]:
    """Every arithmetic finding of the pack."""
    units = _Units()
    out: list[Finding] = []
    for prep in pack.preparations:
        out += _preparation(units, prep, locate)
    out += _strength(pack, locate)
    for rule in pack.rules:
        if rule.status == "retired" or rule.dose is None:
            continue
        out += _dose_units(units, rule, rule.dose, locate)
        for i, se in enumerate(rule.dose.stated_equivalents):
            out += _stated_equivalent(units, rule, i, se, locate)
    return out


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _span(lo: float, hi: float, unit: str) -> str:
    return (f"{_fmt(lo)}-{_fmt(hi)}" if abs(lo - hi) > 1e-12 * max(abs(lo), 1.0) else _fmt(lo)) + f" {unit}"


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(abs(a), abs(b), 1e-12)


# --- preparations -------------------------------------------------------------

def _strength(pack: RulePack, locate: Locate) -> list[Finding]:
    """A bag made up more than 4x stronger than the pack's standard one for its drug (a tenfold-error risk)."""
    out: list[Finding] = []
    standard: dict[str, float] = {}
    for prep in pack.preparations:
        if prep.standard and prep.amount_units is None:
            conc = prep.concentration_mcg_ml(None)
            if conc is not None:
                standard[prep.drug] = min(conc, standard.get(prep.drug, conc))
    for prep in pack.preparations:
        ref = standard.get(prep.drug)
        if ref is None or prep.amount_units is not None:
            continue
        strongest = None if prep.amount_mg_per_kg is not None and prep.max_weight_kg is None \
            else prep.concentration_mcg_ml(prep.max_weight_kg)
        if strongest is None:
            how = "with no max_weight_kg, so without limit for a heavy child"
        else:
            how = f"{_fmt(strongest)} mcg/mL" + (f" at its {prep.max_weight_kg:g} kg limit" if prep.amount_mg_per_kg else "")
        if strongest is None or strongest > STRENGTH_LIMIT * ref:
            file, line = locate("preparations", prep.id)
            out.append(Finding(
                "preparation-concentration", "error",
                f"preparation '{prep.id}' is made up {how}, more than {STRENGTH_LIMIT}x the pack's standard "
                f"{_fmt(ref)} mcg/mL for {prep.drug}", file, line,
                suggestion="use the standard concentration, or limit the bag with max_weight_kg",
                details={"standard_mcg_ml": ref, "strongest_mcg_ml": strongest}))
    return out


def _preparation(units: _Units, prep: Preparation, locate: Locate) -> list[Finding]:
    out: list[Finding] = []
    if prep.amount_units is not None:  # a drug dosed in units (vasopressin): no mass arithmetic to check
        return out
    file, line = locate("preparations", prep.id)
    per_kg = prep.amount_mg_per_kg is not None
    if prep.amount_mg_per_kg is not None:
        amount = units.q(prep.amount_mg_per_kg, "mg/kg")
    elif prep.amount_mg is not None:
        amount = units.q(prep.amount_mg, "mg")
    else:  # no amount: the rule-file schema reports it
        return out
    conc = amount / units.ureg.Quantity(prep.volume_ml, "milliliter")
    if prep.stated_concentration_mcg_ml is not None:
        if per_kg:
            out.append(Finding("arithmetic-dimension", "error",
                               f"preparation '{prep.id}' states a concentration in mcg/mL, but its amount is per kg: "
                               f"the concentration depends on the weight", file, line,
                               suggestion="state the concentration per kg of body weight, or drop it"))
        else:
            computed = conc.to("microgram/milliliter").magnitude
            if not _close(computed, prep.stated_concentration_mcg_ml, EXACT):
                out.append(Finding(
                    "arithmetic-preparation-mismatch", "error",
                    f"preparation '{prep.id}': {prep.amount_mg:g} mg in {prep.volume_ml:g} mL is {_fmt(computed)} mcg/mL, "
                    f"not the stated {prep.stated_concentration_mcg_ml:g}", file, line,
                    suggestion="correct the amount, the volume or the stated concentration",
                    details={"computed_mcg_ml": computed, "stated_mcg_ml": prep.stated_concentration_mcg_ml}))
    rate = prep.raw.get("stated_rate")
    if rate is not None:
        file, line = locate("preparations", prep.id, "/stated_rate")
        try:
            target = units.unit(rate["unit"])
        except UnitError as exc:
            return out + [Finding("arithmetic-dimension", "error", f"preparation '{prep.id}': {exc}", file, line)]
        delivered = conc * units.ureg.Quantity(rate["ml_h"], "milliliter/hour")
        try:
            computed = delivered.to(target).magnitude
        except units.pint.DimensionalityError:
            need = " (a per-kg figure from a fixed amount needs a weight)" if parse_unit(rate["unit"]).per_kg != per_kg else ""
            return out + [Finding(
                "arithmetic-dimension", "error",
                f"preparation '{prep.id}': {rate['ml_h']:g} mL/h of this bag is {delivered.units:~}, which cannot be "
                f"expressed in {rate['unit']}{need}", file, line, suggestion="state the rate in a unit the bag can give")]
        if not _close(computed, rate["dose"], EXACT):
            out.append(Finding(
                "arithmetic-preparation-mismatch", "error",
                f"preparation '{prep.id}': {rate['ml_h']:g} mL/h delivers {_fmt(computed)} {rate['unit']}, "
                f"not the stated {rate['dose']:g}", file, line,
                suggestion="correct the stated rate or the bag", details={"computed": computed, "stated": rate["dose"]}))
    return out


# --- doses --------------------------------------------------------------------

def _dose_units(units: _Units, rule: Rule, dose: DoseSpec, locate: Locate) -> list[Finding]:
    """Typical, maximum and alternative in the range's dimension; a cap in the range's dimension times kg."""
    out: list[Finding] = []
    base = units.unit(dose.range.unit)
    for key in ("typical", "maximum", "alternative", "cap"):
        q: Quantity | None = getattr(dose, key)
        if q is None:
            continue
        want = base * units.ureg.kilogram if key == "cap" and parse_unit(dose.range.unit).per_kg else base
        have = units.unit(q.unit)
        if (1 * have).dimensionality != (1 * want).dimensionality:
            file, line = locate("rules", rule.id, f"/dose/{key}")
            out.append(Finding("arithmetic-dimension", severity_for([rule]),
                               f"'{rule.id}': dose {key} in {q.unit} cannot be compared with its range in {dose.range.unit}",
                               file, line, (rule.id,), suggestion=f"give the {key} in {dose.range.unit}"))
            continue
        if key == "maximum":
            high = units.ureg.Quantity(q.high, have).to(base).magnitude
            if high < dose.range.high * (1 - EXACT):
                file, line = locate("rules", rule.id, "/dose/maximum")
                out.append(Finding("arithmetic-dose-order", severity_for([rule]),
                                   f"'{rule.id}': maximum {q.high:g} {q.unit} is below the dose itself "
                                   f"({_span(dose.range.low, dose.range.high, dose.range.unit)})",
                                   file, line, (rule.id,), suggestion="check both numbers against the source"))
    return out


def _stated_equivalent(units: _Units, rule: Rule, index: int, se: dict[str, Any], locate: Locate) -> list[Finding]:
    file, line = locate("rules", rule.id, f"/dose/stated_equivalents/{index}")
    dq = se["dose"]
    lo, hi = (dq["value"], dq["value"]) if "value" in dq else (dq["low"], dq["high"])
    src = units.unit(dq["unit"])
    weight = se.get("reference_weight_kg")
    stated, computed, problems = [], [], []
    for eq in se["equals"]:
        elo, ehi = (eq["value"], eq["value"]) if "value" in eq else (eq["low"], eq["high"])
        dst = units.unit(eq["unit"])
        factor = units.ureg.Quantity(1.0, src)
        if parse_unit(dq["unit"]).per_kg and not parse_unit(eq["unit"]).per_kg:
            if weight is None:
                return [Finding("arithmetic-dimension", severity_for([rule]),
                                f"'{rule.id}': {dq['unit']} stated as {eq['unit']} without a weight", file, line, (rule.id,),
                                suggestion="add reference_weight_kg (the weight the source's figures assume)")]
            factor = factor * units.ureg.Quantity(weight, "kilogram")
        try:
            scale = factor.to(dst).magnitude
        except units.pint.DimensionalityError:
            return [Finding("arithmetic-dimension", severity_for([rule]),
                            f"'{rule.id}': {dq['unit']} cannot be expressed in {eq['unit']}"
                            + (f" (even at {weight:g} kg)" if weight else ""), file, line, (rule.id,),
                            suggestion="an equivalent must be the same kind of quantity (mass per time, volume per time ...)")]
        clo, chi = lo * scale, hi * scale
        stated.append(_span(elo, ehi, eq["unit"]))
        computed.append(_span(clo, chi, eq["unit"]))
        if elo == ehi:
            fits = clo * (1 - APPROXIMATE) <= elo <= chi * (1 + APPROXIMATE)
        else:
            fits = _close(elo, clo, APPROXIMATE) and _close(ehi, chi, APPROXIMATE)
        if not fits:
            problems.append((stated[-1], computed[-1]))
    if not problems:
        return []
    recorded = any("CONTRADICTION" in note for note in rule.notes)
    at = f" at {weight:g} kg" if weight else ""
    message = (f"'{rule.id}': {_span(lo, hi, dq['unit'])}{at} is stated as {' or '.join(s for s, _ in problems)}, "
               f"but works out to {' or '.join(c for _, c in problems)}")
    if recorded:
        message += " (the rule's notes record this contradiction; the engine computes from the weight-based dose)"
    return [Finding("arithmetic-stated-equivalent-mismatch", "warning" if recorded else severity_for([rule]), message,
                    file, line, (rule.id,),
                    suggestion=None if recorded else "correct the stated figures, or record the source's contradiction in the notes",
                    details={"text": se["text"], "stated": stated, "computed": computed})]
