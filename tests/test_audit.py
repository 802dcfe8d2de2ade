"""The audit library: records, the hash chain, tampering, replay, export, failures."""
from __future__ import annotations

import csv
import hashlib
import inspect
import io
import json
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from pressor.engine.audit import store_sqlite as audit_mod
from pressor.engine.audit import GENESIS, AuditLog, AuditRecord, canonical_json, json_diff, resolve_path, write_atomically
from pressor.engine.audit.compression import PackCodec
from pressor.engine.audit.records import record_from_row
from pressor.engine.errors import AuditError, PressorError
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import load_document

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def states():
    """Three different patient states from the examples."""
    return [load_document(EXAMPLES / f"{name}.yaml").data for name in ("septic-shock-adult", "hepatorenal", "no-weight")]


@pytest.fixture
def log(request, audit_db):
    """An open log: SQLite, and also PostgreSQL for every test that does not reach into the SQLite
    file itself (those take ``audit_db``; their PostgreSQL twins are in test_audit_backends.py)."""
    target = audit_db
    if getattr(request, "param", "sqlite") == "postgresql":
        target = request.getfixturevalue("pg_url")
        request.getfixturevalue("monkeypatch").setenv("PRESSOR_AUDIT_DB", target)  # for the CLI too
    with AuditLog.open(target) as opened:
        yield opened


def pytest_generate_tests(metafunc):
    if "log" in metafunc.fixturenames and "audit_db" not in inspect.signature(metafunc.function).parameters:
        metafunc.parametrize("log", ["sqlite", "postgresql"], indirect=True)


def fill(log, pack, states, now, count):
    """Append ``count`` records cycling through ``states``; returns them."""
    out = []
    for i in range(count):
        state = states[i % len(states)]
        result = evaluate(pack, state, now=now)
        out.append(log.append(pack, state, result, now=now + timedelta(seconds=i), user=f"user{i % 2}"))
    return out


def attacker(path: Path) -> sqlite3.Connection:
    """Someone with write access to the file: drops the append-only triggers first."""
    conn = sqlite3.connect(path, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def row(conn: sqlite3.Connection, seq: int) -> AuditRecord:
    """The record as stored, its texts decompressed with its stored pack (as anyone holding the file can)."""
    data = conn.execute(audit_mod._SELECT + " WHERE seq = ?", (seq,)).fetchone()
    files = json.loads(conn.execute("SELECT files_json FROM packs WHERE sha256 = ?",
                                    (data[audit_mod.COLUMNS.index("pack_sha256")],)).fetchone()[0])["files"]
    return record_from_row(data, lambda sha: PackCodec(files))


def insert(conn: sqlite3.Connection, record: AuditRecord) -> None:
    """Insert ``record`` as the log stores it: a format-6 record's texts compressed against its stored pack
    (zstd at a fixed level and dictionary gives the same bytes again, so a copied record keeps its stored hashes)."""
    cols = audit_mod.COLUMNS
    values = {c: getattr(record, c) for c in cols}
    if record.result_sha256 is not None:
        files = json.loads(conn.execute("SELECT files_json FROM packs WHERE sha256 = ?", (record.pack_sha256,)).fetchone()[0])["files"]
        codec = PackCodec(files)
        values["result_json"] = codec.compress(record.result_json)
        values["input_json"] = None if record.input_json is None else codec.compress(record.input_json)
    conn.execute(f"INSERT INTO records ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", tuple(values.values()))


# --- records and the chain ---------------------------------------------------


def test_a_record_holds_everything_needed_to_prove_a_recommendation(log, pack, states, now, result_validator):
    result = evaluate(pack, states[0], now=now)
    rec = log.append(pack, states[0], result, now=now, user="dr.lee")
    assert rec.seq == 1 and rec.prev_hash == GENESIS
    assert rec.input_json == canonical_json(states[0]) and rec.input == states[0]
    assert rec.input_sha256 == hashlib.sha256(rec.input_json.encode()).hexdigest()
    assert (rec.pack_name, rec.pack_version, rec.pack_sha256) == (pack.name, pack.version, pack.sha256)
    assert rec.engine_version == result.engine_version and rec.user == "dr.lee"
    assert rec.recorded_at == "2026-11-24T12:00:00.000000Z"
    assert rec.result == result.to_dict()
    result_validator.validate(rec.result)
    assert rec.record_hash == hashlib.sha256(rec.hashed(log.database_id).encode("utf-8")).hexdigest()
    assert log.record(rec.id) == rec


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": {"d": [1, 2.5], "c": "é"}}) == '{"a":{"c":"é","d":[1,2.5]},"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_records_chain_from_the_genesis_and_verify(log, pack, states, now):
    recs = fill(log, pack, states, now, 5)
    assert [r.seq for r in recs] == [1, 2, 3, 4, 5]
    assert [r.prev_hash for r in recs] == [GENESIS] + [r.record_hash for r in recs[:-1]]
    outcome = log.verify()
    assert outcome.ok and outcome.records == 5 and outcome.first_bad is None
    assert (outcome.head_seq, outcome.head_id, outcome.head_hash) == (5, recs[-1].id, recs[-1].record_hash)
    assert log.head() == (5, recs[-1].id, recs[-1].record_hash)


def test_an_empty_log_verifies_with_the_genesis_as_head(log):
    outcome = log.verify()
    assert outcome.ok and outcome.records == 0 and outcome.head_hash == GENESIS and outcome.head_seq == 0


def test_the_pack_is_stored_once_with_every_file_text(log, pack, states, now):
    fill(log, pack, states, now, 3)
    name, version, files = log.stored_pack(pack.sha256)
    assert (name, version) == (pack.name, pack.version)
    assert sorted(files) == sorted(pack.files)
    assert files["pack.yaml"] == (Path(pack.directory) / "pack.yaml").read_text(encoding="utf-8")
    assert log._conn.execute("SELECT COUNT(*) FROM packs").fetchone()[0] == 1


def test_hash_mode_keeps_only_the_inputs_sha256(log, pack, states, now):
    result = evaluate(pack, states[1], now=now)
    rec = log.append(pack, states[1], result, now=now, user="u", input_mode="hash")
    assert rec.input_json is None and rec.input is None and rec.input_mode == "hash"
    assert rec.input_sha256 == hashlib.sha256(canonical_json(states[1]).encode()).hexdigest()
    stored = log._conn.execute("SELECT input_json FROM records").fetchone()
    assert stored == (None,)
    everything = "".join(str(v) for r in log._conn.execute("SELECT * FROM records") for v in r)
    assert canonical_json(states[1]) not in everything
    assert log.verify().ok


def test_list_filters_by_time_and_by_rule_that_fired(log, pack, states, now):
    recs = fill(log, pack, states, now, 6)
    assert [r.seq for r in log.records(since=now + timedelta(seconds=4))] == [5, 6]
    fired_in_hepatorenal = "special.hepatorenal"
    assert fired_in_hepatorenal in [f.split("@")[0] for f in recs[1].fired()]
    assert [r.seq for r in log.records(rule=fired_in_hepatorenal)] == [2, 5]
    assert list(log.records(rule="no.such-rule")) == []


def test_list_filters_run_in_the_database_newest_first_with_a_limit_and_a_count(log, pack, states, now):
    """What the web app's audit list asks: the filters, the newest N, and how many match in all."""
    fill(log, pack, states, now, 6)  # users user0 / user1 alternate; seconds 0..5 (then Émile at 9)
    assert [r.seq for r in log.records(until=now + timedelta(seconds=1))] == [1, 2]
    assert [r.seq for r in log.records(since=now + timedelta(seconds=1), until=now + timedelta(seconds=3))] == [2, 3, 4]
    assert [r.seq for r in log.records(user="USER1")] == [2, 4, 6]  # contains, any case
    emile = log.append(pack, states[0], evaluate(pack, states[0], now=now), now=now + timedelta(seconds=9), user="Émile")
    assert [r.seq for r in log.records(user="émile")] == [emile.seq] == [r.seq for r in log.records(user="ÉMILE")]
    assert list(log.records(user="%")) == [] and list(log.records(user="_")) == []  # LIKE's wildcards are plain text
    assert [r.seq for r in log.records(version=pack.version)] == [1, 2, 3, 4, 5, 6, 7]
    assert list(log.records(version="0.0.0")) == []
    assert [r.seq for r in log.records(newest_first=True, limit=4)] == [7, 6, 5, 4]
    assert [r.seq for r in log.records(rule="special.hepatorenal", newest_first=True, limit=1)] == [5]
    assert log.count_records() == 7 and log.count_records(user="user0", since=now + timedelta(seconds=1)) == 2
    assert log.count_records(rule="special.hepatorenal") == 2 and log.count_records(version="0.0.0") == 0


def test_a_record_is_found_by_a_unique_prefix_of_its_id(log, pack, states, now):
    rec = fill(log, pack, states, now, 1)[0]
    assert log.record(rec.id[:8]) == rec
    with pytest.raises(AuditError, match="no audit record"):
        log.record("zz-not-an-id")


def test_append_needs_an_aware_clock(log, pack, states, now):
    result = evaluate(pack, states[0], now=now)
    with pytest.raises(ValueError, match="timezone-aware"):
        log.append(pack, states[0], result, now=now.replace(tzinfo=None), user="u")


def test_the_path_comes_from_the_option_then_the_environment_then_the_user_data_dir(tmp_path):
    assert resolve_path(tmp_path / "x.db", {"PRESSOR_AUDIT_DB": "/elsewhere.db"}) == tmp_path / "x.db"
    assert resolve_path(None, {"PRESSOR_AUDIT_DB": "/elsewhere.db"}) == Path("/elsewhere.db")
    default = resolve_path(None, {})
    assert default.name == "audit.db" and "pressor" in default.parts


def test_the_test_suite_never_writes_to_the_user_data_dir(audit_db):
    assert resolve_path() == audit_db


def test_the_database_is_in_wal_mode(log, audit_db):
    assert log._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- append-only, enforced by the database ----------------------------------


@pytest.mark.parametrize("sql", [
    "UPDATE records SET user = 'mallory' WHERE seq = 1",
    "DELETE FROM records WHERE seq = 2",
    "UPDATE packs SET name = 'other'",
    "DELETE FROM packs",
    "DELETE FROM meta",
    "UPDATE meta SET value = 'x' WHERE key = 'database_id'",
])
def test_update_and_delete_are_refused_by_the_database(log, pack, states, now, audit_db, sql):
    fill(log, pack, states, now, 3)
    conn = sqlite3.connect(audit_db, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(sql)
    conn.close()
    assert log.verify().ok


def test_an_insert_that_does_not_extend_the_head_is_refused(log, pack, states, now, audit_db):
    recs = fill(log, pack, states, now, 3)
    conn = sqlite3.connect(audit_db, isolation_level=None)
    stale = replace(recs[1], seq=4, id="forged", record_hash="f" * 64)  # links to #1, not the head
    with pytest.raises(sqlite3.IntegrityError, match="extend the head"):
        insert(conn, stale)
    with pytest.raises(sqlite3.IntegrityError):  # REPLACE would delete the old row without firing DELETE triggers
        conn.execute("INSERT OR REPLACE INTO packs (sha256, name, version, files_json) VALUES (?, 'x', 'y', '{}')", (pack.sha256,))
    conn.close()
    assert log.verify().ok


# --- tampering by someone who drops the triggers -----------------------------


def test_verify_catches_an_edited_field(log, pack, states, now, audit_db):
    recs = fill(log, pack, states, now, 6)
    conn = attacker(audit_db)
    conn.execute("UPDATE records SET result_json = replace(result_json, 'norepinephrine', 'vasopressin') WHERE seq = 3")
    outcome = log.verify()
    assert not outcome.ok
    assert (outcome.first_bad.seq, outcome.first_bad.id) == (3, recs[2].id)
    assert any("was edited" in r for r in outcome.first_bad.reasons)
    assert any("triggers were removed" in r for p in outcome.problems if p.seq is None for r in p.reasons)


def test_verify_catches_an_edit_whose_hash_was_recomputed(log, pack, states, now, audit_db):
    recs = fill(log, pack, states, now, 6)
    conn = attacker(audit_db)
    forged = replace(row(conn, 2), user="mallory")
    conn.execute("UPDATE records SET user = ?, record_hash = ? WHERE seq = 2", ("mallory", forged.compute_hash(log.database_id)))
    outcome = log.verify()
    assert (outcome.first_bad.seq, outcome.first_bad.id) == (3, recs[2].id)  # the break shows at the next link
    assert any("prev_hash does not match record #2" in r for r in outcome.first_bad.reasons)


def test_verify_catches_a_deleted_record(log, pack, states, now, audit_db):
    recs = fill(log, pack, states, now, 6)
    attacker(audit_db).execute("DELETE FROM records WHERE seq = 4")
    bad = log.verify().first_bad
    assert (bad.seq, bad.id) == (5, recs[4].id)
    assert any("follows #3" in r for r in bad.reasons) and any("prev_hash" in r for r in bad.reasons)


def test_verify_catches_a_deleted_first_record(log, pack, states, now, audit_db):
    recs = fill(log, pack, states, now, 3)
    attacker(audit_db).execute("DELETE FROM records WHERE seq = 1")
    bad = log.verify().first_bad
    assert (bad.seq, bad.id) == (2, recs[1].id)
    assert any("records before it are missing" in r for r in bad.reasons)


def test_verify_catches_a_forged_record_with_a_made_up_hash(log, pack, states, now, audit_db):
    recs = fill(log, pack, states, now, 5)
    conn = attacker(audit_db)
    for seq in range(5, 2, -1):  # make room after #2
        conn.execute("UPDATE records SET seq = seq + 1 WHERE seq = ?", (seq,))
    forged = replace(row(conn, 2), seq=3, id="f0f0f0f0-forged", user="mallory", prev_hash=recs[1].record_hash, record_hash="ab" * 32)
    insert(conn, forged)
    bad = log.verify().first_bad
    assert (bad.seq, bad.id) == (3, "f0f0f0f0-forged")
    assert any("was edited" in r for r in bad.reasons)


def test_a_well_forged_record_breaks_the_chain_at_the_next_record(log, pack, states, now, audit_db):
    recs = fill(log, pack, states, now, 5)
    conn = attacker(audit_db)
    for seq in range(5, 2, -1):
        conn.execute("UPDATE records SET seq = seq + 1 WHERE seq = ?", (seq,))
    forged = replace(row(conn, 2), seq=3, id="f0f0f0f0-forged", prev_hash=recs[1].record_hash)
    insert(conn, replace(forged, record_hash=forged.compute_hash(log.database_id)))
    outcome = log.verify()
    bad = outcome.first_bad
    assert (bad.seq, bad.id) == (4, recs[2].id)  # the original #3, now #4, no longer matches its content
    assert any("was edited" in r for r in bad.reasons) and any("prev_hash" in r for r in bad.reasons)


def test_verify_catches_two_records_with_swapped_sequence_numbers(log, pack, states, now, audit_db):
    recs = fill(log, pack, states, now, 6)
    conn = attacker(audit_db)
    conn.execute("UPDATE records SET seq = 1000 WHERE seq = 2")
    conn.execute("UPDATE records SET seq = 2 WHERE seq = 4")
    conn.execute("UPDATE records SET seq = 4 WHERE seq = 1000")
    bad = log.verify().first_bad
    assert (bad.seq, bad.id) == (2, recs[3].id)
    assert any("was edited" in r for r in bad.reasons)


def test_verify_catches_an_altered_stored_pack(log, pack, states, now, audit_db):
    recs = fill(log, pack, states, now, 2)
    conn = attacker(audit_db)
    conn.execute("UPDATE packs SET files_json = replace(files_json, 'mcg/kg/min', 'mg/kg/min')")
    bad = log.verify().first_bad
    assert (bad.seq, bad.id) == (1, recs[0].id)
    assert any("rule pack" in r and "altered" in r for r in bad.reasons)


def test_replay_refuses_a_stored_pack_altered_after_it_was_rebuilt(log, pack, states, now, audit_db):
    """Rebuilt packs are kept for the process, but every replay first checks that what the log stores still
    hashes to the record's pack: an alteration made after an earlier replay is refused, not hidden by it."""
    rec = fill(log, pack, states, now, 1)[0]
    assert log.replay(rec.id).identical
    attacker(audit_db).execute("UPDATE packs SET files_json = replace(files_json, 'mcg/kg/min', 'mg/kg/min')")
    with pytest.raises(AuditError, match="altered"):
        log.replay(rec.id)


def test_an_anchor_catches_a_chain_rebuilt_from_some_record_on(log, pack, states, now, audit_db):
    recs = fill(log, pack, states, now, 4)
    published = (4, recs[3].record_hash)
    conn = attacker(audit_db)
    # The strongest attacker: edits #2 and recomputes every hash after it; the chain itself is consistent.
    prev = recs[0].record_hash
    for seq in (2, 3, 4):
        rec = row(conn, seq)
        rec = replace(rec, user="mallory" if seq == 2 else rec.user, prev_hash=prev)
        rec = replace(rec, record_hash=rec.compute_hash(log.database_id))
        conn.execute("UPDATE records SET user = ?, prev_hash = ?, record_hash = ? WHERE seq = ?", (rec.user, rec.prev_hash, rec.record_hash, seq))
        prev = rec.record_hash
    assert log.verify().first_bad is None  # undetectable from inside the file...
    outcome = log.verify(anchor=published)  # ...but not against a head published elsewhere
    assert not outcome.ok and any("chain was rewritten" in r for p in outcome.problems for r in p.reasons)


def test_an_anchor_catches_a_truncated_tail(log, pack, states, now, audit_db):
    recs = fill(log, pack, states, now, 4)
    attacker(audit_db).execute("DELETE FROM records WHERE seq = 4")
    assert log.verify().first_bad is None
    outcome = log.verify(anchor=(4, recs[3].record_hash))
    assert not outcome.ok and any("deleted from the end" in r for p in outcome.problems for r in p.reasons)


# --- replay ------------------------------------------------------------------


def test_neighbours_are_the_records_just_before_and_after(log, pack, states, now):
    recs = fill(log, pack, states, now, 3)
    assert [r and r.id for r in log.neighbours(recs[0].seq)] == [None, recs[1].id]
    assert [r and r.id for r in log.neighbours(recs[1].seq)] == [recs[0].id, recs[2].id]
    assert [r and r.id for r in log.neighbours(recs[2].seq)] == [recs[1].id, None]


def test_replay_of_a_fresh_record_is_identical(log, pack, states, now):
    for rec in fill(log, pack, states, now, 3):
        outcome = log.replay(rec.id)
        assert outcome.identical and outcome.differences == ()


def test_replay_leaves_the_pack_cache_alone(log, pack, states, now, tmp_path, monkeypatch):
    """A replay rebuilds the stored pack in a temporary directory that is never loaded again: it is loaded
    without the pack cache, so replays do not push the useful entries out of it."""
    from pressor.engine.evaluation import pack_cache

    cache = tmp_path / "pack-cache"
    monkeypatch.setenv(pack_cache.ENV, str(cache))
    rec = fill(log, pack, states, now, 1)[0]
    assert log.replay(rec.id).identical
    with AuditLog.open(log.where) as again:  # a new log object rebuilds the pack again (the web app opens one per request)
        assert again.replay(rec.id).identical
    assert not list(cache.glob("*.pack"))


def test_replay_with_drafts_uses_the_stored_flag(log, pack, states, now):
    result = evaluate(pack, states[0], now=now, include_draft=True)
    rec = log.append(pack, states[0], result, now=now, user="u")
    assert rec.include_draft and log.replay(rec.id).identical


def test_replay_reports_a_changed_stored_result_by_pointer(log, pack, states, now, audit_db):
    rec = fill(log, pack, states, now, 1)[0]
    stored = rec.result
    stored["recommendations"][0]["summary"] = "something else"
    stored["warnings"].append("added")
    attacker(audit_db).execute("UPDATE records SET result_json = ? WHERE seq = 1", (canonical_json(stored),))
    outcome = log.replay(rec.id)
    assert not outcome.identical
    found = {d.pointer: d.to_dict() for d in outcome.differences}
    assert found["/recommendations/0/summary"]["stored"] == "something else"
    assert found["/recommendations/0/summary"]["replayed"] == rec.result["recommendations"][0]["summary"]
    last = f"/warnings/{len(stored['warnings']) - 1}"
    assert found[last] == {"pointer": last, "stored": "added"}


def test_a_hash_only_record_cannot_be_replayed_without_its_input(log, pack, states, now):
    result = evaluate(pack, states[1], now=now)
    rec = log.append(pack, states[1], result, now=now, user="u", input_mode="hash")
    with pytest.raises(AuditError, match="cannot be replayed.*--audit-input hash"):
        log.replay(rec.id)
    assert log.replay(rec.id, state=states[1]).identical
    with pytest.raises(AuditError, match="not the one record #1 was made from"):
        log.replay(rec.id, state=states[0])


def test_json_diff_tells_types_apart():
    assert json_diff({"a": [1, True]}, {"a": [1, True]}) == []
    assert [d.pointer for d in json_diff({"a": [1, True], "b/c": 1}, {"a": [True, 1, 2], "b/c": 1.5})] == ["/a/0", "/a/1", "/a/2", "/b~1c"]


# --- export ------------------------------------------------------------------


def test_jsonl_export_lets_an_outsider_recompute_every_hash(log, pack, states, now):
    recs = fill(log, pack, states, now, 3)
    out = io.StringIO()
    assert log.export("jsonl", out) == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    prev = "0" * 64
    for line, rec in zip(lines, recs):
        # Only hashlib and json, as an auditor without pressor would do it (docs/audit.md): a format-6 row's hash
        # covers every field but its texts, which their own SHA-256 fields cover.
        assert line["record_format"] == 6
        body = {k: v for k, v in line.items() if k not in ("record_hash", "input_json", "result_json")}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode("utf-8")).hexdigest() == line["record_hash"] == rec.record_hash
        assert hashlib.sha256(line["result_json"].encode()).hexdigest() == line["result_sha256"]
        assert hashlib.sha256(line["input_json"].encode()).hexdigest() == line["input_sha256"]
        assert json.loads(line["fired_json"]) == rec.fired() and line["evaluated_at"] == rec.result["evaluated_at"]
        assert line["prev_hash"] == prev
        prev = line["record_hash"]


def test_a_stored_texts_export_is_checked_and_read_with_the_exported_packs(log, pack, states, now):
    """--texts stored: the stored zstd frames in base64, never decompressed; from the export alone (and the packs,
    exported with --kind packs) an outsider checks every hash and recovers every text."""
    import base64

    import zstandard

    recs = fill(log, pack, states, now, 3)
    out, packs = io.StringIO(), io.StringIO()
    assert log.export("jsonl", out, texts="stored") == 3 and log.export("jsonl", packs, kind="packs") == 1
    stored_pack = json.loads(packs.getvalue())
    files = json.loads(stored_pack["files_json"])["files"]
    dictionary = zstandard.ZstdCompressionDict("".join(files[n] for n in sorted(files)).encode(),
                                               dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    prev = "0" * 64
    for line, rec in zip((json.loads(x) for x in out.getvalue().splitlines()), recs):
        assert "result_json" not in line and line["pack_sha256"] == stored_pack["sha256"]
        body = {k: v for k, v in line.items() if k not in ("record_hash", "input_zstd", "result_zstd")}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode()).hexdigest() == line["record_hash"] == rec.record_hash and line["prev_hash"] == prev
        frame, given = base64.b64decode(line["result_zstd"]), base64.b64decode(line["input_zstd"])
        assert hashlib.sha256(len(given).to_bytes(8, "big") + given + frame).hexdigest() == line["stored_sha256"]
        result = zstandard.ZstdDecompressor(dict_data=dictionary).decompress(frame).decode()
        assert hashlib.sha256(result.encode()).hexdigest() == line["result_sha256"] and result == rec.result_json
        prev = line["record_hash"]
    with pytest.raises(ValueError, match="JSON lines"):
        log.export("csv", io.StringIO(), texts="stored")


def test_csv_export_has_one_row_per_record(log, pack, states, now):
    recs = fill(log, pack, states, now, 3)
    out = io.StringIO()
    log.export("csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["id"] for r in rows] == [r.id for r in recs]
    assert rows[0]["result_json"] == recs[0].result_json and rows[0]["database_id"] == log.database_id


def test_a_failed_export_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "export.jsonl"
    target.write_text("previous export\n")

    def half_then_fail(fh):
        fh.write("half a rec")
        raise OSError(28, "No space left on device")

    with pytest.raises(AuditError, match="disk .* is full"):
        write_atomically(target, half_then_fail)
    assert target.read_text() == "previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.jsonl"]  # no temporary file left behind


# --- failures ----------------------------------------------------------------


def test_a_missing_directory_is_created(tmp_path, pack, states, now):
    path = tmp_path / "new" / "deeper" / "audit.db"
    with AuditLog.open(path) as log:
        fill(log, pack, states, now, 1)
    assert path.is_file()


def test_a_directory_that_cannot_be_created_is_an_audit_error(tmp_path, monkeypatch):
    # Tests run as root, which ignores permission bits: the refusal is simulated.
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(AuditError, match="read-only") as info:
        AuditLog.open(tmp_path / "missing" / "audit.db")
    assert isinstance(info.value, PressorError) and info.value.kind == "audit_error"


def test_a_read_only_database_refuses_the_record_cleanly(audit_db, pack, states, now, monkeypatch):
    with AuditLog.open(audit_db) as log:
        fill(log, pack, states, now, 2)
    # Root bypasses chmod: the file is opened read-only through SQLite (mode=ro), as a read-only file would be.
    real = audit_mod._connect
    with monkeypatch.context() as patch:
        patch.setattr(audit_mod, "_connect", lambda path, readonly: real(path, readonly=True))
        with pytest.raises(AuditError, match="read-only"):
            with AuditLog.open(audit_db) as log:
                fill(log, pack, states, now, 1)
    with AuditLog.open(audit_db, create=False) as log:
        assert log.verify().records == 2


def test_a_full_disk_leaves_no_half_written_record(audit_db, pack, states, now, monkeypatch):
    with AuditLog.open(audit_db) as log:
        fill(log, pack, states, now, 2)
    real = audit_mod._connect

    def full(path, readonly):  # the database may not grow by a single page: SQLITE_FULL
        conn = real(path, readonly=readonly)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    big = dict(states[0], notes={"padding": "x" * 20000})  # needs new pages; not a valid state, but only stored here
    result = evaluate(pack, states[0], now=now)
    with monkeypatch.context() as patch:
        patch.setattr(audit_mod, "_connect", full)
        with AuditLog.open(audit_db) as log:
            with pytest.raises(AuditError, match="disk holding the audit log is full"):
                log.append(pack, big, result, now=now, user="u")
    with AuditLog.open(audit_db, create=False) as log:
        outcome = log.verify()
        assert outcome.ok and outcome.records == 2


def test_a_corrupt_file_is_an_audit_error(audit_db):
    audit_db.parent.mkdir(parents=True)
    audit_db.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(AuditError, match="not a readable SQLite database"):
        AuditLog.open(audit_db)
    with pytest.raises(AuditError, match="not a readable SQLite database"):
        AuditLog.open(audit_db, create=False)


def test_another_sqlite_database_is_not_taken_over(audit_db):
    audit_db.parent.mkdir(parents=True)
    sqlite3.connect(audit_db).execute("CREATE TABLE patients (name TEXT)").connection.commit()
    with pytest.raises(AuditError, match="not a pressor audit log"):
        AuditLog.open(audit_db)


def test_a_log_from_a_newer_pressor_is_refused(audit_db):
    AuditLog.open(audit_db).close()
    conn = sqlite3.connect(audit_db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(AuditError, match="format 99"):
        AuditLog.open(audit_db)


def test_reading_a_missing_log_says_where_it_looked(tmp_path):
    with pytest.raises(AuditError, match="no audit log here") as info:
        AuditLog.open(tmp_path / "nothing.db", create=False)
    assert str(tmp_path / "nothing.db") in str(info.value)
    assert not (tmp_path / "nothing.db").exists()


def test_a_pack_file_changed_since_loading_is_not_stored(tmp_path, pack, states, now, audit_db):
    from shutil import copytree

    from pressor.engine.evaluation.pack import load_pack

    copy = copytree(pack.directory, tmp_path / "rules", ignore=lambda d, names: [n for n in names if not n.endswith(".yaml")])
    mine = load_pack(copy)
    (Path(copy) / "pack.yaml").write_text((Path(copy) / "pack.yaml").read_text() + "\n# edited\n")
    result = evaluate(mine, states[0], now=now)
    with AuditLog.open(audit_db) as log:
        with pytest.raises(AuditError, match="changed on disk"):
            log.append(mine, states[0], result, now=now, user="u")
        assert log.verify().records == 0
