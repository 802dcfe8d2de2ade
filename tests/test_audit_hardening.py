"""Issue 11, items 9-11 and the scale section: export writes only to a regular file or a new path;
reading never needs write access; control characters never reach the terminal raw; canonical
JSON is RFC 8785; records are small; list streams and filters by index; progress only on a TTY."""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import stat
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import rfc8785
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from pressor.cli import exit_codes
from pressor.cli.main import cli
from pressor.engine.audit import AuditLog, canonical_json
from pressor.engine.audit.compression import PackCodec
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import load_document

ROOT = Path(__file__).resolve().parent.parent
STATE = str(ROOT / "examples" / "septic-shock-adult.yaml")
NOW = "2026-11-24T12:00:00Z"
FORK = multiprocessing.get_context("fork")


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.stdout + result.stderr
    return result


def recommend(*extra: str):
    return run("recommend", STATE, "--now", NOW, *extra)


# --- item 9: export writes only to a regular file or a new path ---------------


def _refused(target: Path, what: str) -> None:
    result = run("audit", "export", "--output", str(target))
    assert result.exit_code == exit_codes.INVALID, result.stderr
    assert what in result.stderr and "regular file or a new path" in result.stderr


def test_export_refuses_a_device(audit_db):
    recommend()
    _refused(Path("/dev/full"), "a device")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # still the device, not a file of patient records
    _refused(Path("/dev/null"), "a device")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_export_refuses_a_fifo_a_directory_and_links_to_them(audit_db, tmp_path):
    recommend()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _refused(fifo, "a FIFO")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    _refused(tmp_path, "a directory")
    link = tmp_path / "link"
    link.symlink_to(fifo)
    _refused(link, "a FIFO")
    assert link.is_symlink() and stat.S_ISFIFO(os.stat(fifo).st_mode)
    devlink = tmp_path / "devlink"
    devlink.symlink_to("/dev/full")
    _refused(devlink, "a device")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left


def test_export_replaces_a_regular_file_and_writes_through_a_link_to_one(audit_db, tmp_path):
    recommend()
    target = tmp_path / "old.jsonl"
    target.write_text("previous\n")
    link = tmp_path / "current.jsonl"
    link.symlink_to(target)
    assert run("audit", "export", "--output", str(link)).exit_code == 0
    assert link.is_symlink() and json.loads(target.read_text())["seq"] == 1
    fresh = tmp_path / "new.jsonl"
    assert run("audit", "export", "--output", str(fresh)).exit_code == 0 and fresh.is_file()


def test_export_into_a_missing_directory_says_so(audit_db, tmp_path):
    recommend()
    result = run("audit", "export", "--output", str(tmp_path / "nope" / "x.jsonl"))
    assert result.exit_code == exit_codes.INVALID and "does not exist" in result.stderr


# --- item 10: reading never needs write access -------------------------------


def _read_as_nobody(path: Path, record_id: str, send) -> None:
    """In a forked child: drop to an unprivileged user, then every reading command."""
    try:
        # The interpreter may live where nobody cannot read (/root): import what the commands use first.
        import csv, sqlite3, tempfile, zlib  # noqa: F401, E401
        import pressor.cli.audit, pressor.cli.recommend, pressor.engine.audit.export, pressor.engine.audit.replay  # noqa: F401, E401
        import pressor.engine.audit.store_sqlite, pressor.engine.report, pressor.service.cards  # noqa: F401, E401
        import pressor.engine.evaluation.evaluate, pressor.engine.evaluation.pack  # noqa: F401, E401
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        out = {}
        for name, args in (("verify", ["audit", "verify", "--json"]), ("list", ["audit", "list", "--json"]),
                           ("show", ["audit", "show", record_id, "--json"]), ("export", ["audit", "export"]),
                           ("replay", ["audit", "replay", record_id, "--json"])):
            result = CliRunner().invoke(cli, [*args, "--audit-db", str(path)])
            out[name] = (result.exit_code, result.stdout, result.stderr + repr(result.exception))
        send.send(out)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        send.send({"error": repr(exc)})


@pytest.fixture
def world_tmp():
    """A directory every user can reach (pytest's tmp_path is under a 0700 directory)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="pressor-archive-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_an_archived_log_reads_without_write_access(world_tmp):
    archive = world_tmp / "archive"
    path = archive / "audit.db"
    assert run("recommend", STATE, "--now", NOW, "--audit-db", str(path)).exit_code == 0
    with AuditLog.open(path) as log:  # a writer closing cleanly removes -wal and -shm (a reader cannot)
        record_id = log.head()[1]
    assert sorted(p.name for p in archive.iterdir()) == ["audit.db"]  # no -wal, no -shm: closed cleanly
    # A root-owned 755 directory and a 644 file: the reader (nobody, or this user after chmod) cannot write.
    os.chmod(archive, 0o755 if os.geteuid() == 0 else 0o555)
    os.chmod(path, 0o644 if os.geteuid() == 0 else 0o444)
    before = path.read_bytes()
    receive, send = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_read_as_nobody, args=(path, record_id, send))
    child.start()
    assert receive.poll(120), "the reader did not answer"
    out = receive.recv()
    child.join()
    os.chmod(archive, 0o755)
    assert "error" not in out, out
    for name, (code, stdout, stderr) in out.items():
        assert code == 0, (name, stdout, stderr)
    assert json.loads(out["verify"][1])["ok"] and json.loads(out["replay"][1])["identical"]
    assert json.loads(out["export"][1].splitlines()[0])["id"] == record_id
    assert sorted(p.name for p in archive.iterdir()) == ["audit.db"] and path.read_bytes() == before


# --- item 11: control characters ---------------------------------------------


@pytest.mark.parametrize("name", ["dr.lee\n#2      forged", "x\x1b[2J", "evil\u202eeulb", "\t", "", "a\x00b"])
def test_user_with_control_characters_is_refused(audit_db, name):
    result = recommend("--user", name)
    assert result.exit_code == exit_codes.USAGE and "--user" in result.stderr
    assert not audit_db.exists() or AuditLog.open(audit_db, create=False).head()[0] == 0


def test_recorded_strings_are_escaped_on_output(audit_db, pack, now):
    state = load_document(STATE).data
    result = evaluate(pack, state, now=now)
    forged_user = "svc\n#99     deadbeef  2026-01-01T00:00:00Z  admin\x1b]0;owned\x07\u202e"
    with AuditLog.open(audit_db) as log:  # as the service records a token's iss|sub
        rec = log.append(pack, state, result, now=now, user=forged_user, hook_instance="hi\x1b[31m")
        log.append(pack, state, result, now=now, user="plain", hook_instance="h2")
    listing = run("audit", "list")
    lines = listing.stderr.splitlines()
    assert len(lines) == 3 and lines[-1] == "2 record(s)"  # no forged line
    shown = run("audit", "show", rec.id)
    for text in (listing.stderr, shown.stderr):
        assert not any(c in text for c in "\x1b\x07\u202e")
        assert "svc\\n#99" in text and "\\x1b]0;owned\\x07\\u202e" in text
    assert "hi\\x1b[31m" in shown.stderr
    data = json.loads(run("audit", "list", "--json").stdout)  # JSON keeps the exact string (escaped by JSON itself)
    assert data[0]["user"] == forged_user


# --- scale: canonical JSON, size, streaming, indexes, progress ---------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53 + 1, 2**53 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_canonical_json_is_rfc_8785(value):
    assert canonical_json(value).encode("utf-8") == rfc8785.dumps(value)


def test_canonical_json_numbers_as_ecmascript_prints_them():
    assert canonical_json({"b": 36.0, "a": [1e-7, 1e21, 1e16, 0.000001, -0.0, 4.2, 1.5e300]}) == \
        '{"a":[1e-7,1e+21,10000000000000000,0.000001,0,4.2,1.5e+300],"b":36}'
    assert canonical_json({"\ue000": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\ue000":1}'  # UTF-16 order


def test_input_sha256_is_over_jcs(audit_db, pack, now):
    state = {**load_document(STATE).data}
    state["vitals"] = {**state["vitals"], "map_mmhg": 58.0}
    with AuditLog.open(audit_db) as log:
        rec = log.append(pack, state, evaluate(pack, state, now=now), now=now, user="u")
    assert rec.input_sha256 == __import__("hashlib").sha256(rfc8785.dumps(state)).hexdigest()
    assert '"map_mmhg":58,' in rec.input_json


@pytest.mark.slow
def test_records_are_small_on_the_projects_scenarios(audit_db, pack):
    """The issue's target, measured as bench/audit.py does: the whole file a record (row, stored
    texts, indexes, the stored pack shared by all), each scenario recorded ten times."""
    from pressor.engine.authoring.scenarios import load_scenarios

    scenarios = load_scenarios([ROOT / "tests" / "scenarios"], pack)
    evaluated = [(s.state, evaluate(pack, s.state, now=s.now, include_draft=s.include_draft), s.now) for s in scenarios]
    with AuditLog.open(audit_db) as log:
        log._conn.execute("PRAGMA synchronous = OFF")  # the same file, without a disk sync per record
        for _ in range(10):
            for state, result, now in evaluated:
                log.append(pack, state, result, now=now, user="u")
        assert log.verify().ok
    AuditLog.open(audit_db).close()  # checkpointed: the WAL is in the file
    records = 10 * len(scenarios)
    # About 97 KB of canonical JSON a Result here (conditional advice and questions repeat the
    # rules' words): zlib took 8.8 KB of text a record; zstd against the pack takes 3.7 KB, 4.8 KB all included
    # under pack 2.0.0; 5.2 KB under 2.1.0, whose safety fixes leave more advice conditional (fluid overload,
    # evidence of shock), each with its question; 5.7 KB under 3.0.0, whose results also carry the plan, the
    # shown flags and the facts decided for any value (about 0.5 KB a record after compression); 6.1 KB once 3.0.0
    # added protocol v3's items 3-6 (five rules whose conditional advice waits on facts the scenarios leave out, the
    # dose's weight basis, the validation release): the budget is 6.5 KB.
    assert Path(audit_db).stat().st_size / records <= 6_500
    conn = sqlite3.connect(audit_db)
    assert conn.execute("SELECT COUNT(*) FROM records WHERE typeof(result_json) != 'blob' "
                        "OR substr(result_json, 1, 4) != x'28b52ffd'").fetchone()[0] == 0


def test_list_since_and_rule_use_indexes(audit_db):
    AuditLog.open(audit_db).close()
    conn = sqlite3.connect(audit_db)
    log = AuditLog.open(audit_db, create=False)
    queries = []
    moment = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
    for filters in ({"since": moment}, {"until": moment}, {"rule": "target.map-65"}, {"since": moment, "rule": "target.map-65"}):
        hint = log._time_hint(filters.get("since"), filters.get("until"), filters.get("rule"))
        for clause, args in log._clauses(filters.get("since"), filters.get("until"), filters.get("rule"), None, None, False):
            queries.append((f"{log._record_select()}{hint} WHERE {clause} ORDER BY seq DESC LIMIT 50", args))
            queries.append((f"SELECT COUNT(*) FROM records{hint} WHERE {clause}", args))
    for query, args in queries:
        plan = " ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + query, args))
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan or "PRIMARY KEY" in plan, plan
        assert "SCAN records" not in plan.replace("SCAN records USING", ""), plan
    log.close()


def test_list_filters_by_rule_in_migrated_and_new_records(audit_db, pack, now):
    state = load_document(STATE).data
    result = evaluate(pack, state, now=now)
    fired = result.to_dict()["recommendations"][0]["rule_id"]
    with AuditLog.open(audit_db) as log:
        for i in range(3):
            log.append(pack, state, result, now=now + timedelta(minutes=i), user="u")
        assert [r.seq for r in log.records(rule=fired)] == [1, 2, 3]
        assert [r.seq for r in log.records(rule=fired, since=now + timedelta(minutes=1))] == [2, 3]
        assert list(log.records(rule="no.such-rule")) == []


def test_list_json_streams_a_valid_array(audit_db):
    AuditLog.open(audit_db).close()
    assert json.loads(run("audit", "list", "--json").stdout) == []
    recommend()
    recommend()
    listing = run("audit", "list", "--json")
    assert [r["seq"] for r in json.loads(listing.stdout)] == [1, 2]


def test_progress_only_on_a_terminal(audit_db, monkeypatch):
    recommend()
    from pressor.cli import audit as audit_cli

    with audit_cli.progress_reporter("verify", False) as progress:  # CliRunner: not a TTY
        assert progress is None
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    with audit_cli.progress_reporter("verify", True) as progress:  # --json: never
        assert progress is None
    with audit_cli.progress_reporter("verify", False) as progress:
        assert callable(progress)


def test_a_compressed_text_edited_is_caught(audit_db, pack, now):
    state = load_document(STATE).data
    with AuditLog.open(audit_db) as log:
        for _ in range(3):
            log.append(pack, state, evaluate(pack, state, now=now), now=now, user="u")
        codec = PackCodec(log.stored_pack(pack.sha256)[2])  # what anyone holding the log can make
    conn = sqlite3.connect(audit_db, isolation_level=None)
    conn.execute("DROP TRIGGER records_no_update")
    text = json.loads(codec.decompress(conn.execute("SELECT result_json FROM records WHERE seq = 2").fetchone()[0]))
    text["recommendations"][0]["severity"] = "info"
    conn.execute("UPDATE records SET result_json = ? WHERE seq = 2", (codec.compress(canonical_json(text)),))
    conn.execute("UPDATE records SET input_json = ? WHERE seq = 3", (bytes(random.Random(1).randbytes(40)),))
    with AuditLog.open(audit_db, create=False) as log:
        outcome = log.verify()
    assert [p.seq for p in outcome.problems if p.seq] == [2, 3]
    assert "was edited" in outcome.problems[-2].reasons[0] or any("edited" in r for r in outcome.problems[-2].reasons)
    # format 6 finds it by the SHA-256 of the stored bytes, without decompressing (format 5: "not readable")
    assert any("does not match its stored_sha256" in r for r in outcome.problems[-1].reasons)


# --- issue 24 item 5 and issue 23 item 7: the log under damage, and the auditor's path -------------


def _fresh_log(path: Path, pack, now, count: int = 6) -> None:
    state = load_document(STATE).data
    result = evaluate(pack, state, now=now)
    with AuditLog.open(path) as log:
        for i in range(count):
            log.append(pack, state, result, now=now, user=f"u{i}")


def _damage(path: Path, pattern: str, rng: random.Random) -> None:
    """Random bytes in the file as a failing disk or a careless editor would leave them."""
    data = bytearray(path.read_bytes())
    if pattern == "truncated":
        del data[rng.randrange(len(data) // 3, len(data)):]
    elif pattern == "header":
        data[16:100] = rng.randbytes(84)
    elif pattern == "zero page":
        page = rng.randrange(1, len(data) // 1024)
        data[page * 1024:(page + 1) * 1024] = bytes(1024)
    else:  # "bytes N": N random bytes at a random place
        n = int(pattern.split()[1])
        at = rng.randrange(0, len(data) - n)
        data[at:at + n] = rng.randbytes(n)
    path.write_bytes(bytes(data))


DAMAGE = ["bytes 1", "bytes 16", "bytes 256", "bytes 4096", "truncated", "header", "zero page"]


@pytest.mark.fuzz
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("pattern", DAMAGE)
def test_a_damaged_log_is_reported_never_a_traceback(tmp_path, pack, now, pattern, seed):
    path = tmp_path / "damaged.db"
    _fresh_log(path, pack, now)
    _damage(path, pattern, random.Random(f"{pattern}{seed}"))
    for args, allowed in ((["audit", "verify"], {0, 1}), (["audit", "verify", "--json"], {0, 1}),
                          (["audit", "list", "--json"], {0, 1}), (["audit", "show", "1"], {0, 1}),
                          (["audit", "export"], {0, 1}), (["audit", "replay", "1"], {0, 1}),
                          (["recommend", STATE, "--now", NOW], {0, 3})):
        result = CliRunner().invoke(cli, [*args, "--audit-db", str(path)])
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
        assert result.exit_code in allowed, (args, result.exit_code, result.stderr[-500:])
        if args[0] == "recommend" and result.exit_code == 3:
            assert "NOT recorded" in result.stderr


def test_verify_names_the_first_bad_record_of_a_damaged_log(tmp_path, pack, now):
    path = tmp_path / "damaged.db"
    _fresh_log(path, pack, now)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER records_no_update")
    conn.execute("UPDATE records SET result_json = ? WHERE seq = 4", (bytes(random.Random(4).randbytes(300)),))
    conn.close()
    result = run("audit", "verify", "--audit-db", str(path))
    assert result.exit_code == exit_codes.INVALID
    assert "BROKEN: first bad record #4" in result.stderr


def test_a_stored_pack_damaged_into_bytes_that_are_no_text_is_refused_not_a_crash(tmp_path, pack, now):
    path = tmp_path / "damaged.db"
    _fresh_log(path, pack, now, count=2)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER packs_no_update")
    files = conn.execute("SELECT files_json FROM packs").fetchone()[0]
    conn.execute("UPDATE packs SET files_json = CAST(? AS BLOB)", (files.encode()[:500] + b"\xff\xfe" + files.encode()[502:],))
    conn.close()
    result = run("recommend", STATE, "--now", NOW, "--audit-db", str(path))
    assert result.exit_code == exit_codes.NOT_RECORDED and "NOT recorded" in result.stderr
    first = sqlite3.connect(path).execute("SELECT id FROM records WHERE seq = 1").fetchone()[0]
    result = run("audit", "show", first, "--audit-db", str(path))
    assert result.exit_code == exit_codes.INVALID and "cannot be read" in result.stderr


@pytest.mark.parametrize("path", ["x" * 5000, "a/" * 2000 + "x.db"])
def test_an_unusable_audit_path_is_a_message(path):
    result = run("audit", "list", "--audit-db", path)
    assert result.exit_code == exit_codes.INVALID and len(result.stderr) < 600, result.stderr[:600]
    result = run("recommend", STATE, "--now", NOW, "--audit-db", path)
    assert result.exit_code == exit_codes.NOT_RECORDED and "NOT recorded" in result.stderr, result.stderr[-600:]


def test_recommend_records_before_it_shows(audit_db, monkeypatch):
    from pressor.cli import recommend as recommend_cli

    seen = []

    def show(*args, **kwargs):  # what a process killed right after printing would have left in the log
        with AuditLog.open(audit_db, create=False) as log:
            seen.append(log.head()[0])

    monkeypatch.setattr(recommend_cli, "show", show)
    assert recommend().exit_code == 0
    assert recommend().exit_code == 0
    assert seen == [1, 2]


def test_recommend_refuses_to_extend_a_broken_chain(audit_db, pack, now):
    _fresh_log(audit_db, pack, now, count=3)
    conn = sqlite3.connect(audit_db, isolation_level=None)
    conn.execute("DROP TRIGGER records_no_update")
    conn.execute("UPDATE records SET user = 'mallory' WHERE seq = 3")
    conn.close()
    result = recommend()
    assert result.exit_code == exit_codes.NOT_RECORDED
    assert "chain is broken at its last record #3" in result.stderr and "pressor audit verify" in result.stderr
    assert "advice" not in result.stdout.lower() or True  # the advice is still shown (on stderr), with the warning
    assert "NOT recorded" in result.stderr
    with AuditLog.open(audit_db, create=False) as log:
        assert log.head()[0] == 3
    assert recommend("--require-audit").exit_code == exit_codes.INVALID


def test_show_and_replay_warn_when_the_chain_is_broken_at_or_before_the_record(audit_db, pack, now):
    _fresh_log(audit_db, pack, now, count=4)
    with AuditLog.open(audit_db, create=False) as log:
        ids = [r.id for r in log.records()]
    conn = sqlite3.connect(audit_db, isolation_level=None)
    conn.execute("DROP TRIGGER records_no_update")
    conn.execute("UPDATE records SET user = 'mallory' WHERE seq = 2")
    conn.close()
    assert run("audit", "show", ids[0]).exit_code == 0  # before the break: vouched for
    for args in (["audit", "show", ids[2]], ["audit", "replay", ids[2]], ["audit", "show", ids[1]]):
        result = run(*args)
        assert result.exit_code == exit_codes.INVALID, args
        assert "chain is broken at or before this record" in result.stderr and "at #2" in result.stderr
    shown = run("audit", "show", ids[3], "--json")
    assert json.loads(shown.stdout)["chain"]["first_bad"]["seq"] == 2
    replayed = run("audit", "replay", ids[0], "--json")
    chain = json.loads(replayed.stdout)["chain"]
    assert replayed.exit_code == 0 and (chain["ok"], chain["checked_up_to"], chain["first_bad"]) == (True, 1, None)


@pytest.mark.parametrize("args", [["audit", "export"], ["audit", "export", "--format", "csv"], ["audit", "list", "--json"],
                                  ["audit", "feedback", "--json"], ["audit", "show", "1", "--json"],
                                  ["recommend", STATE, "--json", "--no-audit"]])
def test_every_command_survives_a_closed_pipe(tmp_path, pack, now, args):
    import subprocess
    import sys

    path = tmp_path / "log.db"
    _fresh_log(path, pack, now, count=3)  # each exported row ~100 KB: more than a pipe holds
    pressor = str(Path(sys.executable).parent / "pressor")
    if args[0] == "audit":
        args = [*args, "--audit-db", str(path)]
    proc = subprocess.Popen([pressor, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # the reader went away, as `| head -1` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "Exception ignored" not in err, err


@pytest.mark.skipif(os.geteuid() != 0, reason="filling a disk needs a small file system of its own (mount needs root)")
def test_readers_open_a_log_on_a_full_disk(tmp_path, pack, now):
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        path = mount / "audit.db"
        _fresh_log(path, pack, now, count=3)
        # A writer killed before its checkpoint leaves records in the -wal; the disk then fills up.
        script = (f"import os, sqlite3; c = sqlite3.connect({str(path)!r}, isolation_level=None); "
                  "c.execute('PRAGMA wal_autocheckpoint = 0'); c.execute('CREATE TEMP TABLE t (x)'); "
                  "c.execute('BEGIN IMMEDIATE'); c.execute(\"INSERT INTO meta VALUES ('x' || random(), 'y')\"); "
                  "c.execute('COMMIT'); os._exit(0)")
        import sys
        subprocess.run([sys.executable, "-c", script], check=True)
        for shm in mount.glob("*-shm"):
            shm.unlink()
        with open(mount / "fill", "wb", buffering=0) as fill:  # unbuffered: closing it flushes nothing that could fail
            try:
                while True:
                    fill.write(bytes(64 * 1024))
                    fill.flush()
            except OSError:
                pass
        verify = run("audit", "verify", "--audit-db", str(path))
        listed = run("audit", "list", "--json", "--audit-db", str(path))
        assert listed.exit_code == 0 and len(json.loads(listed.stdout)) == 3
        assert "write-ahead file" in listed.stderr and "Free space" in listed.stderr
        assert verify.exit_code == exit_codes.INVALID and "write-ahead file" in verify.stderr  # not all of it was read
        result = recommend("--audit-db", str(path))
        assert result.exit_code == exit_codes.NOT_RECORDED and "NOT recorded" in result.stderr
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)



def test_csv_export_neutralises_formulas_and_stays_verifiable(audit_db, pack, now):
    import csv
    import hashlib
    import io

    state = load_document(STATE).data
    names = ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "'quoted", "plain"]
    with AuditLog.open(audit_db) as log:
        for name in names:
            log.append(pack, state, evaluate(pack, state, now=now), now=now, user=name)
    out = run("audit", "export", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["user"] for r in rows] == ["'=HYPERLINK(\"http://x\")", "'+1", "'-2", "'@SUM(A1)", "''quoted", "plain"]
    for row in rows:  # the documented recipe: one leading apostrophe off, then the JSON lines recipe
        body = {k: (v[1:] if v.startswith("'") else v) for k, v in row.items() if k != "record_hash"}
        body["seq"] = int(body["seq"])
        body["include_draft"] = body["include_draft"] == "True"
        for optional in ("hook_instance", "patient", "profile_sha256", "suppressed_json"):  # empty: absent from the record
            if not body.get(optional):
                body.pop(optional, None)
        assert body["record_format"] == "6"  # format 6: every field but the texts, which their SHA-256 fields cover
        body["record_format"] = 6
        assert hashlib.sha256(body.pop("result_json").encode()).hexdigest() == body["result_sha256"]
        assert hashlib.sha256(body.pop("input_json").encode()).hexdigest() == body["input_sha256"]
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode()).hexdigest() == row["record_hash"]
