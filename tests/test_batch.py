"""pressor recommend --batch: many states, one JSON line each, in input order; bad states answered alone."""
from __future__ import annotations

import pytest
import json
import os
import subprocess
import sys
from dataclasses import fields, make_dataclass
from datetime import datetime, timezone
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from pressor.cli import exit_codes
from pressor.cli.main import cli
from pressor.engine.audit import store_sqlite as audit_mod
from pressor.engine.audit import AuditLog
from pressor.engine.evaluation import batch, result_json
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import load_document
from pressor.engine.evaluation.result_json import ResultWriter, compact_json
from pressor.engine.model import Result

from .strategies import patient_states

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOW = "2026-11-24T12:00:00Z"
NOW_DT = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def _states() -> list[dict]:
    return [load_document(p).data for p in sorted(EXAMPLES.glob("*.yaml"))]


def _jsonl(states) -> str:
    return "".join(json.dumps(s) + "\n" for s in states)


def _run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(cli, ["recommend", "--batch", "--now", NOW, *args], input=stdin)


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_json_lines_on_stdin_answered_in_order_exactly_as_one_at_a_time(pack, result_validator):
    states = _states()
    out = _run("-", "--no-audit", stdin=_jsonl(states))
    assert out.exit_code == 0, out.stderr
    lines = _lines(out.stdout)
    assert [(x["index"], x["source"], x["ok"]) for x in lines] == [(i, f"<stdin>:{i + 1}", True) for i in range(len(states))]
    for state, line in zip(states, lines):
        result_validator.validate(line["result"])
        assert line["result"] == evaluate(pack, state, now=NOW_DT).to_dict()
    assert f"{len(states)} states: {len(states)} answered" in out.stderr


def test_a_bad_state_gets_its_own_error_line_and_the_others_are_answered():
    good = _states()[0]
    stdin = "\n".join([json.dumps(good), '{"vitals": {"map_mmhg": "low"}}', "not json", "", json.dumps(good)]) + "\n"
    out = _run("-", "--no-audit", stdin=stdin)
    assert out.exit_code == exit_codes.INVALID
    lines = _lines(out.stdout)
    assert [x["ok"] for x in lines] == [True, False, False, True]
    assert [x["source"] for x in lines] == ["<stdin>:1", "<stdin>:2", "<stdin>:3", "<stdin>:5"]  # blank line skipped
    invalid, malformed = lines[1], lines[2]
    assert invalid["error"] == "patient_state_error" and invalid["exit_code"] == 1
    assert invalid["problems"][0]["pointer"] == "/vitals/map_mmhg" and invalid["problems"][0]["file"] == "<stdin>:2"
    assert malformed["error"] == "input_error" and "malformed JSON" in malformed["problems"][0]["message"]
    assert "2 invalid" in out.stderr


def test_two_processes_write_what_one_does(tmp_path):
    states = _states() * 30 + [{"vitals": {"map_mmhg": -5}}]
    source = tmp_path / "states.jsonl"
    source.write_text(_jsonl(states))
    runs = [subprocess.run([sys.executable, "-c", "from pressor.cli.main import main; main()", "recommend", "--batch",
                            str(source), "--now", NOW, "--no-audit", "--jobs", jobs], capture_output=True, text=True)
            for jobs in ("1", "2")]
    assert [r.returncode for r in runs] == [exit_codes.INVALID] * 2, runs[1].stderr
    assert runs[0].stdout == runs[1].stdout
    assert len(runs[1].stdout.splitlines()) == len(states)


def test_a_directory_of_state_files_in_name_order_with_located_errors(tmp_path):
    (tmp_path / "b.yaml").write_text((EXAMPLES / "no-weight.yaml").read_text())
    (tmp_path / "a.json").write_text(json.dumps(_states()[0]))
    (tmp_path / "c.yaml").write_text("vitals:\n  map_mmhg: 60\n  map_mmhg: 61\n")
    (tmp_path / "notes.txt").write_text("ignored")
    out = _run(str(tmp_path), "--no-audit")
    assert out.exit_code == exit_codes.INVALID
    lines = _lines(out.stdout)
    assert [Path(x["source"]).name for x in lines] == ["a.json", "b.yaml", "c.yaml"]
    assert lines[0]["ok"] and lines[1]["ok"]
    assert lines[2]["problems"][0]["line"] == 3 and "duplicate key" in lines[2]["problems"][0]["message"]


def test_each_evaluation_is_recorded_in_the_audit_log_in_input_order(audit_db):
    states = _states()
    out = _run("-", "--user", "batch.bot", stdin=_jsonl(states) + '{"patient": {"weight_kg": -1}}\n')
    assert out.exit_code == exit_codes.INVALID  # the invalid state; the others are recorded
    lines = _lines(out.stdout)
    with AuditLog.open(audit_db) as log:
        records = list(log.records())
        assert log.verify().ok
    assert len(records) == len(states)
    assert [r.input for r in records] == states and {r.user for r in records} == {"batch.bot"}
    assert [r.result for r in records] == [x["result"] for x in lines if x["ok"]]


def test_unrecorded_evaluations_are_answered_with_exit_3_or_withheld_with_require_audit(audit_db, monkeypatch):
    def refuse(path, readonly):
        raise audit_mod.AuditError.single("the audit log is read-only (simulated)")

    monkeypatch.setattr(audit_mod, "_connect", refuse)
    states = _states()[:3]
    shown = _run("-", stdin=_jsonl(states))
    assert shown.exit_code == exit_codes.NOT_RECORDED
    assert all(x["ok"] for x in _lines(shown.stdout)) and "NOT recorded" in shown.stderr
    withheld = _run("-", "--require-audit", stdin=_jsonl(states))
    assert withheld.exit_code == exit_codes.INVALID
    assert [x["ok"] for x in _lines(withheld.stdout)] == [False] * 3
    assert "read-only" in _lines(withheld.stdout)[0]["problems"][0]["message"]


def test_usage_errors():
    assert _run("-", "--fhir", "--no-audit", stdin="").exit_code == exit_codes.USAGE
    single = CliRunner().invoke(cli, ["recommend", str(EXAMPLES / "no-weight.yaml"), "--jobs", "2", "--no-audit"])
    assert single.exit_code == exit_codes.USAGE
    missing = _run("no/such/file.jsonl", "--no-audit")
    assert missing.exit_code == exit_codes.INVALID and "file not found" in missing.stderr


def test_memory_stays_flat_only_a_window_of_states_is_read_ahead():
    """However long the input, at most (window + 1) chunks are read before the first answer is out."""
    pulled = 0
    state = json.dumps(_states()[0])

    def endless():
        nonlocal pulled
        while True:
            pulled += 1
            yield batch.Item(f"<gen>:{pulled}", state, True)

    answers = batch.evaluate_many(endless(), rules_dir=None, now=NOW_DT, jobs=2, window=3)
    first = [next(answers) for _ in range(batch.CHUNK)]
    assert all(json.loads(a.line)["ok"] for a in first)
    assert pulled <= (3 + 1) * batch.CHUNK
    answers.close()


# --- the fast result serialiser ---------------------------------------------------


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(state=patient_states())
def test_result_writer_output_is_the_reference_serialisation(pack, state):
    writer = ResultWriter()
    for include_draft in (False, True):
        result = evaluate(pack, state, now=NOW_DT, include_draft=include_draft)
        assert writer(result) == compact_json(result)
        assert writer(result) == compact_json(result)  # again, from the per-rule memo
    assert writer.fast


def test_one_result_writer_across_every_scenario_matches_the_reference(pack):
    """The memos (per rule, per residual condition, per fact list) are shared between results: each result
    met later, with conditional advice reusing conditions met before, is still the reference text."""
    from pressor.engine.authoring.scenarios import load_scenarios

    writer = ResultWriter()
    scenarios = load_scenarios([Path(__file__).parent / "scenarios"], pack)
    results = [evaluate(pack, s.state, now=s.now, include_draft=s.include_draft) for s in scenarios]
    assert sum(len(r.conditional) for r in results) > 100  # conditional advice is exercised
    for result in results + results:
        assert writer(result) == compact_json(result)
    assert writer.fast


def test_result_writer_stands_aside_when_results_gain_fields(pack, monkeypatch):
    extended = make_dataclass("Result", [(f.name, f.type, f) for f in fields(Result)] + [("later_field", tuple, ())],
                              frozen=True)
    monkeypatch.setitem(result_json._KNOWN, extended, result_json._KNOWN[Result])
    assert not ResultWriter().fast
    result = evaluate(pack, _states()[0], now=NOW_DT)
    assert ResultWriter()(result) == compact_json(result)


def _die(chunk):
    os._exit(9)


def test_a_worker_that_dies_is_an_engine_failure_not_a_traceback(monkeypatch):
    from pressor.engine.errors import EvaluationError

    monkeypatch.setattr(batch, "_answer_chunk", _die)  # forked workers inherit the patched module
    items = [batch.Item("<t>:1", json.dumps(_states()[0]), True)] * 3
    try:
        list(batch.evaluate_many(items, rules_dir=None, now=NOW_DT, jobs=2))
    except EvaluationError as exc:
        assert "worker process died" in str(exc.problems[0])
    else:
        raise AssertionError("a dead worker went unnoticed")


def test_a_timeline_input_is_converted_as_recommend_converts_it():
    timeline = EXAMPLES / "timeline" / "septic-persisting.yaml"
    out = _run(str(timeline.parent), "--no-audit")
    assert out.exit_code == 0, out.stdout
    line = next(x for x in _lines(out.stdout) if x["source"] == str(timeline))
    alone = CliRunner().invoke(cli, ["recommend", str(timeline), "--json", "--no-audit", "--now", NOW])
    expected = json.loads(alone.stdout)
    assert "facts" in line["result"] and line["result"] == expected["result"]
    assert line["timeline"] == expected["timeline"]


def test_a_site_profile_applies_to_every_state_of_the_batch():
    profile = sorted((EXAMPLES / "profiles").glob("*.yaml"))[0]
    states = _states()[:2]
    out = _run("-", "--no-audit", "--profile", str(profile), stdin=_jsonl(states))
    assert out.exit_code == 0, out.stderr
    for line, example in zip(_lines(out.stdout), sorted(EXAMPLES.glob("*.yaml"))[:2]):
        alone = CliRunner().invoke(cli, ["recommend", str(example), "--json", "--no-audit", "--now", NOW,
                                         "--profile", str(profile)])
        assert line["result"] == json.loads(alone.stdout) and "profile" in line["result"]["pack"]
