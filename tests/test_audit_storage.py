"""How records are stored (format 4): texts compressed with zstd against the record's stored pack,
older stored forms (plain text, zlib) still read and verify, damage reported clearly; and site
profiles stored with the records made under them, so that replay rebuilds pack + profile."""
from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from pressor.cli import exit_codes
from pressor.cli.main import cli
from pressor.engine.audit import AuditLog, store as store_mod
from pressor.engine.audit.compression import ZSTD_MAGIC, PackCodec, pack_dictionary
from pressor.engine.audit.records import V6_ONLY
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import load_document
from pressor.engine.evaluation.pack import default_rules_dir, load_pack

from .test_audit_backends import Raw, fill, states  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
STATE = str(ROOT / "examples" / "septic-shock-adult.yaml")
PROFILE = str(ROOT / "examples" / "profiles" / "teaching-hospital-icu.yaml")
NOW = "2026-11-24T12:00:00Z"


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.stdout + result.stderr
    return result


def stored_files(raw: Raw) -> dict[str, str]:
    return json.loads(raw.execute("SELECT files_json FROM packs").fetchone()[0])["files"]


def downgrade_to_format_3(raw: Raw) -> None:
    """What a log written before format 4 looks like: no profiles table (nor format 5's patient column, nor format
    6's columns), format 3. Its records must have been written as format 5 (``write_format = 5``)."""
    if not raw.pg:
        raw.execute("DROP INDEX records_patient")
    raw.execute("ALTER TABLE records DROP COLUMN patient")
    for name in V6_ONLY:
        raw.execute(f"ALTER TABLE records DROP COLUMN {name}")
    if raw.pg:
        raw.execute("DROP TABLE profiles")
        raw.execute("ALTER TABLE meta DISABLE TRIGGER meta_no_update")
        raw.execute("UPDATE meta SET value = '3' WHERE key = 'format'")
        raw.execute("ALTER TABLE meta ENABLE TRIGGER meta_no_update")
    else:
        for name in ("profiles_insert_once", "profiles_no_update", "profiles_no_delete"):
            raw.execute(f"DROP TRIGGER {name}")
        raw.execute("DROP TABLE profiles")
        raw.execute("PRAGMA user_version = 3")


# --- zstd against the pack -------------------------------------------------------------------


def test_round_trip_on_either_backend(audit_target, pack, states, now):
    with AuditLog.open(audit_target) as log:
        recs = fill(log, pack, states, now, 3)
        assert log.verify().ok
        assert [r.result_json for r in log.records()] == [r.result_json for r in recs]
        assert log.record(recs[1].id).input_json == recs[1].input_json
        assert log.replay(recs[0].id).identical
    raw = Raw(audit_target)
    codec = PackCodec(stored_files(raw))  # only the stored pack is needed to read a record
    for (seq, input_blob, result_blob), rec in zip(raw.execute("SELECT seq, input_json, result_json FROM records ORDER BY seq"), recs):
        assert bytes(input_blob).startswith(ZSTD_MAGIC) and bytes(result_blob).startswith(ZSTD_MAGIC)
        assert codec.decompress(bytes(result_blob)) == rec.result_json and codec.decompress(bytes(input_blob)) == rec.input_json
        # zstd against the stored pack: about half of zlib's size (0.46-0.51 under pack 3.0.0; the record id and the
        # pack's own words move it by a few bytes, so the bound leaves a margin)
        assert len(result_blob) < len(zlib.compress(rec.result_json.encode(), 6)) * 0.55


def test_the_dictionary_is_the_pack_files_in_name_order():
    assert pack_dictionary({"b.yaml": "B", "a.yaml": "A\n", "c.yaml": "é"}) == "A\nBé".encode()


def test_export_holds_the_canonical_texts_never_compressed_bytes(audit_target, pack, states, now):
    with AuditLog.open(audit_target) as log:
        recs = fill(log, pack, states, now, 2)
        jsonl, table = io.StringIO(), io.StringIO()
        log.export("jsonl", jsonl)
        log.export("csv", table)
    rows = [json.loads(line) for line in jsonl.getvalue().splitlines()]
    assert [(r["input_json"], r["result_json"]) for r in rows] == [(r.input_json, r.result_json) for r in recs]
    for row in csv.DictReader(io.StringIO(table.getvalue())):
        assert json.loads(row["result_json"]) and row["result_json"] in {r.result_json for r in recs}
    assert "\\u0028\\u00b5" not in jsonl.getvalue() and "(\u00b5/\u00fd" not in jsonl.getvalue() + table.getvalue()


def test_plain_zlib_and_zstd_rows_read_and_verify_in_one_log(audit_target, pack, states, now, monkeypatch):
    """Rows written as formats 1-2 (text) and 3 (zlib) did, then format 4 rows after them."""
    AuditLog.open(audit_target).close()
    raw = Raw(audit_target)
    old_forms = [lambda t: zlib.compress(t.encode(), 6)] + ([] if raw.pg else [lambda t: t])
    with AuditLog.open(audit_target) as log:
        log.write_format = 5  # hashed over their texts, as every record before format 6
        for form in old_forms:
            monkeypatch.setattr(store_mod.AuditLog, "stored_texts", lambda self, record, files=None, form=form: (
                None if record.input_json is None else form(record.input_json), form(record.result_json)))
            log.append(pack, states[1], evaluate(pack, states[1], now=now), now=now, user="u")
        monkeypatch.undo()
        log.append(pack, states[0], evaluate(pack, states[0], now=now), now=now, user="u")
        log.write_format = None
        log.append(pack, states[0], evaluate(pack, states[0], now=now), now=now, user="u")  # and format 6 after them
    assert [r[0] is None for r in raw.execute("SELECT result_sha256 FROM records ORDER BY seq")] == [True] * len(old_forms) + [True, False]
    blobs = [r[0] for r in raw.execute("SELECT result_json FROM records ORDER BY seq")]
    assert bytes(blobs[0][:1]) == b"\x78" and bytes(blobs[-1]).startswith(ZSTD_MAGIC)
    if not raw.pg:
        assert isinstance(blobs[1], str)
    with AuditLog.open(audit_target, create=False) as log:
        assert log.verify().ok
        assert all(log.replay(r.id).identical for r in log.records())


def test_a_format_3_log_reads_then_migrates(audit_target, pack, states, now, monkeypatch):
    with AuditLog.open(audit_target) as log:
        log.write_format = 5
        monkeypatch.setattr(store_mod.AuditLog, "stored_texts", lambda self, record, files=None: (
            zlib.compress(record.input_json.encode()), zlib.compress(record.result_json.encode())))
        fill(log, pack, states, now, 2)
        monkeypatch.undo()
    raw = Raw(audit_target)
    downgrade_to_format_3(raw)
    with AuditLog.open(audit_target, create=False) as log:  # read-only: as it is
        assert log.format == 3 and log.verify().ok and log.profiles_stored_from is None
    with AuditLog.open(audit_target) as log:  # for writing: migrated, nothing rewritten
        assert log.format == 6 and log.profiles_stored_from == 3
        log.append(pack, states[0], evaluate(pack, states[0], now=now), now=now, user="u")
        outcome = log.verify()
        assert outcome.ok and outcome.records == 3, outcome.problems
    assert bytes(raw.execute("SELECT result_json FROM records WHERE seq = 3").fetchone()[0]).startswith(ZSTD_MAGIC)


@pytest.mark.parametrize("record_format", [5, 6])
def test_a_damaged_blob_is_reported_never_a_traceback(audit_target, pack, states, now, record_format):
    """Format 5 finds the damage decompressing; format 6 by the stored bytes' SHA-256, and lists the record from
    its columns (its texts are not read), while show, which decompresses them, reports it."""
    with AuditLog.open(audit_target) as log:
        log.write_format = record_format
        recs = fill(log, pack, states, now, 3)
    raw = Raw(audit_target)
    raw.drop_triggers()
    blob = bytearray(raw.execute("SELECT result_json FROM records WHERE seq = 2").fetchone()[0])
    blob[len(blob) // 2] ^= 0xFF
    raw.execute("UPDATE records SET result_json = ? WHERE seq = 2", (bytes(blob),))
    raw.execute("UPDATE records SET input_json = ? WHERE seq = 3", (b"\x00garbage",))
    with AuditLog.open(audit_target, create=False) as log:
        outcome = log.verify()
    damaged = {p.seq: p.reasons for p in outcome.problems if p.seq}
    assert set(damaged) == {2, 3}
    if record_format == 5:
        assert any("not readable (damaged zstd frame" in r for r in damaged[2])
        assert any("neither a zstd frame nor a zlib stream" in r for r in damaged[3])
    else:
        assert any("does not match its stored_sha256" in r for r in damaged[2])
        assert any("does not match its stored_sha256" in r for r in damaged[3])
    shown = run("audit", "show", recs[1].id, "--audit-db", str(audit_target))
    assert shown.exit_code == exit_codes.INVALID and "record #2" in shown.stderr and "cannot be read" in shown.stderr
    listed = run("audit", "list", "--audit-db", str(audit_target))
    if record_format == 5:
        assert listed.exit_code == exit_codes.INVALID and "cannot be read" in listed.stderr
    else:
        assert listed.exit_code == 0 and "3 record(s)" in listed.stdout + listed.stderr
    verified = run("audit", "verify", "--audit-db", str(audit_target))
    assert verified.exit_code == exit_codes.INVALID and "BROKEN: first bad record #2" in verified.stderr


@pytest.mark.parametrize("record_format", [5, 6])
def test_a_missing_stored_pack_is_reported(audit_target, pack, states, now, record_format):
    with AuditLog.open(audit_target) as log:
        log.write_format = record_format
        recs = fill(log, pack, states, now, 2)
    raw = Raw(audit_target)
    raw.drop_triggers()
    if raw.pg:
        raw.execute("ALTER TABLE records DROP CONSTRAINT records_pack_sha256_fkey")
    raw.execute("DELETE FROM packs")
    with AuditLog.open(audit_target, create=False) as log:
        outcome = log.verify()
    reasons = outcome.first_bad.reasons
    assert outcome.first_bad.seq == 1
    # format 6 is verified without decompressing, so only the missing pack itself is named
    assert record_format == 6 or any("is not stored, and its texts are compressed against it" in r for r in reasons)
    assert any("missing from the stored packs" in r for r in reasons)
    shown = run("audit", "show", recs[0].id, "--audit-db", str(audit_target))
    assert shown.exit_code == exit_codes.INVALID and "is not stored" in shown.stderr


def test_the_codec_cache_is_bounded(tmp_path, pack, states, now, monkeypatch):
    other_dir = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), other_dir, ignore=shutil.ignore_patterns("__*"))
    with open(other_dir / "parameters.yaml", "a", encoding="utf-8") as fh:
        fh.write("\n# a site's copy\n")
    other = load_pack(other_dir)
    assert other.sha256 != pack.sha256
    monkeypatch.setattr(store_mod, "CODEC_CACHE", 1)
    with AuditLog.open(tmp_path / "two.db") as log:
        for p in (pack, other, pack):
            log.append(p, states[0], evaluate(p, states[0], now=now), now=now, user="u")
            assert len(log._codecs) == 1  # the last used: this pack's, or the head's (checked before appending)
        assert [r.pack_sha256 for r in log.records()] == [pack.sha256, other.sha256, pack.sha256]
        assert log.verify().ok


# --- site profiles ---------------------------------------------------------------------------


def _recommend(db: Path, *extra: str):
    result = run("recommend", STATE, "--now", NOW, "--audit-db", str(db), "--require-audit", "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_a_record_made_under_a_profile_replays_the_same(tmp_path):
    db = tmp_path / "audit.db"
    with_profile = _recommend(db, "--profile", PROFILE)
    without = _recommend(db)
    assert with_profile["pack"]["profile"]["name"] and "profile" not in without["pack"]
    ids = [r["id"] for r in json.loads(run("audit", "list", "--json", "--audit-db", str(db)).stdout)]
    for rid in ids:
        replayed = run("audit", "replay", rid, "--audit-db", str(db), "--json")
        assert replayed.exit_code == 0 and json.loads(replayed.stdout)["identical"], replayed.stdout
    stored = sqlite3.connect(db).execute("SELECT sha256, name, text FROM profiles").fetchall()
    assert stored == [(with_profile["pack"]["profile"]["sha256"], with_profile["pack"]["profile"]["name"],
                       Path(PROFILE).read_text(encoding="utf-8"))]
    assert run("audit", "verify", "--audit-db", str(db)).exit_code == 0


def test_a_tampered_stored_profile_is_reported(tmp_path):
    db = tmp_path / "audit.db"
    _recommend(db, "--profile", PROFILE)
    _recommend(db)
    raw = Raw(db)
    raw.drop_triggers()
    raw.execute("UPDATE profiles SET text = replace(text, '8', '9')")
    verified = run("audit", "verify", "--audit-db", str(db), "--json")
    data = json.loads(verified.stdout)
    assert verified.exit_code == exit_codes.INVALID and data["first_bad"]["seq"] == 1
    assert any("stored site profile" in r and "was altered" in r for r in data["first_bad"]["reasons"])
    assert [p["seq"] for p in data["problems"] if p["seq"]] == [1]  # the record without a profile is fine
    rid = json.loads(run("audit", "list", "--json", "--audit-db", str(db)).stdout)[0]["id"]
    replayed = run("audit", "replay", rid, "--audit-db", str(db))
    assert replayed.exit_code == exit_codes.INVALID and "was altered" in replayed.stderr


def test_a_profile_record_from_before_profiles_were_stored_replays_with_the_file(tmp_path, monkeypatch):
    db = tmp_path / "audit.db"
    monkeypatch.setattr(store_mod.AuditLog, "write_format", 5)
    _recommend(db, "--profile", PROFILE)
    monkeypatch.undo()
    downgrade_to_format_3(Raw(db))  # as if recorded by the pressor before this one
    _recommend(db)  # migrates
    assert run("audit", "verify", "--audit-db", str(db)).exit_code == 0
    first, second = (r["id"] for r in json.loads(run("audit", "list", "--json", "--audit-db", str(db)).stdout))
    refused = run("audit", "replay", first, "--audit-db", str(db))
    assert refused.exit_code == exit_codes.INVALID and "--profile FILE" in refused.stderr
    assert run("audit", "replay", first, "--audit-db", str(db), "--profile", PROFILE).exit_code == 0
    other = tmp_path / "other.yaml"
    other.write_text(Path(PROFILE).read_text(encoding="utf-8") + "# changed\n", encoding="utf-8")
    wrong = run("audit", "replay", first, "--audit-db", str(db), "--profile", str(other))
    assert wrong.exit_code == exit_codes.INVALID and "SHA-256 differs" in wrong.stderr
    assert run("audit", "replay", second, "--audit-db", str(db)).exit_code == 0
    _recommend(db, "--profile", PROFILE)  # once a later record stores the profile, the log holds it
    assert run("audit", "replay", first, "--audit-db", str(db)).exit_code == 0


def test_profiles_on_either_backend(audit_target, now):
    profiled = load_pack(profile=PROFILE)
    state = load_document(STATE).data
    with AuditLog.open(audit_target) as log:
        rec = log.append(profiled, state, evaluate(profiled, state, now=now), now=now, user="u")
        assert log.stored_profile(profiled.profile.sha256) == Path(PROFILE).read_text(encoding="utf-8")
        assert log.replay(rec.id).identical and log.verify().ok
    raw = Raw(audit_target)
    with pytest.raises(raw.errors, match="append-only"):
        raw.execute("UPDATE profiles SET text = 'x'")
