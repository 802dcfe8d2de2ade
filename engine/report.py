"""Human-readable views shared by the CLI, the CDS Hooks cards and the web app: bedside text
(critical first, each line with its citations and dose) and a rule's resolved detail."""
from __future__ import annotations

from typing import Any

from .model import Result, Rule, RulePack

_BADGE = {"critical": ("CRITICAL", "red"), "warning": ("WARNING", "yellow"), "info": ("INFO", "cyan")}
_MARK = {"do": "+", "avoid": "x", "monitor": "~", "consider": "?"}


def _num(x: float) -> str:
    return f"{x:g}"


def _because(e: dict[str, Any]) -> str:
    shown = "" if e["fact"].startswith("derived.") or isinstance(e["value"], bool) else f" ({e['value']})"
    return ("" if e["holds"] else "not ") + e["test"] + shown


def quantity(q: dict[str, Any]) -> str:
    """``0.02-0.05 mcg/kg/min`` or ``0.1 mcg/kg/min``."""
    body = f"{_num(q['low'])}-{_num(q['high'])}" if "low" in q else _num(q["value"])
    text = f"{body} {q['unit']}"
    if "capped_at" in q:
        text += f" (capped at {_num(q['capped_at'])})"
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
        text = f"  for {_num(fw['weight_kg'])} kg: {quantity(fw['range'])}"
        if "remaining" in fw:
            text += f"; already given {quantity(fw['already_given'])}, still to give {quantity(fw['remaining'])}"
        lines.append(text)
        for key in ("typical", "maximum", "alternative"):
            if key in fw:
                lines.append(f"    {key}: {quantity(fw[key])}")
    pump = "pump rate change" if dose.get("step") else "pump"
    for rate in dose.get("pump_rates", []):
        mlh = f"{_num(rate['low_ml_h'])}-{_num(rate['high_ml_h'])}" if "low_ml_h" in rate else _num(rate["ml_h"])
        if "concentration_units_ml" in rate:  # a drug dosed in units (vasopressin)
            uh = f"{_num(rate['low_units_h'])}-{_num(rate['high_units_h'])}" if "low_units_h" in rate else _num(rate["units_h"])
            lines.append(f"  {pump}: {mlh} mL/h ({uh} units/h) at {_num(rate['concentration_units_ml'])} units/mL ({rate['preparation']})")
        else:
            lines.append(f"  {pump}: {mlh} mL/h at {_num(rate['concentration_mcg_ml'])} mcg/mL ({rate['preparation']})")
    if dose.get("missing"):
        lines.append(f"  no weight-based figures: missing {', '.join(dose['missing'])}")
    return lines


def profile_lines(profile: dict[str, Any]) -> list[str]:
    """The site profile a result was computed with: name, SHA-256 and every parameter changed from the default."""
    changed = ", ".join(f"{c['name']} = {_num(c['value'])} {c['unit']} (default {_num(c['default'])})" for c in profile["changed"])
    return [f"site profile: {profile['name']} (sha256 {profile['sha256'][:12]}); "
            + (f"changed: {changed}" if changed else "no parameter differs from the pack's defaults")]


def result_text(result: Result | dict[str, Any], *, color: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """The whole report as (line, click style) pairs; ``result`` may be a stored Result's JSON."""
    data = result if isinstance(result, dict) else result.to_dict()
    pack = data["pack"]
    out: list[tuple[str, dict[str, Any]]] = [
        (f"pressor: {pack['name']} {pack['version']} (sha256 {pack['sha256'][:12]}), evaluated {data['evaluated_at']}", {"bold": True}),
    ]
    if pack.get("profile"):
        out += [(line, {"bold": True}) for line in profile_lines(pack["profile"])]
    recs = data["recommendations"]
    if not recs:
        out.append(("No recommendation applies to this patient state.", {}))
    current = None
    for rec in recs:
        if rec["severity"] != current:
            current = rec["severity"]
            label, colour = _BADGE[current]
            out.append(("", {}))
            out.append((label, {"fg": colour, "bold": True}))
        mark = _MARK[rec["kind"]]
        draft = "" if rec["status"] == "approved" else f" [{rec['status'].upper()}]"
        out.append((f" {mark} {rec['summary']} {citations(rec['citations'])}{draft}", {"fg": _BADGE[rec["severity"]][1]} if rec["severity"] == "critical" else {}))
        out.append((f"     {rec['rule_id']} v{rec['rule_version']}; because " + "; ".join(map(_because, rec["evidence"][:5]))
                    + (" ..." if len(rec["evidence"]) > 5 else ""), {"dim": True}))
        if "dose" in rec:
            out.extend((f"     {line}", {}) for line in dose_lines(rec["dose"]))
    if data["not_evaluable"]:
        out.append(("", {}))
        out.append((f"COULD NOT DECIDE ({len(data['not_evaluable'])} rules; these facts are unknown)", {"bold": True}))
        for ne in data["not_evaluable"]:
            out.append((f" - {ne['rule_id']}: missing {', '.join(ne['missing'])}", {}))
    for warning in data["warnings"]:
        out.append((f"note: {warning}", {"fg": "yellow"}))
    out.append(("Citations marked ? are cited by the source but absent from its reference list.", {"dim": True}))
    return out

def rule_detail(pack: RulePack, rule: Rule) -> dict[str, Any]:
    """Everything about one rule, with its citations resolved."""
    data = dict(rule.raw)
    data["citations"] = [
        {**pack.references[c.ref].to_dict(), **({"evidence": c.evidence} if c.evidence else {})} for c in rule.citations
    ]
    data["location"] = {"file": rule.file, "line": rule.line}
    data["pack"] = {"name": pack.name, "version": pack.version, "sha256": pack.sha256}
    return data
