"""The audit log through the CLI: recommend records, failures exit 3 (or 1 with --require-audit),
and the audit commands list, show, verify, replay and export."""
from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from pressor.cli import exit_codes
from pressor.cli.main import cli
from pressor.engine.audit import store_sqlite as audit_mod
from pressor.engine.audit import AuditLog, os_user
from pressor.engine.audit.compression import PackCodec
from pressor.engine.evaluation.load import load_document

ROOT = Path(__file__).resolve().parent.parent
STATE = str(ROOT / "examples" / "septic-shock-adult.yaml")
OTHER = str(ROOT / "examples" / "hepatorenal.yaml")
NOW = "2026-11-24T12:00:00Z"


def run(*args: str, stdin: str | None = None):
    result = CliRunner().invoke(cli, list(args), input=stdin)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def recommend(*extra: str, state: str = STATE):
    return run("recommend", state, "--now", NOW, *extra)


# --- recommend records -------------------------------------------------------


def test_every_recommend_appends_one_record(audit_db, result_validator):
    first = recommend("--json")
    second = recommend("--json", "--user", "dr.lee", state=OTHER)
    assert first.exit_code == second.exit_code == 0 and first.stderr == ""
    listing = run("audit", "list", "--json")
    assert listing.exit_code == 0
    records = json.loads(listing.stdout)
    assert [r["seq"] for r in records] == [1, 2]
    assert records[1]["user"] == "dr.lee" and records[0]["evaluated_at"] == "2026-11-24T12:00:00Z"
    shown = json.loads(run("audit", "show", records[0]["id"], "--json").stdout)
    result_validator.validate(shown["result"])
    assert shown["result"] == json.loads(first.stdout)  # what was recorded is what was shown
    assert shown["input"] == load_document(STATE).data


def test_the_default_user_is_the_os_user(audit_db):
    recommend()
    with AuditLog.open(audit_db, create=False) as log:
        assert [r.user for r in log.records()] == [os_user()]


def test_no_audit_records_nothing(audit_db):
    assert recommend("--no-audit").exit_code == 0
    assert not audit_db.exists()


def test_audit_db_option_overrides_the_environment(audit_db, tmp_path):
    other = tmp_path / "elsewhere.db"
    assert recommend("--audit-db", str(other)).exit_code == 0
    assert other.exists() and not audit_db.exists()


def test_hash_mode_stores_no_input_and_says_replay_needs_it(audit_db):
    assert recommend("--audit-input", "hash").exit_code == 0
    record = json.loads(run("audit", "list", "--json").stdout)[0]
    assert record["input_mode"] == "hash"
    assert json.loads(run("audit", "show", record["id"], "--json").stdout)["input"] is None
    replay = run("audit", "replay", record["id"])
    assert replay.exit_code == 1 and "cannot be replayed" in replay.stderr and "--input FILE" in replay.stderr
    assert run("audit", "replay", record["id"], "--input", STATE).exit_code == 0


def test_no_audit_and_require_audit_contradict():
    result = recommend("--no-audit", "--require-audit")
    assert result.exit_code == exit_codes.USAGE and "contradict" in result.stderr


def test_an_invalid_state_is_not_recorded(audit_db, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vitals:\n  map_mmhg: -5\n")
    assert run("recommend", str(bad)).exit_code == exit_codes.INVALID
    assert not audit_db.exists()


# --- when the record cannot be written ---------------------------------------


def _read_only_file(audit_db, monkeypatch):
    """Read-only database: root ignores chmod, so SQLite opens the file with mode=ro."""
    recommend()
    real = audit_mod._connect
    monkeypatch.setattr(audit_mod, "_connect", lambda path, readonly: real(path, readonly=True))
    return "read-only"


def _full_disk(audit_db, monkeypatch):
    """Full disk: SQLite may not grow the file by one page (PRAGMA max_page_count), so it reports SQLITE_FULL."""
    recommend()
    real = audit_mod._connect

    def full(path, readonly):
        conn = real(path, readonly=readonly)
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        return conn

    monkeypatch.setattr(audit_mod, "_connect", full)
    return "full"


def _unwritable_missing_directory(audit_db, monkeypatch):
    """The directory is missing and cannot be created (root could: the refusal is simulated)."""
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    return "read-only"


def _corrupt_file(audit_db, monkeypatch):
    """Random bytes where the database should be."""
    audit_db.parent.mkdir(parents=True)
    audit_db.write_bytes(os.urandom(8192))
    return "not a readable SQLite database"


FAILURES = [_read_only_file, _full_disk, _unwritable_missing_directory, _corrupt_file]


@pytest.mark.parametrize("failure", FAILURES, ids=lambda f: f.__name__.strip("_"))
def test_an_unrecorded_recommendation_is_shown_with_a_warning_and_exit_3(failure, audit_db, monkeypatch, result_validator):
    why = failure(audit_db, monkeypatch)
    text = recommend()
    assert text.exit_code == exit_codes.NOT_RECORDED
    assert "start norepinephrine now" in text.stderr  # the clinician still sees the recommendation
    assert "NOT recorded in the audit log" in text.stderr and why in text.stderr
    machine = recommend("--json")
    assert machine.exit_code == exit_codes.NOT_RECORDED
    result_validator.validate(json.loads(machine.stdout))
    assert "NOT recorded" in machine.stderr


@pytest.mark.parametrize("failure", FAILURES, ids=lambda f: f.__name__.strip("_"))
def test_require_audit_shows_nothing_when_it_cannot_record(failure, audit_db, monkeypatch):
    why = failure(audit_db, monkeypatch)
    text = recommend("--require-audit")
    assert text.exit_code == exit_codes.INVALID and text.stdout == ""
    assert "start norepinephrine now" not in text.stderr
    assert why in text.stderr and "withheld" in text.stderr
    machine = recommend("--require-audit", "--json")
    assert machine.exit_code == exit_codes.INVALID
    assert json.loads(machine.stdout)["error"] == "audit_error"  # the error document, no recommendation


def test_require_audit_shows_the_recommendation_once_recorded(audit_db):
    result = recommend("--require-audit", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["recommendations"]
    assert json.loads(run("audit", "verify", "--json").stdout)["records"] == 1


def test_a_missing_directory_with_a_writable_parent_is_created(tmp_path):
    target = tmp_path / "a" / "b" / "audit.db"
    assert recommend("--audit-db", str(target)).exit_code == 0
    assert target.is_file()


@contextmanager
def read_only(path: Path):
    """Really read-only, even for root: chmod for a normal user; the immutable attribute
    (chattr +i, which root obeys) when the tests run as root, as they do here."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    try:
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"running as root, and chattr +i is unavailable here ({exc}): root ignores permission bits")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("case", ["file", "directory"])
def test_a_really_read_only_file_or_directory(case, audit_db):
    recommend()  # creates the log; on a clean exit SQLite removes the -wal and -shm files
    # A read-only directory: SQLite cannot create the -wal and -shm files next to the database.
    with read_only(audit_db if case == "file" else audit_db.parent):
        shown = recommend("--json")
        assert shown.exit_code == exit_codes.NOT_RECORDED
        assert json.loads(shown.stdout)["recommendations"] and "NOT recorded" in shown.stderr
        withheld = recommend("--require-audit")
        assert withheld.exit_code == exit_codes.INVALID and withheld.stdout == "" and "withheld" in withheld.stderr
        assert "start norepinephrine now" not in withheld.stderr
        verified = run("audit", "verify", "--json")  # an archived log can still be read and verified
        assert verified.exit_code == 0 and json.loads(verified.stdout)["records"] == 1


# --- the audit commands ------------------------------------------------------


def test_list_filters_and_prints_humans_a_line_per_record(audit_db):
    recommend()
    recommend(state=OTHER)
    human = run("audit", "list")
    assert human.exit_code == 0 and human.stdout == ""
    assert human.stderr.count("\n#") + human.stderr.startswith("#") == 2 and "2 record(s)" in human.stderr
    only = json.loads(run("audit", "list", "--rule", "special.hepatorenal", "--json").stdout)
    assert [r["seq"] for r in only] == [2]
    assert json.loads(run("audit", "list", "--since", "2999-01-01", "--json").stdout) == []
    assert [r["seq"] for r in json.loads(run("audit", "list", "--until", "2999-01-01", "--json").stdout)] == [1, 2]
    assert json.loads(run("audit", "list", "--until", "2000-01-01", "--json").stdout) == []
    assert json.loads(run("audit", "list", "--user", "no-such-user-anywhere", "--json").stdout) == []
    who = json.loads(run("audit", "list", "--json").stdout)[0]["user"]
    assert len(json.loads(run("audit", "list", "--user", who.upper(), "--json").stdout)) == 2
    version = json.loads(run("audit", "list", "--json").stdout)[0]["pack"]["version"]
    assert len(json.loads(run("audit", "list", "--pack-version", version, "--json").stdout)) == 2
    assert json.loads(run("audit", "list", "--pack-version", "0.0.0", "--json").stdout) == []
    assert run("audit", "list", "--since", "yesterday").exit_code == exit_codes.USAGE


def test_show_by_prefix_in_text(audit_db):
    recommend()
    record = json.loads(run("audit", "list", "--json").stdout)[0]
    shown = run("audit", "show", record["id"][:8])
    assert shown.exit_code == 0 and shown.stdout == ""
    assert record["id"] in shown.stderr and record["record_hash"] in shown.stderr and "PLAN" in shown.stderr
    assert run("audit", "show", "ffffffff-0000").exit_code == exit_codes.INVALID


def test_verify_prints_the_head_to_anchor(audit_db):
    for _ in range(3):
        recommend()
    result = run("audit", "verify", "--json")
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["ok"] and data["records"] == 3 and data["first_bad"] is None
    head = data["head"]
    assert head["seq"] == 3 and len(head["record_hash"]) == 64
    anchored = run("audit", "verify", "--anchor", f"{head['seq']}:{head['record_hash']}")
    assert anchored.exit_code == 0 and head["record_hash"] in anchored.stderr
    assert run("audit", "verify", "--anchor", "3:nothex").exit_code == exit_codes.USAGE


def test_verify_exits_1_naming_the_first_bad_record(audit_db):
    for _ in range(4):
        recommend()
    records = json.loads(run("audit", "list", "--json").stdout)
    conn = sqlite3.connect(audit_db, isolation_level=None)
    conn.execute("DROP TRIGGER records_no_update")
    conn.execute("UPDATE records SET user = 'mallory' WHERE seq = 2")
    conn.close()
    human = run("audit", "verify")
    assert human.exit_code == exit_codes.INVALID
    assert f"first bad record #2 ({records[1]['id']})" in human.stderr and "was edited" in human.stderr
    data = json.loads(run("audit", "verify", "--json").stdout)
    assert not data["ok"] and data["first_bad"]["seq"] == 2 and data["first_bad"]["id"] == records[1]["id"]


def test_replay_identical_then_different(audit_db):
    recommend("--include-draft")
    record = json.loads(run("audit", "list", "--json").stdout)[0]
    same = run("audit", "replay", record["id"], "--json")
    assert same.exit_code == 0 and json.loads(same.stdout)["identical"] is True
    conn = sqlite3.connect(audit_db, isolation_level=None)
    conn.execute("DROP TRIGGER records_no_update")
    stored = conn.execute("SELECT result_json FROM records WHERE seq = 1").fetchone()[0]  # compressed against the pack
    files = json.loads(conn.execute("SELECT files_json FROM packs").fetchone()[0])["files"]
    codec = PackCodec(files)
    edited = codec.decompress(stored).replace('"severity":"critical"', '"severity":"info"', 1)
    conn.execute("UPDATE records SET result_json = ? WHERE seq = 1", (codec.compress(edited),))
    conn.close()
    differs = run("audit", "replay", record["id"])
    assert differs.exit_code == exit_codes.INVALID and "DIFFERENT" in differs.stderr
    data = json.loads(run("audit", "replay", record["id"], "--json").stdout)
    assert not data["identical"]
    # The first "critical" in canonical (key-sorted) text may sit in ask_next before the recommendations.
    assert any(d["pointer"].endswith("/severity") and (d["stored"], d["replayed"]) == ("info", "critical")
               for d in data["differences"]), data["differences"]


def test_export_jsonl_to_stdout_and_csv_to_a_file(audit_db, tmp_path):
    recommend()
    recommend(state=OTHER)
    lines = run("audit", "export").stdout.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]
    target = tmp_path / "out.csv"
    result = run("audit", "export", "--format", "csv", "--output", str(target), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"output": str(target), "format": "csv", "kind": "records", "records": 2}
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [r["seq"] for r in rows] == ["1", "2"]
    assert run("audit", "export", "--json").exit_code == exit_codes.USAGE


def test_reading_commands_on_a_missing_log_say_where_they_looked(audit_db):
    for args in (["list"], ["verify"], ["show", "abc"], ["replay", "abc"], ["export"]):
        result = run("audit", *args)
        assert result.exit_code == exit_codes.INVALID and "no audit log here" in result.stderr and str(audit_db) in result.stderr
    assert not audit_db.exists()


def test_cli_start_up_does_not_import_the_audit_store():
    # Start-up cost: sqlite3 and the audit store are imported by the commands that use them, not by every command.
    code = "import sys, pressor.cli.main; print('pressor.engine.audit' in sys.modules, 'sqlite3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_export_into_a_missing_directory_says_so(tmp_path):
    """A user error, not an audit-log failure: the message names the missing directory; nothing is written."""
    from click.testing import CliRunner

    from pressor.cli.main import cli

    db = str(tmp_path / "a.db")
    state = tmp_path / "state.json"
    state.write_text('{"vitals": {"sbp_mmhg": 65, "dbp_mmhg": 40}}')
    assert CliRunner().invoke(cli, ["recommend", str(state), "--json", "--audit-db", db]).exit_code == 0
    target = tmp_path / "no" / "such" / "out.jsonl"
    out = CliRunner().invoke(cli, ["audit", "export", "--output", str(target), "--audit-db", db])
    assert out.exit_code == 1 and "Traceback" not in out.stderr
    assert f"the directory {target.parent} does not exist" in out.stderr and "create it" in out.stderr
    assert not target.parent.exists()
