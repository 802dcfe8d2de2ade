"""Hypothesis strategies: valid patient states drawn from the patient-state schema.

Numbers favour the protocol's thresholds (and just either side of them), so that
generated states land on rule boundaries; any fact may be absent (unknown).
"""
from __future__ import annotations

from hypothesis import strategies as st

from pressor.engine.compile import state_vocabulary
from pressor.engine.validate import STATE_SCHEMA, schema

VOCAB = state_vocabulary(schema(STATE_SCHEMA))
#: Thresholds the pack compares against, with the values either side of them.
THRESHOLDS = (0, 0.02, 0.04, 0.05, 0.1, 0.25, 0.5, 2, 10, 18, 30, 40, 65, 70, 1000)


def _number(ft) -> st.SearchStrategy:
    lo = ft.minimum if ft.minimum is not None else 0
    hi = ft.maximum if ft.maximum is not None else 1000
    near = sorted({round(t + d, 4) for t in THRESHOLDS for d in (-0.01, 0, 0.01) if lo <= t + d <= hi})
    ints = st.integers(min_value=int(lo) if lo == int(lo) else int(lo) + 1, max_value=int(hi))
    floats = st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)
    return st.one_of(st.sampled_from(near) if near else floats, ints, floats)


def _value(ft) -> st.SearchStrategy:
    if ft.kind == "number":
        return _number(ft)
    if ft.kind == "boolean":
        return st.booleans()
    if ft.kind == "enum":
        return st.sampled_from(ft.values)
    return st.lists(st.sampled_from(ft.values), unique=True, max_size=3)


def _consistent(state: dict) -> bool:
    v = state.get("vitals", {})
    sbp, dbp, mean = v.get("sbp_mmhg"), v.get("dbp_mmhg"), v.get("map_mmhg")
    if sbp is not None and dbp is not None and dbp >= sbp:
        return False
    if None not in (sbp, dbp, mean) and not dbp <= mean <= sbp:
        return False
    return True


@st.composite
def patient_states(draw, presence: float = 0.8) -> dict:
    """A valid patient state; each fact is present with probability about ``presence``."""
    state: dict = {}
    for path, ft in VOCAB.items():
        if draw(st.floats(0, 1)) > presence:
            continue
        value = draw(_value(ft))
        if "." in path:
            section, key = path.split(".", 1)
            state.setdefault(section, {})[key] = value
        else:
            state[path] = value
    if not _consistent(state):
        state.get("vitals", {}).pop("map_mmhg", None)
        v = state.get("vitals", {})
        if v.get("sbp_mmhg") is not None and v.get("dbp_mmhg") is not None and v["dbp_mmhg"] >= v["sbp_mmhg"]:
            v.pop("dbp_mmhg")
    return state
