"""The weight a per-kg dose uses for this patient, as the pack's ``dosing.weights`` declare.

Ideal body weight is Devine's (50 kg for men, 45.5 kg for women, plus 0.91 kg per cm above 152.4 cm);
adjusted weight is ideal plus 40% of the excess of actual over ideal. A basis that applies from a BMI
needs the height to know the BMI, except when the weight alone decides it: at or above the BMI even
at the tallest adult height the pack declares. Nothing is guessed: when the declared basis applies but
cannot be computed, the dose has no weight-based figure and names the missing facts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..dosing_policy import DosingPolicy, WeightBasis

_DEVINE_BASE = {"male": 50.0, "female": 45.5}


@dataclass(frozen=True)
class DosingWeight:
    """The weight to dose on (None: not computable, see ``missing``) and how it was chosen (``basis``: only when it
    is not simply the actual weight, or there is something to say about it)."""

    weight_kg: float | None
    basis: dict[str, Any] | None = None  # JSON-ready; None when the actual weight is used with nothing to say
    missing: list[str] = field(default_factory=list)


def weight_facts(policy: DosingPolicy, drug: str) -> frozenset[str]:
    """The facts ``drug``'s dosing weight may read (the weight, and what its declared bases need)."""
    f = policy.facts
    entries = [w for w in policy.weights if w.drug == drug]
    out = {f.weight}
    if any(w.population != "all" for w in entries):
        out.add(f.pediatric)
    bases = {w.basis for w in entries} | {w.fallback for w in entries if w.fallback}
    if bases & {"ideal", "adjusted"} or any(w.from_bmi is not None for w in entries):
        out |= {f.height, f.sex}
    if "dry" in bases:
        out.add(f.dry_weight)
    return frozenset(out)


def per_dosing_kg(value_per_actual_kg: float, drug: str, facts: Mapping[str, Any], policy: DosingPolicy) -> tuple[float | None, list[str]]:
    """A per-kg amount recorded on the actual weight, per kg of ``drug``'s dosing weight (None: the facts missing).

    With no weight recorded, nothing shows another weight applies (as with a BMI the height would decide, the
    actual weight is used): the amount is returned as recorded."""
    if facts.get(policy.facts.weight) is None or value_per_actual_kg == 0:  # nothing given is nothing on any weight
        return value_per_actual_kg, []
    chosen = dosing_weight(drug, facts, policy)
    if chosen.weight_kg is None:
        return None, chosen.missing
    actual = facts[policy.facts.weight]
    if chosen.weight_kg == actual or chosen.weight_kg <= 0:
        return value_per_actual_kg, []
    return value_per_actual_kg * actual / chosen.weight_kg, []


def facts_read(policy: DosingPolicy) -> set[str]:
    """The patient-state facts the policy reads: each bag in use, and what its weight bases need."""
    out = set(policy.bags_in_use.values())
    for drug in {w.drug for w in policy.weights}:
        out |= {f for f in weight_facts(policy, drug) if not f.startswith("derived.")}
    return out


def ideal_body_weight(height_cm: float, sex: str) -> float:
    """Devine's ideal body weight in kg."""
    return _DEVINE_BASE[sex] + 0.91 * (height_cm - 152.4)


def dosing_weight(drug: str, facts: Mapping[str, Any], policy: DosingPolicy) -> DosingWeight:
    """The weight ``drug``'s per-kg dose uses for the patient in ``facts``."""
    f = policy.facts
    actual = facts.get(f.weight)
    if actual is None:
        return DosingWeight(None, missing=[f.weight])
    entry = policy.basis_for(drug, facts.get(f.pediatric))
    if entry is None or entry.basis == "actual":
        return DosingWeight(actual)  # the actual weight, nothing to say (the dose shows it as for_weight.weight_kg)
    height = facts.get(f.height)
    if entry.from_bmi is not None:
        applies = _bmi_at_least(actual, height, entry.from_bmi, policy.tallest_adult_cm)
        if applies is False:
            return DosingWeight(actual)
        if applies is None:  # the BMI needs the height: dose on actual weight and say what would change it
            info = _described(entry, "actual", actual, actual)
            info["note"] = (f"at a BMI of {entry.from_bmi:g} or more the pack uses the {entry.basis} body weight; "
                            f"height not recorded ({f.height})")
            return DosingWeight(actual, info, missing=[])
    return _computed(entry, entry.basis, actual, facts, policy)


def _computed(entry: WeightBasis, basis: str, actual: float, facts: Mapping[str, Any], policy: DosingPolicy) -> DosingWeight:
    f = policy.facts
    height, sex = facts.get(f.height), facts.get(f.sex)
    bmi = _bmi(actual, height)
    if basis == "dry":
        dry = facts.get(f.dry_weight)
        if dry is not None:
            return DosingWeight(dry, _described(entry, "dry", dry, actual, bmi=bmi))
        if entry.fallback:
            return _computed(entry, entry.fallback, actual, facts, policy)
        return DosingWeight(None, missing=[f.dry_weight])
    if height is None or sex is None:
        return DosingWeight(None, missing=[name for name, v in ((f.height, height), (f.sex, sex)) if v is None])
    if height < policy.shortest_adult_cm:  # outside the formula's range: never a weight near or below zero
        info = _described(entry, "actual", actual, actual, bmi=bmi)
        info["note"] = (f"height {height:g} cm is below the {policy.shortest_adult_cm:g} cm the ideal-weight formula is "
                        f"used from: the actual weight is used; confirm the dosing weight")
        return DosingWeight(actual, info)
    ideal = ideal_body_weight(height, sex)
    if basis == "ideal":
        weight = min(ideal, actual)  # never dose above the actual weight
    else:  # adjusted
        weight = min(actual, ideal + 0.4 * max(0.0, actual - ideal))
    return DosingWeight(round(weight, 1), _described(entry, basis, round(weight, 1), actual, bmi=bmi, ideal=ideal))


def _bmi(weight: float, height_cm: float | None) -> float | None:
    return None if not height_cm else weight / (height_cm / 100.0) ** 2


def _bmi_at_least(weight: float, height_cm: float | None, threshold: float, tallest_cm: float) -> bool | None:
    """Is the BMI at least ``threshold``? Decided without a height when true at the tallest adult height."""
    if height_cm:
        return weight / (height_cm / 100.0) ** 2 >= threshold
    if weight / (tallest_cm / 100.0) ** 2 >= threshold:
        return True
    return None


def _described(entry: WeightBasis | None, basis: str, weight: float, actual: float, *, bmi: float | None = None,
               ideal: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"basis": basis, "weight_kg": weight, "actual_weight_kg": actual}
    if bmi is not None:
        out["bmi"] = round(bmi, 1)
    if ideal is not None:
        out["ideal_weight_kg"] = round(ideal, 1)
    if entry is not None:
        out["declared"] = entry.basis + (f" from BMI {entry.from_bmi:g}" if entry.from_bmi is not None else "")
        if entry.citations:
            out["citations"] = [c.ref for c in entry.citations]
    return out
