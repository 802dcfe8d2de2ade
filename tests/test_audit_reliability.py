"""The audit log under concurrent writers and writers killed mid-append.

Children are forked (they inherit the loaded pack and a ready Result) and call the
library directly, not the CLI, so that thousands of appends stay fast.
"""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pressor.engine.audit import AuditLog
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import load_document

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FORK = multiprocessing.get_context("fork")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def evaluated(pack):
    state = load_document(EXAMPLES / "septic-shock-adult.yaml").data
    return state, evaluate(pack, state, now=NOW), NOW


def _writer(path, pack, state, result, now, user, count, start):
    start.wait()
    with AuditLog.open(path) as log:
        for _ in range(count):
            log.append(pack, state, result, now=now, user=user)


def _endless_writer(path, pack, state, result, now, ready):
    with AuditLog.open(path) as log:
        log.append(pack, state, result, now=now, user="doomed")
        ready.send(True)
        while True:
            log.append(pack, state, result, now=now, user="doomed")


@pytest.mark.slow
def test_two_processes_appending_together_keep_one_valid_chain(audit_db, pack, evaluated):
    state, result, now = evaluated
    start = FORK.Event()
    # Both start on a database that does not exist yet: creating it is part of the race.
    writers = [FORK.Process(target=_writer, args=(audit_db, pack, state, result, now, f"w{i}", 1000, start)) for i in range(2)]
    for w in writers:
        w.start()
    start.set()
    for w in writers:
        w.join(timeout=120)
        assert w.exitcode == 0
    with AuditLog.open(audit_db, create=False) as log:
        outcome = log.verify()
        assert outcome.ok, outcome.problems
        assert outcome.records == 2000 and outcome.head_seq == 2000
        users = [r.user for r in log.records()]
    assert users.count("w0") == users.count("w1") == 1000


def test_a_writer_killed_mid_append_leaves_a_valid_chain(audit_db, pack, evaluated):
    state, result, now = evaluated
    rng = random.Random(20261124)
    survivors = 0
    for _ in range(20):
        receive, send = FORK.Pipe(duplex=False)
        child = FORK.Process(target=_endless_writer, args=(audit_db, pack, state, result, now, send))
        child.start()
        assert receive.poll(30), "the writer never started"
        # Up to 20 ms: a dozen or so appends (about 1 ms each), then the kill lands inside one or between two.
        time.sleep(rng.uniform(0.0, 0.02))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        with AuditLog.open(audit_db) as log:  # opens for writing: the next writer must be able to carry on
            outcome = log.verify()
            assert outcome.ok, outcome.problems
            assert outcome.records > survivors
            survivors = outcome.records
    conn = sqlite3.connect(audit_db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


class _StopBeforeCommit:
    """A connection that, at COMMIT, tells the parent and waits to be killed."""

    def __init__(self, conn, ready):
        self._conn, self._ready = conn, ready

    def execute(self, sql, *args):
        if sql == "COMMIT":
            self._ready.send(True)
            time.sleep(60)
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def _writer_stuck_in_transaction(path, pack, state, result, now, ready):
    with AuditLog.open(path) as log:
        log._conn = _StopBeforeCommit(log._conn, ready)
        log.append(pack, state, result, now=now, user="uncommitted")


def test_a_writer_killed_after_insert_before_commit_leaves_no_record(audit_db, pack, evaluated):
    state, result, now = evaluated
    with AuditLog.open(audit_db) as log:
        log.append(pack, state, result, now=now, user="kept")
    receive, send = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_writer_stuck_in_transaction, args=(audit_db, pack, state, result, now, send))
    child.start()
    assert receive.poll(30), "the writer never reached COMMIT"
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    with AuditLog.open(audit_db) as log:
        outcome = log.verify()
        assert outcome.ok and outcome.records == 1
        assert [r.user for r in log.records()] == ["kept"]
        log.append(pack, state, result, now=now, user="next")  # the write lock died with the writer
        assert log.verify().records == 2


def _opening_writer(path, pack, state, result, now, start):
    start.wait()
    for _ in range(5):
        with AuditLog.open(path) as log:  # open, append, close: what each `pressor recommend` does
            log.append(pack, state, result, now=now, user=str(os.getpid()))


def test_six_processes_creating_the_log_at_once(tmp_path, pack, evaluated):
    state, result, now = evaluated
    for attempt in range(3):
        path = tmp_path / f"race{attempt}" / "audit.db"
        start = FORK.Event()
        writers = [FORK.Process(target=_opening_writer, args=(path, pack, state, result, now, start)) for _ in range(6)]
        for w in writers:
            w.start()
        start.set()
        for w in writers:
            w.join(timeout=120)
        assert [w.exitcode for w in writers] == [0] * 6
        with AuditLog.open(path, create=False) as log:
            outcome = log.verify()
            assert outcome.ok and outcome.records == 30
