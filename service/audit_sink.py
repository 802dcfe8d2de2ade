"""The audit log a service worker writes to: connections shared by all its requests; each call's records prepared
(serialised and compressed) on the calling thread, and one thread that commits what is prepared together (group
commit)."""
from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pressor.engine.audit import AuditLog
from pressor.engine.errors import AuditError
from pressor.engine.model import RulePack

log = logging.getLogger("pressor.serve")


class AuditSink:
    """The worker's connections to the audit log, shared by all its requests, and its writer thread.

    Opened in the lifespan; if that fails, each later write tries again, so a log that becomes writable is used
    without a restart. A call hands its results to :meth:`submit`, which queues them (their place in the chain is
    taken there) and prepares its records on the calling thread (serialises and compresses them: the CPU of a
    record), on a reading connection the callers share, :attr:`PREPARING` calls at a time, in queue order; then it
    answers the records' ids and a future. One thread commits the prepared calls at the head of the queue in one
    transaction (group commit: one fsync for every call waiting, however many), in queue order, once they are at
    least half of those queued, so that the calls behind a group prepare during its fsync; then it resolves each
    call's future. A call that must not answer before its record is durable
    (``require_audit``, or ``audit_wait``, the default) awaits its future, which is resolved only after the commit;
    so a crash loses no acknowledged record. Records are chained in the order of :meth:`submit`, and feedback goes
    through the same queue (after the records it may refer to). Across worker processes SQLite's WAL and ``BEGIN
    IMMEDIATE`` (or PostgreSQL's lock) keep one valid chain.
    """

    #: Records of at most this many calls go into one transaction.
    MAX_BATCH = 256
    #: Calls preparing their records at once; the others wait their turn, in queue order. Two may overlap one's zstd
    #: and hashlib (which release the GIL) with the other's Python: on the 2 shared cores measured they were faster at
    #: load 3-4.3 but slower at 4.5 and over, with more CPU a record, so one (docs/performance.md).
    PREPARING = 1

    def __init__(self, path: str | os.PathLike[str], input_mode: str) -> None:
        self.path = path
        self.input_mode = input_mode
        self._log: AuditLog | None = None  # the committing thread's
        self._reader: AuditLog | None = None  # the preparing callers' (is the pack stored, its dictionary)
        self._lock = threading.Lock()  # the committing connection
        self._reader_lock = threading.Lock()  # opening the reading one
        self._queue: deque[_AuditJob] = deque()  # in the order of submit, until committed
        self._preparing = 0  # calls preparing now (at most PREPARING)
        self._turns: deque[threading.Lock] = deque()  # calls waiting to prepare, in queue order (each holds its lock)
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        #: False after a write failed (until one succeeds): a lenient call then waits to learn its fate.
        self.healthy = True

    def open(self) -> None:
        """Open the log now; an :class:`AuditError` is logged, not raised (the next write retries)."""
        try:
            with self._lock:
                self._opened()
        except AuditError as exc:
            self.healthy = False
            log.error("the audit log cannot be opened; the next call tries again: %s", exc)

    def _opened(self) -> AuditLog:
        if self._log is None:
            self._log = AuditLog.open(self.path)
        return self._log

    def close(self) -> None:
        """Write what is queued, stop the writer thread and close the connections (worker shutdown)."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None:  # it commits everything queued (waiting for calls still preparing) before it stops
            thread.join()
        with self._lock:
            for audit in (self._log, self._reader):
                if audit is not None:
                    audit.close()
            self._log = self._reader = None

    def submit(self, pack: RulePack, pairs: list[tuple[Any, Any]], *, now: datetime, user: str, hook_instance: str,
               patient: str | None = None, dicts: list[dict[str, Any]] | None = None,
               suppressed: list[dict[str, Any]] | None = None) -> tuple[list[str], Future]:
        """Queue one record per ``(state, result)`` (``dicts``: the results' ``to_dict()``, when the caller has
        them) and prepare them on this thread; their ids, and a future resolved (with the ids) once they are
        committed, or failed with an :class:`AuditError`. ``suppressed``: the call's cards not shown again
        (repeat window), kept in its first record (format 6)."""
        ids = [str(uuid.uuid4()) for _ in pairs]
        job = _AuditJob("records", (pack, pairs, dicts, ids, now, user, hook_instance, patient, suppressed), Future())
        if self._enqueue(job):
            try:
                job.prepared = self._prepare(job)
            finally:  # never leave the queue waiting for this call
                with self._cv:
                    job.ready = True
                    if self._turns:
                        self._turns.popleft().release()
                    else:
                        self._preparing -= 1
                    if self._takeable():
                        self._cv.notify()
        return ids, job.future

    def record(self, pack: RulePack, pairs: list[tuple[Any, Any]], *, now: datetime, user: str,
               hook_instance: str, patient: str | None = None) -> list[str]:
        """One record per evaluated ``(state, result)``, committed; their ids. Raises :class:`AuditError`."""
        return self.submit(pack, pairs, now=now, user=user, hook_instance=hook_instance, patient=patient)[1].result()

    def record_feedback(self, items: list[dict[str, Any]], *, service: str, now: datetime, user: str) -> list[str]:
        """One feedback entry per item, all or none, committed; their ids. Raises :class:`AuditError`."""
        job = _AuditJob("feedback", (items, service, now, user), Future(), ready=True)
        self._enqueue(job)
        return job.future.result()

    def _enqueue(self, job: "_AuditJob") -> bool:
        """Queue ``job``; False (its future failed) when the sink is closing. A call of records then waits its turn to
        prepare (:attr:`PREPARING`)."""
        turn = None
        with self._cv:
            if self._closing:
                job.future.set_exception(AuditError.single("the service is shutting down: nothing more is recorded"))
                return False
            self._queue.append(job)
            if not job.ready:
                if self._preparing < self.PREPARING:
                    self._preparing += 1
                else:
                    turn = threading.Lock()
                    turn.acquire()
                    self._turns.append(turn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._commit_run, name="pressor-audit-writer", daemon=True)
                self._thread.start()
            if job.ready and self._takeable():
                self._cv.notify()
        if turn is not None:
            turn.acquire()  # released by the call ahead as it finishes preparing: its place is this call's
        return True

    def _prepare(self, job: "_AuditJob") -> list[Any] | None:
        """The call's records serialised and compressed; a call whose records cannot be made is failed here. Where
        the store failed (the reading connection, say, that the database cut), None: the committing thread then
        prepares the call on its own connection, so that its failure, and its reconnection, are those of the commit."""
        try:
            with self._reader_lock:
                if self._reader is None:
                    self._reader = AuditLog.open(self.path)
                audit = self._reader
            return self._records(audit, job)
        except AuditError:
            return None
        except Exception as exc:
            job.future.set_exception(AuditError.single(f"cannot make the audit record: {exc!r}"))
            return None

    def _records(self, audit: AuditLog, job: "_AuditJob") -> list[Any]:
        """The prepared records of one call (:meth:`.AuditLog.prepare`)."""
        pack, pairs, dicts, ids, now, user, hook_instance, patient, suppressed = job.args
        return [audit.prepare(pack, state, result, now=now, user=user, input_mode=self.input_mode,
                              hook_instance=hook_instance, patient=patient, record_id=ids[i],
                              result_dict=dicts[i] if dicts else None, suppressed=suppressed if i == 0 else None)
                for i, (state, result) in enumerate(pairs)]

    def _takeable(self) -> int:
        """How many calls the writer may take now (``_cv`` held): the prepared ones at the head of the queue, once they
        are at least half of it (or :attr:`MAX_BATCH`, or the sink is closing), so that a group is committed while the
        calls behind it prepare, and a long queue goes in few groups; 0 until then."""
        ready = 0
        for job in self._queue:
            if not job.ready or ready == self.MAX_BATCH:
                break
            ready += 1
        return ready if ready and (ready * 2 >= len(self._queue) or ready == self.MAX_BATCH or self._closing) else 0

    def _take(self) -> list["_AuditJob"] | None:
        """The calls to commit next, once there are any (:meth:`_takeable`); None once the sink is closing and the
        queue is empty."""
        with self._cv:
            while not (count := self._takeable()) and not (self._closing and not self._queue):
                self._cv.wait()
            return [self._queue.popleft() for _ in range(count)] or None

    def _commit_run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._write(batch)
            except BaseException as exc:  # never leave a caller waiting
                _fail(batch, exc)

    def _write(self, batch: list["_AuditJob"]) -> None:
        """Records of consecutive calls in one transaction; feedback in its own, in queue order."""
        with self._lock:
            try:
                audit = self._opened()
            except AuditError as exc:
                self.healthy = False
                _fail(batch, exc)
                return
            group: list[tuple[_AuditJob, list[Any]]] = []
            for job in batch:
                if job.future.done():  # failed as it was prepared
                    continue
                if job.kind == "feedback":
                    self._commit(audit, group)
                    group = []
                    items, service, now, user = job.args
                    try:
                        job.future.set_result([e.id for e in audit.append_feedback(items, service=service, now=now, user=user)])
                    except AuditError as exc:
                        job.future.set_exception(exc)
                    continue
                prepared = job.prepared
                if prepared is None:
                    try:
                        prepared = self._records(audit, job)
                    except Exception as exc:  # this call's records cannot be made: the others go on
                        job.future.set_exception(exc if isinstance(exc, AuditError) else
                                                 AuditError.single(f"cannot make the audit record: {exc!r}"))
                        continue
                group.append((job, prepared))
            self._commit(audit, group)

    def _commit(self, audit: AuditLog, group: list[tuple["_AuditJob", list[Any]]]) -> None:
        if not group:
            return
        try:
            audit.append_prepared([p for _, prepared in group for p in prepared])
        except AuditError as exc:
            if len(group) == 1:
                self.healthy = False
                group[0][0].future.set_exception(exc)
                return
            for one in group:  # one call's failure must not take the others with it
                self._commit(audit, [one])
            return
        self.healthy = True
        for job, _ in group:
            job.future.set_result(job.args[3])


def _fail(jobs: list["_AuditJob"], exc: BaseException) -> None:
    """Fail every call of ``jobs`` not answered yet with ``exc`` (an :class:`AuditError` saying so if it is not one)."""
    failure = exc if isinstance(exc, AuditError) else AuditError.single(f"the audit writer failed: {exc!r}")
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(failure)


@dataclass
class _AuditJob:
    kind: str  # "records" | "feedback"
    args: tuple[Any, ...]
    future: Future
    ready: bool = False  # prepared (or failed, or feedback): the writer may take it
    prepared: list[Any] | None = None  # None when ready: the writer prepares it on its own connection
