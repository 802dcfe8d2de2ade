"""The explanation agrees with the engine on generated patient states (hypothesis).

For every rule: fired <-> the engine fired it; not evaluable <-> the engine listed it as
not evaluable (with the same missing facts); everything else is not fired or inactive.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from .strategies import patient_states

from pressor.engine.evaluation.evaluate import ACTIVE_WITH_DRAFTS, evaluate
from pressor.engine.evaluation.explain import explain
from pressor.engine.model import leaves
from pressor.engine.evaluation.pack import load_pack

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
#: Loaded at import: the strategy is built from the pack's thresholds before any fixture exists.
PACK = load_pack()


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=patient_states(PACK), include_draft=st.booleans())
def test_explanation_agrees_with_the_engine(state, include_draft, explanation_validator):
    result = evaluate(PACK, state, now=NOW, include_draft=include_draft)
    explanation = explain(PACK, state, now=NOW, include_draft=include_draft)
    fired = set(result.fired_ids())
    undecided = {n.rule_id: n.missing for n in result.not_evaluable}
    active = ACTIVE_WITH_DRAFTS if include_draft else PACK.in_force
    assert [r.rule_id for r in explanation.rules] == [r.id for r in PACK.rules]
    for rule, explained in zip(PACK.rules, explanation.rules):
        if explained.outcome == "fired":
            assert rule.id in fired
            assert len(explained.conditions) == len(leaves(rule.when))
        elif explained.outcome == "superseded":  # held, but a fired rule that refines it is shown instead
            assert rule.id not in fired and set(explained.reason.removeprefix("superseded by ").split(", ")) <= fired
        elif explained.outcome == "not_evaluable":
            assert explained.missing == undecided[rule.id]
        else:
            assert rule.id not in fired and rule.id not in undecided
            assert (explained.outcome == "inactive") == (rule.status not in active)
        if explained.outcome == "not_fired":  # each comparison shown is one that failed (true, under a not())
            assert explained.conditions and all(c.truth is c.negated for c in explained.conditions)
        if explained.outcome == "not_evaluable":
            assert explained.conditions and all(c.truth is None for c in explained.conditions)
    assert set(fired) == {r.rule_id for r in explanation.rules if r.outcome == "fired"}
    assert set(undecided) == {r.rule_id for r in explanation.rules if r.outcome == "not_evaluable"}
    assert not list(explanation_validator.iter_errors(explanation.to_dict()))


@pytest.mark.slow
def test_the_strategy_reaches_the_boundaries():
    """The states drawn include each threshold exactly (not only values near it) and absent facts."""
    states = patient_states(PACK)
    # The first hit will do: no shrinking, and the same draws every run.
    quick = settings(max_examples=5000, database=None, phases=[Phase.generate], derandomize=True)
    for section, key, value in (("vitals", "sbp_mmhg", 70), ("vitals", "dbp_mmhg", 40), ("vitals", "map_mmhg", 65),
                                ("infusions", "norepinephrine_mcg_kg_min", 0.1), ("infusions", "norepinephrine_mcg_kg_min", 0.25),
                                ("fluids", "crystalloid_ml_kg", 30), ("patient", "age_years", 18)):
        find(states, lambda s: s.get(section, {}).get(key) == value, settings=quick)  # noqa: B023 (find runs now)
    find(states, lambda s: "vitals" in s and "map_mmhg" not in s["vitals"], settings=quick)
