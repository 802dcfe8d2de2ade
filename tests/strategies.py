"""Hypothesis strategies for patient states, read off ``schemas/patient-state.schema.json``.

Every section and every fact may be absent (absent = unknown); half the time a state or
section is drawn complete, so that most rules are decided as well. Numbers come mostly
from the values where rules change their answer: each threshold the bundled pack
compares a fact with, its neighbours on both sides, the schema's bounds and a few
cross-fact edges (MAP against its 65/70 targets, 20 mL/kg x 50 kg = 1 L); otherwise
from the schema's range. Every state drawn passes the schema and the semantic checks
(DBP below SBP, MAP between them), so evaluating it never raises PatientStateError.

Usage::

    from .strategies import patient_states

    @given(state=patient_states())
    def test_something(pack, state): ...
"""
from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

from hypothesis import strategies as st

from pressor.engine.model import leaves

STATE_SCHEMA: dict[str, Any] = json.loads(
    resources.files("pressor.schemas").joinpath("patient-state.schema.json").read_text("utf-8")
)

#: Values where answers change that no single comparison constant shows.
EXTRA_EDGES: dict[str, tuple[float, ...]] = {
    "vitals.map_mmhg": (64, 64.9, 65, 65.1, 69, 69.9, 70, 70.1, 75, 85),
    "vitals.sbp_mmhg": (69, 69.9, 70, 70.1),
    "vitals.dbp_mmhg": (39.9, 40, 40.1, 41),
    "patient.weight_kg": (20, 33.3, 50, 70),
    "fluids.crystalloid_ml_kg": (20, 29.9, 30, 30.1, 39.9, 40, 40.1),
    "infusions.norepinephrine_mcg_kg_min": (0, 0.09, 0.1, 0.11, 0.24, 0.25, 0.26),
    "infusions.vasopressin_units_min": (0, 0.03, 0.04, 0.041),
    "perfusion.urine_output_ml_kg_h": (0.49, 0.5, 0.51),
    "perfusion.capillary_refill_s": (2, 2.1),
    "patient.age_years": (17, 17.9, 18, 18.1),
    "anaphylaxis.minutes_since_epinephrine": (9, 9.9, 10, 10.1),
}


def pack_thresholds(pack: Any) -> dict[str, set[float]]:
    """Every numeric constant the pack's rules and derived facts compare a fact with, by fact path."""
    out: dict[str, set[float]] = {}
    conds = [r.when for r in pack.rules]
    for d in pack.derived:
        conds += ([d.when] if d.when is not None else []) + [c for c, _ in d.cases]
    for cond in conds:
        for leaf in leaves(cond):
            values = leaf.value if leaf.op == "in" else (leaf.value,)
            for v in values:
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out.setdefault(leaf.fact, set()).add(v)
    return out


def _neighbours(x: float) -> set[float]:
    """``x`` and values just either side of it, at a step that suits its size."""
    steps = (0.01,) if abs(x) < 1 else (0.1, 1)
    return {x} | {round(x + d, 4) for s in steps for d in (-s, s)}


def _in_range(node: dict[str, Any], x: float) -> bool:
    lo, xlo, hi = node.get("minimum"), node.get("exclusiveMinimum"), node.get("maximum")
    return (lo is None or x >= lo) and (xlo is None or x > xlo) and (hi is None or x <= hi)


def _number(node: dict[str, Any], edges: set[float]) -> st.SearchStrategy[float]:
    """A number in the schema's range: usually an edge value, sometimes anything in range."""
    exclusive = "exclusiveMinimum" in node
    lo, hi = node.get("minimum", node.get("exclusiveMinimum")), node["maximum"]
    candidates = sorted(x for x in edges | {lo, hi} if _in_range(node, x))
    anything = st.floats(min_value=lo, max_value=hi, exclude_min=exclusive, allow_nan=False, allow_infinity=False)
    whole = st.integers(min_value=math.floor(lo) + 1 if exclusive else math.ceil(lo), max_value=math.floor(hi))
    return st.one_of(st.sampled_from(candidates), st.sampled_from(candidates), anything, whole)


def _value(path: str, node: dict[str, Any], edges: dict[str, set[float]]) -> st.SearchStrategy[Any]:
    t = node.get("type")
    if t == "array":
        return st.lists(st.sampled_from(node["items"]["enum"]), unique=True, max_size=node.get("maxItems", 5))
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if t == "boolean":
        return st.booleans()
    if t in ("number", "integer"):
        return _number(node, edges.get(path, set()))
    raise ValueError(f"no strategy for {path} ({t})")


def _section(name: str, node: dict[str, Any], edges: dict[str, set[float]]) -> st.SearchStrategy[dict[str, Any]]:
    """A section with any of its facts absent, or (as often) with all of them, so that rules get decided too."""
    props = {key: _value(f"{name}.{key}", child, edges) for key, child in node["properties"].items()}
    return st.one_of(st.fixed_dictionaries(props), st.fixed_dictionaries({}, optional=props))


@st.composite
def _consistent_vitals(draw: Any, raw: st.SearchStrategy[dict[str, Any]], edges: dict[str, set[float]]) -> dict[str, Any]:
    """Vitals whose DBP is below SBP and whose MAP lies between them (as the state checks demand)."""
    vitals = dict(draw(raw))
    nodes = STATE_SCHEMA["properties"]["vitals"]["properties"]
    sbp, dbp = vitals.get("sbp_mmhg"), vitals.get("dbp_mmhg")
    if sbp is not None and dbp is not None and dbp >= sbp:
        below = [x for x in edges.get("vitals.dbp_mmhg", ()) if nodes["dbp_mmhg"]["minimum"] <= x < sbp]
        anything = st.floats(min_value=nodes["dbp_mmhg"]["minimum"], max_value=min(nodes["dbp_mmhg"]["maximum"], sbp),
                             exclude_max=sbp <= nodes["dbp_mmhg"]["maximum"])
        dbp = vitals["dbp_mmhg"] = draw(st.one_of(st.sampled_from(below), anything) if below else anything)
    mean = vitals.get("map_mmhg")
    if mean is not None and sbp is not None and dbp is not None and not dbp <= mean <= sbp:
        lo, hi = max(dbp, nodes["map_mmhg"]["minimum"]), min(sbp, nodes["map_mmhg"]["maximum"])
        inside = [x for x in edges.get("vitals.map_mmhg", ()) if lo <= x <= hi]
        anything = st.floats(min_value=lo, max_value=hi)
        vitals["map_mmhg"] = draw(st.one_of(st.sampled_from(inside), anything) if inside else anything)
    return vitals


def patient_states(pack: Any = None) -> st.SearchStrategy[dict[str, Any]]:
    """Valid patient states with any facts absent, biased towards the values where rules change their answer.

    ``pack`` (default: none) adds the thresholds its conditions use to :data:`EXTRA_EDGES`.
    """
    edges: dict[str, set[float]] = {}
    for path, values in EXTRA_EDGES.items():
        edges.setdefault(path, set()).update(values)
    if pack is not None:
        for path, values in pack_thresholds(pack).items():
            for v in values:
                edges.setdefault(path, set()).update(_neighbours(v))
    sections: dict[str, st.SearchStrategy[Any]] = {}
    for name, node in STATE_SCHEMA["properties"].items():
        if node.get("type") == "object":
            sections[name] = _section(name, node, edges)
        else:
            sections[name] = _value(name, node, edges)
    sections["vitals"] = _consistent_vitals(sections["vitals"], edges)
    return st.one_of(st.fixed_dictionaries(sections), st.fixed_dictionaries({}, optional=sections))
