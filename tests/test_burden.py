"""bench/burden.py counts what a clinician would read, from hand-written result lines (no real data)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


burden = _load("burden")


def rec(rule_id: str, summary: str = "") -> dict:
    return {"rule_id": rule_id, "summary": summary}


def ask(fact: str) -> dict:
    return {"fact": fact, "question": f"{fact}?", "decides": [{"rule_id": "x", "severity": "info", "title": "x"}]}


# Three calls: a quiet one, one with two MAP targets, one with volume-first beside a titrate-up.
QUIET = {"recommendations": [], "conditional": [rec("target.map-65")], "ask_next": [ask("shock.type")],
         "not_evaluable": [], "warnings": []}
TWO_TARGETS = {"recommendations": [rec("target.map-65"), rec("target.map-70-75-chronic-hypertension"),
                                   rec("target.no-map-85")],
               "conditional": [rec("a"), rec("b")], "ask_next": [ask("shock.type"), ask("patient.pregnant")],
               "not_evaluable": [], "warnings": ["w"]}
VOLUME_AND_UP = {"recommendations": [rec("hypovolemia.volume-first"), rec("norepinephrine.titrate"),
                                     rec("target.map-65"), rec("target.no-map-85")],
                 "conditional": [], "ask_next": [], "not_evaluable": [], "warnings": []}


def test_one_call_counts_firm_if_items_and_questions():
    c = burden.count_call(TWO_TARGETS)
    assert (c["firm"], c["conditional"], c["questions"], c["read"]) == (3, 2, 2, 7)
    assert c["question_facts"] == ["patient.pregnant", "shock.type"]
    assert c["two_map_targets"] and not c["volume_first_beside_start_or_up"]
    assert c["warnings"] == 1 and c["source"] == "result"


def test_target_no_rules_set_no_target_and_a_conditional_target_is_not_firm():
    assert not burden.gives_map_target("target.no-map-85")
    assert burden.gives_map_target("target.permissive-older-adults")
    assert not burden.count_call(VOLUME_AND_UP)["two_map_targets"]  # map-65 + no-map-85: one target
    assert not burden.count_call(QUIET)["two_map_targets"]


def test_volume_first_beside_start_or_up_by_rule_id_or_by_its_words():
    assert burden.count_call(VOLUME_AND_UP)["volume_first_beside_start_or_up"]
    by_words = {"recommendations": [rec("other.rule", "Bleeding: volume first; No routine vasopressor"),
                                    rec("norepinephrine.start-emergency")]}
    assert burden.count_call(by_words)["volume_first_beside_start_or_up"]
    volume_alone = {"recommendations": [rec("hypovolemia.volume-first")], "ask_next": [ask("x")]}
    assert not burden.count_call(volume_alone)["volume_first_beside_start_or_up"]


def test_summary_over_calls_and_stays():
    calls = [burden.count_call(r) for r in (QUIET, TWO_TARGETS, VOLUME_AND_UP, QUIET)]
    s = burden.summarise(calls, errors=1, stays=[1, 1, 2, 2])
    assert s["states"] == 4 and s["errors"] == 1 and s["stays"] == 2
    assert [c["read"] for c in calls] == [2, 7, 4, 2]
    assert s["read_per_call"] == {"p50": 2.0, "p90": 7.0, "mean": 3.75, "max": 7}
    assert s["if_items_per_call"]["mean"] == 1.0
    assert s["questions_asked_pct"] == {"shock.type": 75.0, "patient.pregnant": 25.0}
    assert s["two_map_targets_pct"] == 25.0 and s["two_map_targets_states"] == 1
    assert s["volume_first_beside_start_or_up_pct"] == 25.0
    assert s["top_firm_rules_pct"]["target.map-65"] == 50.0
    # Stay 1: shock.type asked at hour 1 and again at hour 2; stay 2: nothing asked at its hour 1.
    assert s["question_asked_again_next_hour_pct"] == 100.0
    assert s["calls_with_nothing_to_read_pct"] == 0.0


def test_a_plan_decides_what_is_counted():
    result = dict(TWO_TARGETS, plan={
        "items": [{"decision": "map-target", "status": "firm", "shown": True, "rule_id": "target.map-65"},
                  {"decision": "map-target", "status": "firm", "shown": False,
                   "rule_id": "target.map-70-75-chronic-hypertension"},
                  {"decision": "start", "status": "conditional", "rule_id": "norepinephrine.start"},
                  {"decision": "x", "status": "conditional", "shown": False, "rule_id": "y"}],
        "questions": [{"fact": "shock.type"}, {"fact": "patient.pregnant", "shown": False}],
        "supporting": [rec("monitoring.titration")], "bans": []})
    c = burden.count_call(result)
    assert c["source"] == "plan"
    assert (c["firm"], c["conditional"], c["questions"], c["read"]) == (1, 1, 1, 3)
    assert c["question_facts"] == ["shock.type"]
    assert not c["two_map_targets"]  # the second target is not shown
    assert burden.count_call({"plan": {}})["read"] == 0  # an empty plan is read defensively


def test_the_command_reads_batch_lines_and_skips_errors(tmp_path, capsys):
    lines = [{"index": 0, "source": "s:1", "ok": True, "result": QUIET},
             {"index": 1, "source": "s:2", "ok": False, "exit_code": 1, "error": "patient_state_error", "problems": []},
             {"index": 2, "source": "s:3", "ok": True, "result": TWO_TARGETS}]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(x) + "\n" for x in lines) + "\n")
    meta = tmp_path / "meta.jsonl"
    meta.write_text("".join(json.dumps({"stay_id": s, "hour": h}) + "\n" for s, h in ((7, 1), (7, 2), (7, 3))))
    assert burden.main([str(results), "--meta", str(meta), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["states"], s["errors"], s["stays"]) == (2, 1, 1)
    assert s["read_per_call"]["max"] == 7
    assert burden.main([str(results)]) == 0
    assert "two different MAP targets (firm): 50.0%" in capsys.readouterr().out


@pytest.mark.parametrize("values, p50, p90", [([], 0.0, 0.0), ([5], 5.0, 5.0), (list(range(1, 11)), 5.0, 9.0)])
def test_percentile_is_nearest_rank(values, p50, p90):
    assert burden.percentile(values, 0.5) == p50 and burden.percentile(values, 0.9) == p90
