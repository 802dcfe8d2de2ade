"""The engine's behaviour on a pack made for these tests (tests/packs/engine), not on the bundled protocol:
fires, does not fire, or is not evaluable with the facts it lacks; provenance; doses by weight; threads;
a failing engine. Changing the protocol in rules/ cannot break these."""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pressor import EvaluationError, evaluate, load_pack
from pressor.engine.evaluation import _durable

PACK_DIR = Path(__file__).resolve().parent / "packs" / "engine"
NOW = datetime(2026, 1, 3, tzinfo=timezone.utc)
LOW_MAP = {"vitals": {"map_mmhg": 60}, "patient": {"weight_kg": 80}}


@pytest.fixture(scope="module")
def fixture_pack():
    return load_pack(PACK_DIR, check_examples=True, cache=False)


def test_a_missing_fact_makes_a_rule_not_evaluable_naming_it_never_false(fixture_pack):
    result = evaluate(fixture_pack, LOW_MAP, now=NOW)
    assert result.fired_ids() == []
    assert {n.rule_id: n.missing for n in result.not_evaluable} == {
        "case.start": ("infusions.norepinephrine_mcg_kg_min",),
        "case.monitor": ("infusions.norepinephrine_mcg_kg_min",),
        "case.no-dopamine": ("infusions.dopamine_mcg_kg_min", "order.drug"),
    }


def test_a_known_false_fact_is_not_fired_and_not_listed_as_missing(fixture_pack):
    state = {**LOW_MAP, "infusions": {"norepinephrine_mcg_kg_min": 0.1, "dopamine_mcg_kg_min": 0}, "order": {"drug": "vasopressin", "purpose": "add_on"}}
    result = evaluate(fixture_pack, state, now=NOW)
    assert result.fired_ids() == ["case.monitor"] and result.not_evaluable == ()


def test_a_recommendation_carries_its_rule_citations_evidence_and_dose_for_the_weight(fixture_pack):
    state = {**LOW_MAP, "infusions": {"norepinephrine_mcg_kg_min": 0}}
    (rec,) = [r for r in evaluate(fixture_pack, state, now=NOW).recommendations if r.rule_id == "case.start"]
    assert (rec.rule_version, rec.status, [c.number for c in rec.citations]) == ("1.0.0", "approved", [1])
    assert [(e.fact, e.value) for e in rec.evidence] == [
        ("derived.hypotensive", True), ("vitals.map_mmhg", 60), ("infusions.norepinephrine_mcg_kg_min", 0)]
    assert rec.dose["for_weight"] == {"weight_kg": 80, "range": {"low": 4.0, "high": 8.0, "unit": "mcg/min"}}


def test_an_any_fires_on_either_branch(fixture_pack):
    for extra in ({"infusions": {"dopamine_mcg_kg_min": 5}}, {"order": {"drug": "dopamine", "purpose": "first_line"}}):
        assert "case.no-dopamine" in evaluate(fixture_pack, {**LOW_MAP, **extra}, now=NOW).fired_ids()


def test_concurrent_evaluations_from_threads_are_correct(fixture_pack):
    states = [LOW_MAP, {**LOW_MAP, "infusions": {"norepinephrine_mcg_kg_min": 0}},
              {**LOW_MAP, "infusions": {"norepinephrine_mcg_kg_min": 0.2, "dopamine_mcg_kg_min": 3}}]
    expected = [evaluate(fixture_pack, s, now=NOW).to_dict() for s in states]
    errors: list[str] = []

    def worker(offset: int) -> None:
        for i in range(150):
            k = (i + offset) % len(states)
            if evaluate(fixture_pack, states[k], now=NOW).to_dict() != expected[k]:
                errors.append(f"thread {offset} state {k}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_engine_failure_is_translated_and_the_engine_rebuilt(monkeypatch):
    fresh = load_pack(PACK_DIR, cache=False)
    state = {**LOW_MAP, "infusions": {"norepinephrine_mcg_kg_min": 0}}
    before = evaluate(fresh, state, now=NOW).fired_ids()

    def broken(*_args):
        raise _durable._dre.error("Could not assert fact, error code: 303")

    with monkeypatch.context() as m:
        m.setattr(_durable._dre, "assert_fact", broken)
        with pytest.raises(EvaluationError, match="durable-rules failed"):
            evaluate(fresh, state, now=NOW)
    assert evaluate(fresh, state, now=NOW).fired_ids() == before == ["case.start"]
