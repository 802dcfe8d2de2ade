"""Feedback entries in the audit log: their own hash chain, tampering, migration of format-1 logs, the CLI."""
from __future__ import annotations

import inspect
import hashlib
import io
import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from pressor.service.cards import card_uuid
from pressor.cli.main import cli
from pressor.engine.audit import store_sqlite as audit_mod
from pressor.engine.audit.records import legacy_canonical_json
from pressor.engine.audit import GENESIS, AuditLog, FeedbackEntry
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import load_document

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FORMAT_1_FIELDS = ("seq", "id", "recorded_at", "user", "input_mode", "input_json", "input_sha256", "pack_name",
                   "pack_version", "pack_sha256", "engine_version", "include_draft", "result_json", "prev_hash")
REASON = {"code": "clinical-judgement", "system": "urn:pressor:override-reason"}


@pytest.fixture(scope="module")
def state():
    return load_document(EXAMPLES / "septic-shock-adult.yaml").data


@pytest.fixture
def log(request, audit_db):
    """An open log: SQLite, and also PostgreSQL for every test that does not reach into the SQLite
    file itself (those take ``audit_db``)."""
    target = audit_db
    if getattr(request, "param", "sqlite") == "postgresql":
        target = request.getfixturevalue("pg_url")
        request.getfixturevalue("monkeypatch").setenv("PRESSOR_AUDIT_DB", target)  # for the CLI too
    with AuditLog.open(target) as opened:
        yield opened


def pytest_generate_tests(metafunc):
    if "log" in metafunc.fixturenames and "audit_db" not in inspect.signature(metafunc.function).parameters:
        metafunc.parametrize("log", ["sqlite", "postgresql"], indirect=True)


def item(card: str, outcome: str = "overridden", minute: int = 1) -> dict:
    out = {"card": card, "outcome": outcome, "outcomeTimestamp": f"2026-11-24T12:{minute:02d}:00Z"}
    if outcome == "overridden":
        out["overrideReason"] = {"reason": REASON, "userComment": "on specialist advice"}
    else:
        out["acceptedSuggestions"] = [{"id": "s1"}]
    return out


def fill(log, now, count: int) -> list[FeedbackEntry]:
    return log.append_feedback([item(f"card-{i}", minute=i) for i in range(count)], service="svc", now=now, user="ehr|dr")


def attacker(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def entry(conn, seq: int) -> FeedbackEntry:
    return FeedbackEntry(*conn.execute(audit_mod._FEEDBACK_SELECT + " WHERE seq = ?", (seq,)).fetchone())


def insert(conn, e: FeedbackEntry) -> None:
    cols = audit_mod.FEEDBACK_COLUMNS
    conn.execute(f"INSERT INTO feedback ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                 tuple(getattr(e, c) for c in cols))


def test_feedback_entries_chain_from_their_own_genesis(log, pack, state, now):
    log.append(pack, state, evaluate(pack, state, now=now), now=now, user="cli")
    entries = fill(log, now, 3)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert [e.prev_hash for e in entries] == [GENESIS] + [e.record_hash for e in entries[:-1]]
    first = entries[0]
    assert first.outcome == "overridden" and json.loads(first.override_reason_json)["reason"] == REASON
    assert json.loads(first.payload_json) == item("card-0", minute=0) and first.user == "ehr|dr"
    assert first.record_hash == hashlib.sha256(first.hashed(log.database_id).encode()).hexdigest()
    outcome = log.verify()
    assert outcome.ok and outcome.records == 1 and outcome.feedback == 3
    assert outcome.feedback_head == (3, entries[-1].id, entries[-1].record_hash)
    assert [e.card_uuid for e in log.feedback(card="card-1")] == ["card-1"]


@pytest.mark.parametrize("sql", ["UPDATE feedback SET outcome = 'accepted'", "DELETE FROM feedback"])
def test_update_and_delete_of_feedback_are_refused(log, now, audit_db, sql):
    fill(log, now, 2)
    with sqlite3.connect(audit_db) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(sql)


def test_a_feedback_insert_off_the_head_is_refused(log, now, audit_db):
    (e,) = fill(log, now, 1)
    with sqlite3.connect(audit_db) as conn, pytest.raises(sqlite3.IntegrityError, match="head of the chain"):
        insert(conn, replace(e, seq=2, id="x", record_hash="y"))  # prev_hash is the genesis, not the head


def bad(audit_db) -> tuple[int | None, list[str]]:
    with AuditLog.open(audit_db, create=False) as log:
        outcome = log.verify()
    first = outcome.first_bad
    assert not outcome.ok and first is not None and first.kind == "feedback"
    return first.seq, list(first.reasons)


def test_verify_catches_an_edited_feedback_entry(log, now, audit_db):
    fill(log, now, 3)
    with attacker(audit_db) as conn:
        conn.execute("UPDATE feedback SET outcome = 'accepted' WHERE seq = 2")
    seq, reasons = bad(audit_db)
    assert seq == 2 and any("was edited" in r for r in reasons)


def test_verify_catches_a_payload_edited_with_its_hash_recomputed(log, now, audit_db):
    fill(log, now, 2)
    with attacker(audit_db) as conn:
        forged = replace(entry(conn, 1), payload_json='{"card":"other","outcome":"overridden"}')
        forged = replace(forged, record_hash=forged.compute_hash(log.database_id))
        conn.execute("DELETE FROM feedback WHERE seq = 1")
        insert(conn, forged)
    with AuditLog.open(audit_db, create=False) as opened:
        problems = [p for p in opened.verify().problems if p.seq]
    assert [(p.kind, p.seq) for p in problems] == [("feedback", 1), ("feedback", 2)]
    assert "differ from the stored payload" in problems[0].reasons[0]
    assert "prev_hash does not match entry #1" in problems[1].reasons[0]


def test_verify_catches_a_deleted_feedback_entry(log, now, audit_db):
    fill(log, now, 3)
    with attacker(audit_db) as conn:
        conn.execute("DELETE FROM feedback WHERE seq = 2")
    seq, reasons = bad(audit_db)
    assert seq == 3 and any("missing, inserted or reordered" in r for r in reasons)


def test_verify_catches_an_inserted_feedback_entry(log, now, audit_db):
    entries = fill(log, now, 2)
    with attacker(audit_db) as conn:
        conn.execute("UPDATE feedback SET seq = seq + 1 WHERE seq = 2")
        insert(conn, replace(entries[1], seq=2, id="forged", card_uuid="forged", record_hash="f" * 64))
    seq, reasons = bad(audit_db)
    assert seq == 2 and any("was edited" in r for r in reasons)


def test_verify_catches_reordered_feedback_entries(log, now, audit_db):
    fill(log, now, 3)
    with attacker(audit_db) as conn:
        conn.execute("UPDATE feedback SET seq = 100 WHERE seq = 1")
        conn.execute("UPDATE feedback SET seq = 1 WHERE seq = 2")
        conn.execute("UPDATE feedback SET seq = 2 WHERE seq = 100")
    seq, reasons = bad(audit_db)
    assert seq == 1 and any("prev_hash does not match the genesis" in r for r in reasons)


def test_verify_reports_dropped_feedback_triggers(log, now, audit_db):
    fill(log, now, 1)
    with sqlite3.connect(audit_db) as conn:
        conn.execute("DROP TRIGGER feedback_no_delete")
    with AuditLog.open(audit_db, create=False) as opened:
        outcome = opened.verify()
    assert not outcome.ok and "feedback_no_delete" in outcome.problems[0].reasons[0]


# --- a log written by the format-1 code (before feedback) ----------------------------------


@pytest.fixture
def old_log(audit_db, pack, state, now):
    """A format-1 log: its schema as the old code created it, with two records written then."""
    audit_db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(audit_db, isolation_level=None)
    tables = [t.replace(",\n        hook_instance TEXT", "").replace(",\n        patient TEXT", "") for t in audit_mod._TABLES
              if "records_patient" not in t]  # format 5's column and index are not there either
    for sql in (*tables, *audit_mod._TRIGGERS.values()):
        conn.execute(sql)
    conn.execute("INSERT INTO meta (key, value) VALUES ('format', '1'), ('database_id', 'old-db')")
    conn.execute("PRAGMA user_version = 1")
    files = audit_mod.pack_files(pack)
    legacy = legacy_canonical_json  # what format 1 stored and hashed (Python's sorted JSON: 36.0, not 36)
    conn.execute("INSERT INTO packs VALUES (?, ?, ?, ?)", (pack.sha256, pack.name, pack.version, legacy(files)))
    prev = GENESIS
    for seq in (1, 2):
        result = evaluate(pack, state, now=now)
        rec = audit_mod.AuditRecord(
            seq=seq, id=f"old-{seq}", recorded_at=audit_mod.utc_text(now), user="cli", input_mode="full",
            input_json=legacy(state), input_sha256=audit_mod.sha256_text(legacy(state)),
            pack_name=pack.name, pack_version=pack.version, pack_sha256=pack.sha256, engine_version=result.engine_version,
            include_draft=False, result_json=legacy(result.to_dict()), prev_hash=prev, record_hash="")
        # the format-1 hash, spelled out: its fields but record_hash, plus the database id
        old = {k: getattr(rec, k) for k in FORMAT_1_FIELDS}
        rec = replace(rec, record_hash=audit_mod.sha256_text(legacy({**old, "database_id": "old-db"})))
        cols = [c for c in audit_mod.COLUMNS if c not in ("hook_instance", "patient", *audit_mod.V6_ONLY)]
        conn.execute(f"INSERT INTO records ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     tuple(getattr(rec, c) for c in cols))
        prev = rec.record_hash
    conn.close()
    return audit_db


def test_a_format_1_log_reads_and_verifies_read_only(old_log):
    with AuditLog.open(old_log, create=False) as log:
        assert log.format == 1
        outcome = log.verify()
        assert outcome.ok and outcome.records == 2 and outcome.feedback == 0
        assert [r.id for r in log.records()] == ["old-1", "old-2"] and list(log.feedback()) == []


def test_a_format_1_log_is_migrated_when_opened_for_writing(old_log, pack, state, now):
    with AuditLog.open(old_log) as log:
        assert log.format == audit_mod.FORMAT
        log.append(pack, state, evaluate(pack, state, now=now), now=now, user="svc", hook_instance="hi-1")
        fill(log, now, 2)
        outcome = log.verify()
    assert outcome.ok and outcome.records == 3 and outcome.feedback == 2
    with sqlite3.connect(old_log) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == audit_mod.FORMAT
        assert conn.execute("SELECT hook_instance FROM records ORDER BY seq").fetchall() == [(None,), (None,), ("hi-1",)]


# --- linking feedback to its evaluation record, and the CLI ----------------------------------


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_audit_feedback_lists_entries_with_the_records_that_issued_the_card(log, pack, state, now):
    result = evaluate(pack, state, now=now)
    rec = log.append(pack, state, result, now=now, user="ehr", hook_instance="hook-1")
    rule = result.recommendations[0]
    card = card_uuid("hook-1", rule.rule_id, rule.rule_version, pack.sha256)
    log.append_feedback([item(card), item("unknown-card", "accepted")], service="svc", now=now, user="ehr")
    out = run("audit", "feedback", "--json")
    assert out.exit_code == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["card_uuid"] for r in rows] == [card, "unknown-card"]
    assert rows[0]["records"] == [{"id": rec.id, "seq": 1, "rule": f"{rule.rule_id}@{rule.rule_version}"}]
    assert rows[0]["override_reason"]["reason"] == REASON and rows[1]["records"] == []
    text = run("audit", "feedback", "--card", card)
    assert text.exit_code == 0 and "overridden" in text.stderr and rule.rule_id in text.stderr
    verify = json.loads(run("audit", "verify", "--json").stdout)
    assert verify["ok"] and verify["feedback"] == 2 and verify["feedback_head"]["seq"] == 2


def test_feedback_export_lets_an_outsider_recompute_every_hash(log, now):
    fill(log, now, 3)
    out = io.StringIO()
    assert log.export("jsonl", out, kind="feedback") == 3
    prev = GENESIS
    for line in out.getvalue().splitlines():
        row = json.loads(line)
        body = {k: v for k, v in row.items() if k != "record_hash"} | {"kind": "feedback"}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode()).hexdigest() == row["record_hash"] and row["prev_hash"] == prev
        prev = row["record_hash"]
    cli_out = run("audit", "export", "--kind", "feedback")
    assert cli_out.exit_code == 0 and cli_out.stdout == out.getvalue()


def test_a_tampered_feedback_entry_fails_audit_verify(log, now, audit_db):
    fill(log, now, 2)
    with attacker(audit_db) as conn:
        conn.execute("UPDATE feedback SET user = 'someone-else' WHERE seq = 1")
    out = run("audit", "verify")
    assert out.exit_code == 1 and "first bad feedback #1" in out.stderr


def test_a_migrated_log_keeps_old_texts_and_finds_rules_in_old_and_new_records(old_log, pack, state, now):
    with AuditLog.open(old_log) as log:
        result = evaluate(pack, state, now=now)
        log.append(pack, state, result, now=now, user="new")
        fired = result.to_dict()["recommendations"][0]["rule_id"]
        assert [r.seq for r in log.records(rule=fired)] == [1, 2, 3]  # old: read from the text; new: the index
        assert list(log.records(rule="no.such-rule")) == []
        assert log.replay("old-1").identical  # an old 36.0 is the same JSON number as a fresh 36
        assert log.replay("old-1", state=state).identical  # an input matched against its old (non-JCS) hash
        assert log.verify().ok
    with sqlite3.connect(old_log) as conn:
        kinds = conn.execute("SELECT typeof(result_json) FROM records ORDER BY seq").fetchall()
    assert kinds == [("text",), ("text",), ("blob",)]  # nothing rewritten
