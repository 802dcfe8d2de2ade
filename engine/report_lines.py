"""The lines every human view is made of (severity badges, kind marks, evidence, quantities, citations,
dose lines), shared by :mod:`.report` (the full view) and :mod:`.plan_report` (the plan view)."""
from __future__ import annotations

from typing import Any, Mapping

BADGE = {"critical": ("CRITICAL", "red"), "warning": ("WARNING", "yellow"), "info": ("INFO", "cyan")}
MARK = {"do": "+", "avoid": "x", "monitor": "~", "consider": "?"}


def num(x: float) -> str:
    """A number as short as it reads (``0.05``, ``30``)."""
    return f"{x:g}"


_COMPARISONS = ("<", "<=", ">", ">=")


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_value_text, value))
    return "unknown" if value is None else str(value)


def because_text(e: Mapping[str, Any], decided: Mapping[str, Any] | None = None) -> str:
    """One piece of evidence as words that say what was decided (issue 18, item 6).

    A test that did not hold reads "not ..."; ``X is unknown`` reads "X not recorded" (never "X = no");
    a value the state lacks reads "unknown"; a derived fact decided for every value of its missing inputs
    (``decided``: the result's ``decided_for_any_value``) says so. The value seen follows the test.
    """
    test, fact, value, holds = e["test"], e["fact"], e.get("value"), e.get("holds", True)
    if test.endswith(" is unknown") or test.endswith(" is known"):
        recorded = test.endswith(" is known") == bool(holds)
        subject = test.rsplit(" is ", 1)[0]
        return f"{subject} recorded" + (f" ({_value_text(value)})" if value is not None and not isinstance(value, bool) else "") \
            if recorded else f"{subject} not recorded"
    text = test if holds else f"not {test}"
    inputs = (decided or {}).get(fact) or (decided or {}).get(fact.removeprefix("derived."))
    if inputs:
        return f"{text} (for any value of {', '.join(inputs)}: not recorded)"
    if isinstance(value, bool) and (holds or fact.startswith("derived.")):
        return text  # the test names the value
    if "threshold_value" in e:
        return f"{text} ({_value_text(value)} vs {_value_text(e['threshold_value'])})"
    if not test.startswith(fact + " "):  # the evidence is the right-hand fact of a comparison
        return f"{text} ({fact}: {_value_text(value)})"
    return f"{text} (value {_value_text(value)})"


def _rank(e: dict[str, Any]) -> int:
    """The deciding comparison first: a measured value against a threshold that held, then other tests that
    held, then negations, then what was not recorded."""
    test = e["test"]
    if test.endswith(" is unknown") or test.endswith(" is known"):
        return 3
    if not e.get("holds", True):
        return 2
    parts = test.split(" ")
    return 0 if len(parts) >= 3 and parts[1] in _COMPARISONS else 1


def ordered_evidence(evidence: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evidence with the deciding comparison first (stable within each rank), duplicates removed."""
    out: list[dict[str, Any]] = []
    by_test: dict[str, dict[str, Any]] = {}
    for e in sorted(evidence, key=_rank):
        same = by_test.get(e["test"])
        if same is None:
            by_test[e["test"]] = e = dict(e)
            out.append(e)
        elif e["fact"] != same["fact"] and not e["test"].startswith(e["fact"] + " "):
            same["threshold_value"] = e["value"]  # a fact compared with a fact: one line, both values
    return out


def because_line(evidence: list[dict[str, Any]], decided: dict[str, Any] | None = None, limit: int = 4) -> str:
    """``because a; b; not c ...``: the first ``limit`` pieces of evidence, deciding comparison first."""
    ordered = ordered_evidence(evidence)
    return "; ".join(because_text(e, decided) for e in ordered[:limit]) + (" ..." if len(ordered) > limit else "")


def because(e: dict[str, Any]) -> str:
    """One piece of evidence as words (see :func:`because_text`)."""
    return because_text(e)


def quantity(q: dict[str, Any]) -> str:
    """``0.02-0.05 mcg/kg/min`` or ``0.1 mcg/kg/min``."""
    body = f"{num(q['low'])}-{num(q['high'])}" if "low" in q else num(q["value"])
    text = f"{body} {q['unit']}"
    if "capped_at" in q:
        text += f" (capped at {num(q['capped_at'])})"
    return text


def citations(cites: list[dict[str, Any]]) -> str:
    """``[1,2,7?]``: a question mark marks a reference the source cites but does not list."""
    return "[" + ",".join(f"{c['number']}" + ("" if c["resolved"] else "?") for c in cites) + "]"


def dose_lines(dose: dict[str, Any]) -> list[str]:
    """The dose block of one recommendation."""
    lines = [(f"titration step: change the running {dose['drug']} by {quantity(dose['range'])}" if dose.get("step")
              else f"dose: {dose['drug']} {quantity(dose['range'])}")
             + (f", {dose['route']}" if dose.get("route") else "")
             + (f", {dose['frequency']}" if dose.get("frequency") else "")
             + (f", within {dose['within']}" if dose.get("within") else "")]
    for key, label in (("typical", "usual range"), ("maximum", "maximum"), ("alternative", "alternative"), ("cap", "at most")):
        if key in dose:
            lines.append(f"  {label}: {quantity(dose[key])}" + (f" ({dose[key]['label']})" if dose[key].get("label") else ""))
    fw = dose.get("for_weight")
    if fw:
        text = f"  for {weight_phrase(fw)}: {quantity(fw['range'])}"
        if "remaining" in fw:
            text += f"; already given {quantity(fw['already_given'])}, still to give {quantity(fw['remaining'])}"
        lines.append(text)
        for key in ("typical", "maximum", "alternative"):
            if key in fw:
                lines.append(f"    {key}: {quantity(fw[key])}")
    pump = "pump rate change" if dose.get("step") else "pump"
    for rate in dose.get("pump_rates", []):
        mlh = f"{num(rate['low_ml_h'])}-{num(rate['high_ml_h'])}" if "low_ml_h" in rate else num(rate["ml_h"])
        if "concentration_units_ml" in rate:  # a drug dosed in units (vasopressin)
            uh = f"{num(rate['low_units_h'])}-{num(rate['high_units_h'])}" if "low_units_h" in rate else num(rate["units_h"])
            lines.append(f"  {pump}: {mlh} mL/h ({uh} units/h) at {num(rate['concentration_units_ml'])} units/mL ({rate['preparation']})")
        else:
            lines.append(f"  {pump}: {mlh} mL/h at {num(rate['concentration_mcg_ml'])} mcg/mL ({rate['preparation']})")
    if fw and fw.get("weight_basis", {}).get("note"):
        lines.append(f"  note: {fw['weight_basis']['note']}")
    if dose.get("missing"):
        lines.append(f"  no weight-based figures: missing {', '.join(dose['missing'])}")
    return lines


_BASIS_WORDS = {"ideal": "ideal body weight", "adjusted": "adjusted body weight", "dry": "dry weight"}


def weight_phrase(for_weight: dict[str, Any]) -> str:
    """'80 kg', or '70.6 kg ideal body weight (actual 180 kg)' when the pack doses this drug on another weight."""
    text = f"{num(for_weight['weight_kg'])} kg"
    basis = for_weight.get("weight_basis", {})
    if basis.get("basis") in _BASIS_WORDS:
        text += f" {_BASIS_WORDS[basis['basis']]} (actual {num(basis['actual_weight_kg'])} kg"
        text += f", BMI {num(basis['bmi'])})" if "bmi" in basis else ")"
    return text
