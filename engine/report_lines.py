"""The lines every human view is made of (severity badges, kind marks, evidence, quantities, citations,
dose lines), shared by :mod:`.report` (the full view) and :mod:`.plan_report` (the plan view)."""
from __future__ import annotations

from typing import Any

BADGE = {"critical": ("CRITICAL", "red"), "warning": ("WARNING", "yellow"), "info": ("INFO", "cyan")}
MARK = {"do": "+", "avoid": "x", "monitor": "~", "consider": "?"}


def num(x: float) -> str:
    """A number as short as it reads (``0.05``, ``30``)."""
    return f"{x:g}"


def because(e: dict[str, Any]) -> str:
    """One piece of evidence as text: ``not vitals.map_mmhg < 65 (70)``."""
    shown = "" if e["fact"].startswith("derived.") or isinstance(e["value"], bool) else f" ({e['value']})"
    return ("" if e["holds"] else "not ") + e["test"] + shown


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
        text = f"  for {num(fw['weight_kg'])} kg: {quantity(fw['range'])}"
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
    if dose.get("missing"):
        lines.append(f"  no weight-based figures: missing {', '.join(dose['missing'])}")
    return lines
