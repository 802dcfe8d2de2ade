"""Audit record format 6 (issue 24 item 7): the hash covers the stored bytes and the texts' SHA-256, so that
``verify`` and ``list`` never decompress; older records keep their hashes and verify as before, in one log
with the new ones (after a migration) and on both backends; ``verify --deep`` checks the texts too."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pressor.cli import exit_codes
from pressor.engine.audit import AuditLog, canonical_json, sha256_text
from pressor.engine.audit.records import V6_FIELDS, V6_ONLY, fired_rules, v6_hashed
from pressor.engine.evaluation.evaluate import evaluate

from .test_audit_backends import Raw, fill, run, states  # noqa: F401


def summary_of(record) -> dict:
    """What ``audit list --json`` showed of a record before format 6 (parsed from its Result)."""
    result = record.result
    return {"seq": record.seq, "id": record.id, "recorded_at": record.recorded_at, "user": record.user,
            "evaluated_at": result.get("evaluated_at"), "input_mode": record.input_mode,
            "pack": {"name": record.pack_name, "version": record.pack_version, "sha256": record.pack_sha256},
            "recommendations": fired_rules(result), "record_hash": record.record_hash,
            **({"patient": record.patient} if record.patient else {}),
            **({"hook_instance": record.hook_instance} if record.hook_instance else {})}


def downgrade_to_format_5(raw: Raw) -> None:
    """What a log written before format 6 looks like (its records written with ``write_format = 5``)."""
    for name in V6_ONLY:
        raw.execute(f"ALTER TABLE records DROP COLUMN {name}")
    if raw.pg:
        raw.execute("ALTER TABLE meta DISABLE TRIGGER meta_no_update")
        raw.execute("UPDATE meta SET value = '5' WHERE key = 'format'")
        raw.execute("ALTER TABLE meta ENABLE TRIGGER meta_no_update")
    else:
        raw.execute("PRAGMA user_version = 5")


def test_the_hash_is_jcs_of_every_field_but_the_texts(audit_db, pack, states, now):
    with AuditLog.open(audit_db) as log:
        rec = log.append(pack, states[0], evaluate(pack, states[0], now=now), now=now, user="Dr Émile 医生", patient="Patient/p1")
        database_id = log.database_id
    assert rec.format == 6 and rec.result_sha256 == sha256_text(rec.result_json)
    assert json.loads(rec.fired_json) == rec.fired() and rec.evaluated_at == rec.result["evaluated_at"]
    body = {k: getattr(rec, k) for k in V6_FIELDS if getattr(rec, k) is not None}
    # the fast serialisation is RFC 8785: the same bytes as the full canonical JSON of the same fields
    assert v6_hashed({k: getattr(rec, k) for k in V6_FIELDS}, database_id) == canonical_json(
        {**body, "database_id": database_id, "record_format": 6}) == rec.hashed(database_id)
    assert rec.record_hash == sha256_text(rec.hashed(database_id))


def test_a_log_of_both_formats_verifies_lists_and_exports_alike(audit_target, pack, states, now):
    """Records hashed over their texts (as before format 6) and records of format 6 in one log, in that order
    (what a migrated log holds): one chain; list gives the same lines for both, from the columns or the Result."""
    with AuditLog.open(audit_target) as log:
        log.write_format = 5
        old = fill(log, pack, states, now, 3)
        log.write_format = None
        new = fill(log, pack, states, now, 3)
        assert [r.format for r in old + new] == [5, 5, 5, 6, 6, 6] and new[0].prev_hash == old[-1].record_hash
    with AuditLog.open(audit_target, create=False) as log:
        assert log.verify().ok and log.verify(deep=True).ok
        records = list(log.records())
        assert [r.record_hash for r in records] == [r.record_hash for r in old + new]
        assert list(log.summaries()) == [summary_of(r) for r in records]
        assert [s["seq"] for s in log.summaries(rule=records[3].fired()[0].split("@")[0])] == \
               [r.seq for r in records if records[3].fired()[0] in r.fired()]
    listed = run("audit", "list", "--json", "--audit-db", str(audit_target))
    assert listed.exit_code == 0 and json.loads(listed.stdout) == [summary_of(r) for r in records]
    deep = run("audit", "verify", "--deep", "--audit-db", str(audit_target))
    assert deep.exit_code == 0 and "6 record(s)" in deep.stdout + deep.stderr


@pytest.mark.parametrize("where", ["old", "new"])
def test_an_edit_is_caught_in_either_part_of_a_mixed_log(audit_target, pack, states, now, where):
    with AuditLog.open(audit_target) as log:
        log.write_format = 5
        fill(log, pack, states, now, 2)
        log.write_format = None
        fill(log, pack, states, now, 2)
    raw = Raw(audit_target)
    raw.drop_triggers()
    seq = 2 if where == "old" else 3
    raw.execute('UPDATE records SET "user" = ? WHERE seq = ?', ("mallory", seq))
    with AuditLog.open(audit_target, create=False) as log:
        bad = log.verify().first_bad
    assert bad.seq == seq and any("record_hash does not match" in r for r in bad.reasons)


def test_a_format_5_log_is_read_as_it_is_then_migrated(audit_target, pack, states, now):
    with AuditLog.open(audit_target) as log:
        log.write_format = 5
        before = fill(log, pack, states, now, 2)
    raw = Raw(audit_target)
    downgrade_to_format_5(raw)
    with AuditLog.open(audit_target, create=False) as log:  # read-only: as it is, nothing written
        assert log.format == 5 and log.verify().ok
        assert list(log.summaries()) == [summary_of(r) for r in log.records()]
    with AuditLog.open(audit_target) as log:  # for writing: migrated (columns added, no record rewritten)
        assert log.format == 6
        after = log.append(pack, states[0], evaluate(pack, states[0], now=now), now=now, user="u")
        assert after.format == 6 and after.prev_hash == before[-1].record_hash
        assert [r.record_hash for r in log.records()][:2] == [r.record_hash for r in before]
        assert log.verify(deep=True).ok
    with AuditLog.open(audit_target, create=False) as log:
        assert log.format == 6 and log.verify().records == 3


def test_a_newer_format_is_refused_with_a_message(audit_db, pack, states, now):
    with AuditLog.open(audit_db) as log:
        fill(log, pack, states, now, 1)
    Raw(audit_db).execute("PRAGMA user_version = 7")
    refused = run("audit", "verify", "--audit-db", str(audit_db))
    assert refused.exit_code != 0 and "format 7" in refused.stderr


def test_deep_verify_finds_texts_that_do_not_match_their_hashes(audit_target, pack, states, now):
    """The chain covers the stored bytes; a writer at fault that stored other bytes than those of the texts it
    hashed (simulated: a record rewritten with its hashes recomputed over a changed text's SHA-256, and the chain
    after it rebuilt) passes the quick verify, which reads no text, and is caught by --deep."""
    with AuditLog.open(audit_target) as log:
        recs = fill(log, pack, states, now, 3)
        database_id = log.database_id
    raw = Raw(audit_target)
    raw.drop_triggers()
    prev = recs[0].record_hash
    for rec in recs[1:]:
        changed = replace(rec, prev_hash=prev, result_sha256="0" * 64 if rec.seq == 2 else rec.result_sha256)
        changed = replace(changed, record_hash=sha256_text(changed.hashed(database_id)))
        raw.execute("UPDATE records SET prev_hash = ?, result_sha256 = ?, record_hash = ? WHERE seq = ?",
                    (changed.prev_hash, changed.result_sha256, changed.record_hash, rec.seq))
        prev = changed.record_hash
    with AuditLog.open(audit_target, create=False) as log:
        assert log.verify().first_bad is None  # as the chain alone says (an anchor would catch the rebuilt chain)
        bad = log.verify(deep=True).first_bad
    assert bad.seq == 2 and any("does not match its result_sha256" in r for r in bad.reasons)
    deep = run("audit", "verify", "--deep", "--audit-db", str(audit_target))
    assert deep.exit_code == exit_codes.INVALID and "first bad record #2" in deep.stderr


def test_damaged_columns_are_reported_never_a_traceback(audit_db, pack, states, now):
    with AuditLog.open(audit_db) as log:
        fill(log, pack, states, now, 3)
    raw = Raw(audit_db)
    raw.drop_triggers()
    raw.execute("UPDATE records SET fired_json = '[not json' WHERE seq = 2")
    raw.execute("UPDATE records SET stored_sha256 = 42, result_json = 'text, not a frame' WHERE seq = 3")
    with AuditLog.open(audit_db, create=False) as log:
        problems = {p.seq: p.reasons for p in log.verify().problems if p.seq}
    assert set(problems) == {2, 3}
    assert any("does not match its stored_sha256" in r for r in problems[3])
    listed = run("audit", "list", "--json", "--audit-db", str(audit_db))
    assert listed.exit_code == exit_codes.INVALID and "record #2" in listed.stderr and "cannot be read" in listed.stderr
    exported = run("audit", "export", "--texts", "stored", "--audit-db", str(audit_db))
    assert exported.exit_code == 0 and len(exported.stdout.splitlines()) == 3
    refused = run("audit", "export", "--texts", "stored", "--format", "csv", "--audit-db", str(audit_db))
    assert refused.exit_code == exit_codes.USAGE and "--texts stored" in refused.stderr
