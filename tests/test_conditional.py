"""When facts are missing: conditional advice, the next question, not applicable (issue 10).

The two patients of the issue are examples/septic-no-infusions.yaml (58 years, MAP 58 after
32 mL/kg, no infusions section) and examples/pediatric-extremities-unknown.yaml (12 years, MAP 57,
extremity temperature not recorded). The property test checks the residual's meaning over
generated states: supplying an asked fact with a value that makes a conditional rule's residual
true makes that rule fire firmly with the same dose; a value that makes it false keeps it from firing.
"""
from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, Phase

from pressor.engine.errors import PatientStateError
from pressor.engine.evaluation.evaluate import superseded_notes, evaluate, flatten_state
from pressor.engine.evaluation.logic import derive, truth
from pressor.engine.evaluation.residual import _values, context
from pressor.engine.report import result_text
from pressor.service.cards import conditional_cards, questions_card

from .conftest import EXAMPLES
from .strategies import patient_states

#: Facts a dose itself reads: supplying one of them changes the dose, by design.
DOSE_INPUTS = {"patient.weight_kg", "patient.age_years", "infusions.norepinephrine_concentration_mcg_ml",
               "fluids.crystalloid_ml_kg"}


def _state(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def _lines(result) -> list[str]:
    return [line for line, _ in result_text(result, color=False, full=True)]  # every item, as --all shows


def test_septic_adult_without_infusions_is_offered_the_start_of_norepinephrine_first(pack, now, result_validator):
    result = evaluate(pack, _state("septic-no-infusions.yaml"), now=now)
    result_validator.validate(result.to_dict())
    # norepinephrine is in use whether or not it already runs (running, or to be started): line and monitoring
    # advice is firm, decided for any value of the rate (2.1.0; conditional on it before)
    assert {"target.map-65", "target.no-map-85", "access.arterial-line", "monitoring.titration"} <= set(result.fired_ids())
    assert result.decided_for_any_value["derived.norepinephrine_in_use"] == ("infusions.norepinephrine_mcg_kg_min",)
    first = result.conditional[0]
    assert first.rule_id == "norepinephrine.start" and first.text == "norepinephrine is not already running"
    dose = next(c for c in result.conditional if c.rule_id == "norepinephrine.dose-adult")
    assert dose.text == first.text and dose.dose["for_weight"]["weight_kg"] == 70
    assert dose.dose["for_weight"]["range"] == {"low": 1.4, "high": 3.5, "unit": "mcg/min"}
    assert result.ask_next[0].fact == "infusions.norepinephrine_mcg_kg_min"
    assert "norepinephrine.start" in [r for r, _, _ in result.ask_next[0].decides]
    lines = _lines(result)
    after_firm = lines[lines.index(next(line for line in lines if line.startswith("IF "))):]
    assert after_firm[0] == "IF norepinephrine is not already running:"
    assert after_firm[1].strip().startswith("(ask: Is a norepinephrine infusion running")
    assert "start norepinephrine" in after_firm[2]
    assert "ASK FIRST:" in lines
    assert not any(line.startswith("IF ") for line in lines[:lines.index(after_firm[0])])


def test_child_without_extremity_temperature_is_offered_norepinephrine_if_cold(pack, now, result_validator):
    """Pack 2.0.0 starts norepinephrine (or epinephrine) for any fluid-refractory child; the cold-shock start
    still hangs on the extremities, and is the first conditional advice, with its dose, and the first question."""
    result = evaluate(pack, _state("pediatric-extremities-unknown.yaml"), now=now)
    result_validator.validate(result.to_dict())
    assert result.ask_next[0].fact == "perfusion.cold_extremities"
    assert result.ask_next[0].question == "Are the extremities cold (poor peripheral perfusion)?"
    first = result.conditional[0]
    assert first.rule_id == "special.pediatric-cold-shock" and first.text == "the extremities are cold"
    assert first.dose["for_weight"]["range"] == {"value": 4.0, "unit": "mcg/min"}
    lines = _lines(result)
    assert lines[lines.index("IF the extremities are cold:") + 2].startswith(" + Child in cold septic shock")


def test_not_applicable_is_not_undecided(pack, now):
    """No order section: the ban on a proposed order is not applicable, not asked, not 'could not decide'."""
    result = evaluate(pack, _state("pediatric-extremities-unknown.yaml"), now=now)
    na = {n.rule_id: n for n in result.not_applicable}
    assert na["avoid.low-dose-dopamine-renal"].because == "no order is proposed"
    assert na["avoid.low-dose-dopamine-renal"].declared == ("order",)
    assert "avoid.low-dose-dopamine-renal" in {n.rule_id for n in result.not_evaluable}  # the engine's answer stands
    assert not any(a.fact.startswith("order.") for a in result.ask_next)
    lines = _lines(result)
    assert not any("avoid.low-dose-dopamine-renal" in line for line in lines)
    assert any(line.startswith("Not applicable (") and "no order is proposed" in line for line in lines)


def test_absent_line_contents_are_not_applicable_only_when_norepinephrine_is_known_not_running(pack, now):
    state = _state("pediatric-extremities-unknown.yaml")
    del state["line_coinfusions"]
    na = {n.rule_id for n in evaluate(pack, state, now=now).not_applicable}
    assert "avoid.alkaline-coinfusion" in na
    del state["infusions"]["norepinephrine_mcg_kg_min"]
    result = evaluate(pack, state, now=now)
    assert "avoid.alkaline-coinfusion" in {c.rule_id for c in result.conditional}
    assert "line_coinfusions" in {a.fact for a in result.ask_next}


def test_full_state_has_nothing_conditional(pack, now):
    state = _state("septic-shock-adult.yaml")
    state["order"] = {"drug": "norepinephrine", "purpose": "first_line"}
    state["findings"].update(active_bleeding=False, fluid_overload=False)
    state["patient"].update(goals_of_care="full", sex="male", height_cm=178)  # the facts pack 3.0.0 reads
    state["findings"].update(caesarean_spinal_hypotension=False)
    state["infusions"].update(norepinephrine_last_rate_mcg_kg_min=0)
    result = evaluate(pack, state, now=now)
    assert not result.not_evaluable and not result.conditional and not result.ask_next and not result.not_applicable


def test_a_fact_whose_every_value_gives_the_same_advice_is_not_asked(pack, now):
    """MAP 57 is below both targets (65 and 70): chronic hypertension does not decide the start."""
    state = _state("pediatric-extremities-unknown.yaml")
    del state["patient"]["chronic_hypertension"]
    result = evaluate(pack, state, now=now)
    for ask in result.ask_next:
        if ask.fact == "patient.chronic_hypertension":
            assert not {r for r, _, _ in ask.decides} & {"special.pediatric-cold-shock", "norepinephrine.start"}


def test_cards_for_conditional_advice_never_order(pack, now):
    result = evaluate(pack, _state("septic-no-infusions.yaml"), now=now)
    cards = conditional_cards([result], {}, pack=result.pack, hook_instance="h", base_url="http://x")
    assert cards and all(c["summary"].startswith("If ") and len(c["summary"]) < 140 for c in cards)
    assert all("suggestions" not in c and c["indicator"] == "info" for c in cards)
    assert cards[0]["summary"].startswith("If norepinephrine is not already running: Adult: MAP below target")
    ask = questions_card([result], pack=result.pack, hook_instance="h", base_url="http://x")
    assert ask["summary"] == "Ask first: Is a norepinephrine infusion running, and at what rate (mcg/kg/min)?"


def _fired(result, rule_id: str) -> bool:
    """Fired and shown, or fired and left out because a shown rule supersedes it ("a, b are not shown: ...")."""
    return rule_id in result.fired_ids() or rule_id in superseded_notes(result.warnings)


@pytest.mark.slow
@pytest.mark.xfail(reason="known gap (pack 3.0.0): a conditional rule's residual is computed without decide-by-"
                          "completion, so once a fact is supplied a completion-decided derived fact can make the rule fire "
                          "where its residual said it would not (e.g. fluids.bolus-30ml-kg once the age is known); the "
                          "advice then fires firmly, it is never shown wrongly", strict=False)
# Each example evaluates the state again for every value of every asked fact (with pack 3.0.0's completion and
# plan, minutes for 60 examples on a loaded 2-core machine): 20 examples, no shrinking (a failure prints its state).
@settings(max_examples=20, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(state=patient_states())
def test_supplying_the_asked_fact_decides_the_conditional_advice(pack, now, state):
    result = evaluate(pack, state, now=now)
    ctx = context(pack)
    facts = flatten_state(state)
    derive(pack.derived, facts)
    asked = {a.fact: {r for r, _, _ in a.decides} for a in result.ask_next}
    for c in result.conditional:
        for fact in c.facts:
            if c.rule_id not in asked.get(fact, ()):
                continue
            for value in _values(ctx, fact, c.condition, facts):
                section, _, key = fact.partition(".")
                supplied = {k: dict(v) if isinstance(v, dict) else v for k, v in state.items()}
                if key:
                    supplied.setdefault(section, {})[key] = value
                else:
                    supplied[section] = value
                try:
                    after = evaluate(pack, supplied, now=now)
                except PatientStateError:
                    continue  # e.g. a diastolic pressure above the systolic
                known = flatten_state(supplied)
                derive(pack.derived, known)
                holds = truth(c.condition, known)
                if holds is True:
                    assert _fired(after, c.rule_id), (c.rule_id, fact, value, c.text)
                    rec = next((r for r in after.recommendations if r.rule_id == c.rule_id), None)
                    if rec is not None and fact not in DOSE_INPUTS:
                        assert rec.dose == c.dose
                elif holds is False:
                    assert not _fired(after, c.rule_id), (c.rule_id, fact, value, c.text)


def test_the_audit_record_keeps_the_conditional_advice_and_replays_it_exactly(pack, now, audit_db):
    from pressor.engine.audit import AuditLog

    state = _state("septic-no-infusions.yaml")
    result = evaluate(pack, state, now=now)
    with AuditLog.open(audit_db) as log:
        rec = log.append(pack, state, result, now=now, user="u")
        assert rec.result["conditional"][0]["rule_id"] == "norepinephrine.start"
        assert rec.result["ask_next"][0]["fact"] == "infusions.norepinephrine_mcg_kg_min"
        assert log.replay(rec.id).identical and log.replay(rec.id).identical  # cold, then warm caches


def test_every_fact_has_a_question_and_every_wording_names_a_fact(pack):
    from pressor.engine.evaluation.residual import context
    from pressor.engine.evaluation.wording import wording

    inputs = set(context(pack).domains)
    table = wording()
    assert inputs - set(table) == set(), "add these facts to schemas/fact-wording.json"
    assert set(table) - inputs == set(), "schemas/fact-wording.json names facts the patient state does not have"
    for fact, entry in table.items():
        assert entry["question"].endswith("?"), fact
        kind = context(pack).domains[fact][0]
        assert kind != "boolean" or {"true", "false"} <= set(entry), fact


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(states=patient_states().flatmap(lambda a: patient_states().map(lambda b: (a, b))))
def test_the_shared_outcome_cache_never_changes_the_advice(pack, now, states):
    """The residual outcomes are cached per pack under a key of what the known facts say to each comparison
    a rule can reach; advice given from a warm cache (another patient first) equals advice from a cold one."""
    def advice(state):
        r = evaluate(pack, state, now=now)
        return [c.to_dict() for c in r.conditional], [a.to_dict() for a in r.ask_next], [n.to_dict() for n in r.not_applicable]

    first, second = states
    warm = (advice(first), advice(second))
    pack.cache.residual = None
    cold_second = advice(second)
    pack.cache.residual = None
    assert (advice(first), cold_second) == warm


def test_a_cached_analysis_still_doses_each_patient_by_their_own_weight(pack, now):
    """Two patients who differ only in weight share one cached analysis; each conditional dose is their own."""
    light, heavy = _state("septic-no-infusions.yaml"), _state("septic-no-infusions.yaml")
    heavy["patient"]["weight_kg"] = 90

    def dose(result):
        return next(c for c in result.conditional if c.rule_id == "norepinephrine.dose-adult").dose["for_weight"]

    first, second = evaluate(pack, light, now=now), evaluate(pack, heavy, now=now)
    assert dose(first)["weight_kg"] == 70 and dose(first)["range"] == {"low": 1.4, "high": 3.5, "unit": "mcg/min"}
    assert dose(second)["weight_kg"] == 90 and dose(second)["range"] == {"low": 1.8, "high": 4.5, "unit": "mcg/min"}
    assert evaluate(pack, light, now=now).conditional == first.conditional


def test_the_analysis_caches_are_bounded(pack, now, monkeypatch):
    """However many distinct patients, the per-pack caches keep at most their bound (memory stays flat)."""
    from pressor.engine.evaluation.residual import ResidualContext

    monkeypatch.setattr(ResidualContext, "ANALYSES", 3)
    monkeypatch.setattr(ResidualContext, "CACHE_SIZE", 2)
    pack.cache.residual = None
    try:
        from pathlib import Path

        from pressor.engine.authoring.scenarios import load_scenarios

        for s in load_scenarios([Path(__file__).parent / "scenarios"], pack):  # 122 patients, many with facts missing
            evaluate(pack, s.state, now=s.now, include_draft=s.include_draft)
        ctx = context(pack)
        assert len(ctx.analyses) == 3 and len(ctx.assembled) == 3 and len(ctx.outcomes) == 8  # filled to the bound, no further
        assert len(ctx._deciding) <= 2
    finally:
        pack.cache.residual = None


def test_a_derived_fact_known_only_because_an_input_is_absent_is_not_a_constant(pack, now):
    """Profound hypotension with the shock type unknown starts norepinephrine at once (the pack lets an
    unknown shock type through). The adult dose offered on condition of the shock type must not list a
    type that would stop that start: hypovolaemic shock is volume first (found by the property test)."""
    state = {"patient": {"age_years": 40, "weight_kg": 70, "pregnant": False}, "shock": {},
             "vitals": {"sbp_mmhg": 65, "dbp_mmhg": 38}, "infusions": {"norepinephrine_mcg_kg_min": 0},
             "findings": {"active_bleeding": False}}
    result = evaluate(pack, state, now=now)
    assert "norepinephrine.start-emergency" in result.fired_ids()
    dose = next(c for c in result.conditional if c.rule_id == "norepinephrine.dose-adult")
    for shock, fires in (("septic", True), ("hypovolemic", False), ("cardiogenic", True)):
        known = {**state, "shock": {"type": shock}}
        assert truth(dose.condition, {**flatten_state(known)}) is fires
        assert ("norepinephrine.dose-adult" in evaluate(pack, known, now=now).fired_ids()) is fires


def test_a_fact_not_recorded_or_answered_one_way_reads_as_it_is_not_recorded_that_the_other():
    """``bleeding unknown or no bleeding`` reads once, "it is not recorded that there is active bleeding", in
    parentheses inside a longer condition, whichever order or negation the residual holds it in."""
    from pressor.engine.evaluation.wording import words
    from pressor.engine.model import All, Any_, Compare, Not

    fact = "findings.active_bleeding"
    unknown, no_bleeding = Compare(fact, "unknown"), Compare(fact, "==", False)
    expected = "it is not recorded that there is active bleeding"
    assert words(Any_((unknown, no_bleeding))) == expected
    assert words(Any_((no_bleeding, Not(Compare(fact, "known"))))) == expected
    assert words(Not(All((Compare(fact, "known"), Compare(fact, "==", True))))) == expected
    assert words(All((Any_((unknown, no_bleeding)), Compare("access.central_venous", "==", False)))) == \
        f"({expected}) and there is no central line"
    # a different fact on the other side is not the same thing: both are said
    other = words(Any_((unknown, Compare("access.central_venous", "==", False))))
    assert "not recorded" in other and "central line" in other and "it is not recorded that" not in other


def test_the_solver_memory_is_bounded_and_its_answers_unchanged(now, monkeypatch):
    """The solver's translated formulas are dropped past ResidualContext.SOLVER_FORMULAS (a long batch of varied
    states kept meeting new residuals: +65 MB by 200,000 states); starting afresh changes no answer."""
    from pressor.engine.evaluation.pack import load_pack
    from pressor.engine.evaluation.residual import ResidualContext

    states = []
    for name in ("septic-no-infusions.yaml", "pediatric-extremities-unknown.yaml", "septic-shock-adult.yaml",
                 "cardiogenic-on-norepinephrine.yaml", "hepatorenal.yaml"):
        full = _state(name)
        facts = [(section, key) for section, values in full.items() if isinstance(values, dict) for key in values]
        for i, (section, key) in enumerate(facts):  # each state without one or two of its facts: new residuals
            for other in (None, facts[(i + 3) % len(facts)]):
                state = {s: dict(v) if isinstance(v, dict) else v for s, v in full.items()}
                for s, k in filter(None, ((section, key), other)):
                    state[s].pop(k, None)
                states.append(state)
    expected = [evaluate(load_pack(), s, now=now).to_dict() for s in states]

    monkeypatch.setattr(ResidualContext, "SOLVER_FORMULAS", 8)
    pack = load_pack()
    spaces, largest = set(), 0
    for state, want in zip(states, expected):
        assert evaluate(pack, state, now=now).to_dict() == want
        space = context(pack)._space
        if space is not None:
            spaces.add(id(space))
            largest = max(largest, len(space._memo))
    assert len(spaces) > 1, "the solver never started afresh: the bound was not reached"
    print(f"{len(states)} states, {len(spaces)} solver spaces, at most {largest} formulas kept")
    assert largest < 200  # the bound (8) plus what one question translates, never the whole run's
