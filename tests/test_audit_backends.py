"""The audit log and the token replay cache on each backend: SQLite (a file) and PostgreSQL (a
real server started by the tests, tests/pg.py). Same chain, same verify, same refusals; several
processes and several service instances share one PostgreSQL log and one replay cache."""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import sqlite3
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import rfc8785
from click.testing import CliRunner

from pressor.cli.main import cli
from pressor.engine.audit import AuditLog, is_url
from pressor.engine.audit.replay_cache import open_replay_cache
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import load_document

from .test_cds_service import PATIENT_VIEW, configured_server, free_port, hook_request, public_pem, signing_key, token  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def states():
    return [load_document(EXAMPLES / n).data for n in ("septic-shock-adult.yaml", "hepatorenal.yaml")]


def fill(log, pack, states, now, count):
    out = []
    for i in range(count):
        state = states[i % len(states)]
        out.append(log.append(pack, state, evaluate(pack, state, now=now), now=now + timedelta(minutes=i), user=f"user{i % 2}"))
    return out


class Raw:
    """Someone with a direct connection to the store, past pressor."""

    def __init__(self, target) -> None:
        self.pg = is_url(str(target))
        if self.pg:
            import psycopg

            self.conn = psycopg.connect(target, autocommit=True)
            self.errors = (psycopg.errors.IntegrityConstraintViolation, psycopg.errors.RaiseException)
        else:
            self.conn = sqlite3.connect(target, isolation_level=None)
            self.errors = (sqlite3.IntegrityError,)

    def execute(self, sql: str, args: tuple = ()):
        return self.conn.execute(sql.replace("?", "%s") if self.pg else sql, args)

    def drop_triggers(self) -> None:
        if self.pg:
            rows = self.conn.execute("SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                                     "WHERE NOT t.tgisinternal").fetchall()
            for name, table in rows:
                self.conn.execute(f'DROP TRIGGER "{name}" ON "{table}"')
        else:
            for (name,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
                self.conn.execute(f"DROP TRIGGER {name}")


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.stdout + result.stderr
    return result


# --- the same log on both --------------------------------------------------------------------


def test_records_verify_list_show_replay_and_export(audit_target, pack, states, now):
    with AuditLog.open(audit_target) as log:
        recs = fill(log, pack, states, now, 4)
        outcome = log.verify()
        assert outcome.ok and outcome.records == 4 and outcome.head_seq == 4 and outcome.head_hash == recs[-1].record_hash
        assert [r.id for r in log.records()] == [r.id for r in recs]
        assert [r.seq for r in log.records(since=now + timedelta(minutes=2))] == [3, 4]
        fired = json.loads(recs[0].result_json)["recommendations"][0]["rule_id"]
        assert [r.seq for r in log.records(rule=fired)] == [1, 3]
        assert log.record(recs[1].id[:8]).result_json == recs[1].result_json
        assert log.replay(recs[2].id).identical
        out = io.StringIO()
        assert log.export("jsonl", out) == 4
    prev = "0" * 64
    for line in out.getvalue().splitlines():  # an outside verifier with any RFC 8785 library
        row = json.loads(line)
        # format 6: the hash covers every field but the texts, which their SHA-256 fields cover (docs/audit.md)
        body = {k: v for k, v in row.items() if k not in ("record_hash", "input_json", "result_json")}
        assert row["record_format"] == 6
        assert hashlib.sha256(rfc8785.dumps(body)).hexdigest() == row["record_hash"] and row["prev_hash"] == prev
        assert hashlib.sha256(row["input_json"].encode()).hexdigest() == row["input_sha256"]
        assert hashlib.sha256(row["result_json"].encode()).hexdigest() == row["result_sha256"]
        prev = row["record_hash"]
    verified = run("audit", "verify", "--json", "--audit-db", str(audit_target))
    assert verified.exit_code == 0 and json.loads(verified.stdout)["records"] == 4


def test_the_cli_records_into_either_backend(audit_target):
    state = str(EXAMPLES / "septic-shock-adult.yaml")
    result = run("recommend", state, "--now", "2026-11-24T12:00:00Z", "--require-audit", "--user", "dr.lee",
                 "--audit-db", str(audit_target))
    assert result.exit_code == 0, result.stderr
    listing = json.loads(run("audit", "list", "--json", "--audit-db", str(audit_target)).stdout)
    assert [(r["seq"], r["user"]) for r in listing] == [(1, "dr.lee")]
    assert run("audit", "replay", listing[0]["id"], "--audit-db", str(audit_target)).exit_code == 0


def test_the_store_refuses_update_delete_and_out_of_order_inserts(audit_target, pack, states, now):
    with AuditLog.open(audit_target) as log:
        recs = fill(log, pack, states, now, 3)
    raw = Raw(audit_target)
    for sql in ('UPDATE records SET "user" = \'mallory\' WHERE seq = 2', "DELETE FROM records WHERE seq = 3",
                "DELETE FROM packs", "UPDATE meta SET value = 'x'", "DELETE FROM record_rules"):
        with pytest.raises(raw.errors, match="append-only"):
            raw.execute(sql)
    if raw.pg:
        with pytest.raises(raw.errors, match="TRUNCATE refused"):
            raw.execute("TRUNCATE records CASCADE")
    columns = 'seq, id, recorded_at, "user", input_mode, input_json, input_sha256, pack_name, pack_version, pack_sha256, ' \
              'engine_version, include_draft, result_json, prev_hash, record_hash'
    copy = "SELECT ?, ?, recorded_at, \"user\", input_mode, input_json, input_sha256, pack_name, pack_version, pack_sha256, " \
           "engine_version, include_draft, result_json, ?, ? FROM records WHERE seq = 1"
    for seq, prev in ((5, recs[-1].record_hash), (4, "ab" * 32), (2, recs[0].record_hash)):
        with pytest.raises(raw.errors):
            raw.execute(f"INSERT INTO records ({columns}) {copy}", (seq, str(uuid.uuid4()), prev, uuid.uuid4().hex * 2))
    with AuditLog.open(audit_target, create=False) as log:
        assert log.verify().ok and log.head()[0] == 3


def test_verify_finds_tampering_once_the_triggers_are_dropped(audit_target, pack, states, now):
    with AuditLog.open(audit_target) as log:
        recs = fill(log, pack, states, now, 5)
    raw = Raw(audit_target)
    raw.drop_triggers()
    raw.execute('UPDATE records SET "user" = ? WHERE seq = 2', ("mallory",))
    raw.execute("DELETE FROM record_rules WHERE seq = 4")
    raw.execute("DELETE FROM records WHERE seq = 4")
    with AuditLog.open(audit_target, create=False) as log:
        outcome = log.verify()
    assert not outcome.ok
    assert (outcome.first_bad.seq, outcome.first_bad.id) == (2, recs[1].id)
    assert any("was edited" in r for r in outcome.first_bad.reasons)
    assert any(p.seq == 5 and any("follows #3" in r for r in p.reasons) for p in outcome.problems)
    assert any("triggers were removed" in r for p in outcome.problems if p.seq is None for r in p.reasons)


def test_feedback_has_its_own_chain(audit_target, now):
    items = [{"card": str(uuid.uuid4()), "outcome": "accepted", "outcomeTimestamp": "2026-11-24T12:01:00Z"},
             {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-24T12:02:00Z",
              "overrideReason": {"reason": {"code": "x"}, "userComment": "no"}}]
    with AuditLog.open(audit_target) as log:
        entries = log.append_feedback(items, service=PATIENT_VIEW, now=now, user="ehr")
        outcome = log.verify()
        assert outcome.ok and outcome.feedback == 2 and outcome.feedback_head[2] == entries[-1].record_hash
        assert [e.card_uuid for e in log.feedback(card=items[1]["card"])] == [items[1]["card"]]


def _appender(target, pack, state, result, now, name, count, start):
    start.wait()
    with AuditLog.open(target) as log:
        for _ in range(count):
            log.append(pack, state, result, now=now, user=name)


def test_two_processes_appending_together_keep_one_chain(audit_target, pack, states, now):
    result = evaluate(pack, states[0], now=now)
    AuditLog.open(audit_target).close()
    start = FORK.Event()
    writers = [FORK.Process(target=_appender, args=(audit_target, pack, states[0], result, now, f"w{i}", 150, start))
               for i in range(2)]
    for w in writers:
        w.start()
    start.set()
    for w in writers:
        w.join(timeout=300)
        assert w.exitcode == 0
    with AuditLog.open(audit_target, create=False) as log:
        outcome = log.verify()
        users = [r.user for r in log.records()]
    assert outcome.ok and outcome.records == 300
    assert users.count("w0") == users.count("w1") == 150


def test_reading_a_postgresql_log_never_writes(pg_url, pack, states, now):
    with AuditLog.open(pg_url) as log:
        fill(log, pack, states, now, 1)
    with AuditLog.open(pg_url, create=False) as log:
        assert log._conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
        assert log.verify().ok


def test_an_unreachable_postgresql_log_is_a_clear_error():
    from pressor.engine.errors import AuditError

    url = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/none"
    with pytest.raises(AuditError, match="cannot be reached") as info:
        AuditLog.open(url)
    assert "secret" not in str(info.value)
    result = run("recommend", str(EXAMPLES / "septic-shock-adult.yaml"), "--audit-db", url)
    assert result.exit_code == 3 and "NOT recorded" in result.stderr and "secret" not in result.stderr


# --- the token replay cache ------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def cache_target(request, tmp_path):
    if request.param == "memory":
        return None
    if request.param == "sqlite":
        return str(tmp_path / "replay.db")
    return request.getfixturevalue("pg_url")


def test_replay_cache_accepts_an_id_once_until_it_expires(cache_target):
    cache = open_replay_cache(cache_target)
    try:
        later = time.time() + 60
        assert cache.seen("a", later) is False
        assert cache.seen("a", later) is True
        assert cache.seen("b", later) is False
        assert cache.seen("old", time.time() - 1) is False
        assert cache.seen("old", later) is False  # expired: forgotten
    finally:
        cache.close()


def _racer(target, ids, start, send):
    cache = open_replay_cache(target)
    start.wait()
    send.send([jti for jti in ids if not cache.seen(jti, time.time() + 60)])
    cache.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_processes_sharing_a_replay_cache_accept_each_id_once(backend, tmp_path, request):
    target = str(tmp_path / "replay.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    open_replay_cache(target).close()
    ids = [str(uuid.uuid4()) for _ in range(200)]
    start = FORK.Event()
    pipes = [FORK.Pipe(duplex=False) for _ in range(2)]
    procs = [FORK.Process(target=_racer, args=(target, ids, start, send)) for _, send in pipes]
    for p in procs:
        p.start()
    start.set()
    accepted = [receive.recv() for receive, _ in pipes]
    for p in procs:
        p.join(timeout=60)
    assert sorted(accepted[0] + accepted[1]) == sorted(ids)  # every id accepted exactly once, by one of them


# --- two service instances behind one load balancer share PostgreSQL ------------------------


def test_two_service_instances_share_the_log_and_the_replay_cache(pg_url, signing_key, tmp_path):
    pem = public_pem(signing_key)
    port_a, port_b = free_port(), free_port()
    shared = {"base_url": "https://cds.hospital.test", "audit_db": pg_url, "replay_cache": pg_url}
    a = configured_server(tmp_path, pem, port=port_a, **shared)
    try:
        b = configured_server(tmp_path, pem, port=port_b, **shared)
        try:
            path = f"/cds-services/{PATIENT_VIEW}"
            headers = {"Authorization": f"Bearer {token(signing_key, shared['base_url'] + path)}"}
            first = a.client.post(path, json=hook_request("septic-adult"), headers=headers)
            assert first.status_code == 200 and first.json()["extension"]["pressor"]["audit"]["recorded"], first.text
            replayed = b.client.post(path, json=hook_request("septic-adult"), headers=headers)
            assert replayed.status_code == 401 and "replayed" in replayed.json()["message"]
            for i in range(10):  # both append to the one chain
                srv = (a, b)[i % 2]
                fresh = {"Authorization": f"Bearer {token(signing_key, shared['base_url'] + path)}"}
                assert srv.client.post(path, json=hook_request("septic-adult"), headers=fresh).status_code == 200
        finally:
            b.stop()
    finally:
        a.stop()
    verified = run("audit", "verify", "--json", "--audit-db", pg_url)
    data = json.loads(verified.stdout)
    assert verified.exit_code == 0 and data["ok"] and data["records"] >= 11


def test_every_audit_command_on_either_backend(audit_target, tmp_path):
    db = ["--audit-db", str(audit_target)]
    for state in ("septic-shock-adult.yaml", "hepatorenal.yaml"):
        assert run("recommend", str(EXAMPLES / state), "--now", "2026-11-24T12:00:00Z", "--user", "dr.lee", *db).exit_code == 0
    records = json.loads(run("audit", "list", "--json", *db).stdout)
    assert [r["seq"] for r in records] == [1, 2]
    human = run("audit", "list", *db)
    assert human.exit_code == 0 and human.stderr.splitlines()[-1] == "2 record(s)" and "dr.lee" in human.stderr
    rule = records[0]["recommendations"][0].split("@")[0]
    assert [r["seq"] for r in json.loads(run("audit", "list", "--json", "--rule", rule, *db).stdout)][0] == 1
    assert json.loads(run("audit", "list", "--json", "--since", "2999-01-01", *db).stdout) == []
    shown = run("audit", "show", records[1]["id"][:8], *db)
    assert shown.exit_code == 0 and records[1]["record_hash"] in shown.stderr
    verified = run("audit", "verify", *db)
    assert verified.exit_code == 0 and f"head #2 {records[1]['record_hash']}" in verified.stderr
    anchored = run("audit", "verify", "--anchor", f"1:{records[0]['record_hash']}", *db)
    assert anchored.exit_code == 0
    target = tmp_path / "out.csv"
    exported = run("audit", "export", "--format", "csv", "--output", str(target), "--json", *db)
    assert exported.exit_code == 0 and json.loads(exported.stdout)["records"] == 2 and target.read_text().count("\n") >= 3
    assert json.loads(run("audit", "feedback", "--json", *db).stdout) == []
