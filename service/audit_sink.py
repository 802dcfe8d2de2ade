"""The audit log a service worker writes to: connections shared by all its requests, one thread that prepares
records (serialises and compresses them) and one that commits what is prepared together (group commit)."""
from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from pressor.engine.audit import AuditLog
from pressor.engine.errors import AuditError
from pressor.engine.model import RulePack

log = logging.getLogger("pressor.serve")


class AuditSink:
    """The worker's connections to the audit log, shared by all its requests, and its two writer threads.

    Opened in the lifespan; if that fails, each later write tries again, so a log that
    becomes writable is used without a restart. Records are written off the request path: a call hands its
    results to :meth:`submit` and gets the records' ids and a future at once. One thread prepares what has
    queued up (serialises and compresses it: the CPU of a record), on a connection of its own that only reads;
    another chains what is prepared and commits it in one transaction (group commit: one fsync for every call
    waiting, however many), then resolves each call's future. The two overlap: records are prepared while the
    previous group's fsync is under way. A call that must not answer before its record is durable
    (``require_audit``, or ``audit_wait``, the default) awaits its future, which is resolved only after the
    commit; so a crash loses no acknowledged record. Records are chained in the order of :meth:`submit`, and
    feedback goes through the same queue (after the records it may refer to). Across worker processes SQLite's
    WAL and ``BEGIN IMMEDIATE`` (or PostgreSQL's lock) keep one valid chain.
    """

    #: Records of at most this many calls go into one transaction.
    MAX_BATCH = 256

    def __init__(self, path: str | os.PathLike[str], input_mode: str) -> None:
        self.path = path
        self.input_mode = input_mode
        self._log: AuditLog | None = None  # the committing thread's
        self._reader: AuditLog | None = None  # the preparing thread's (is the pack stored, its dictionary)
        self._lock = threading.Lock()  # the committing connection
        self._queue: deque[_AuditJob] = deque()
        self._cv = threading.Condition()
        self._prepared: deque[tuple[_AuditJob, list[Any] | None]] = deque()
        self._prepared_cv = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._drained = False  # the preparing thread has handed on everything and stopped
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
        """Write what is queued, stop the writer threads and close the connections (worker shutdown)."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
            threads = list(self._threads)
        for thread in threads:  # the preparing thread first: it hands everything on before it stops
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
        them); their ids now, and a future resolved (with the ids) once they are committed, or failed with an
        :class:`AuditError`. ``suppressed``: the call's cards not shown again (repeat window), kept in its first
        record (format 6)."""
        ids = [str(uuid.uuid4()) for _ in pairs]
        job = _AuditJob("records", (pack, pairs, dicts, ids, now, user, hook_instance, patient, suppressed), Future())
        self._enqueue(job)
        return ids, job.future

    def record(self, pack: RulePack, pairs: list[tuple[Any, Any]], *, now: datetime, user: str,
               hook_instance: str, patient: str | None = None) -> list[str]:
        """One record per evaluated ``(state, result)``, committed; their ids. Raises :class:`AuditError`."""
        return self.submit(pack, pairs, now=now, user=user, hook_instance=hook_instance, patient=patient)[1].result()

    def record_feedback(self, items: list[dict[str, Any]], *, service: str, now: datetime, user: str) -> list[str]:
        """One feedback entry per item, all or none, committed; their ids. Raises :class:`AuditError`."""
        job = _AuditJob("feedback", (items, service, now, user), Future())
        self._enqueue(job)
        return job.future.result()

    def _enqueue(self, job: "_AuditJob") -> None:
        with self._cv:
            if self._closing:
                job.future.set_exception(AuditError.single("the service is shutting down: nothing more is recorded"))
                return
            self._queue.append(job)
            if not self._threads:
                self._threads = [threading.Thread(target=self._prepare_run, name="pressor-audit-prepare", daemon=True),
                                 threading.Thread(target=self._commit_run, name="pressor-audit-writer", daemon=True)]
                for thread in self._threads:
                    thread.start()
            self._cv.notify()

    def _prepare_run(self) -> None:
        try:
            while True:
                jobs = self._take(self._cv, self._queue, lambda: self._closing)
                if jobs is None:
                    return
                try:
                    ready = self._prepare(jobs)
                except BaseException as exc:  # never leave a caller waiting
                    _fail(jobs, exc)
                    continue
                with self._prepared_cv:
                    self._prepared.extend(ready)
                    self._prepared_cv.notify()
        finally:
            with self._prepared_cv:
                self._drained = True
                self._prepared_cv.notify()

    def _prepare(self, jobs: list["_AuditJob"]) -> list[tuple["_AuditJob", list[Any] | None]]:
        """Each call's records serialised and compressed (feedback passes as it is). A call whose records cannot be
        made is failed here, and the others go on; where the store failed (its own connection, say, that the
        database cut), the call is left (None) for the committing thread to prepare on its connection, as one
        thread did before: its failure, and its reconnection, are then the same as those of the commit."""
        try:
            if self._reader is None:
                self._reader = AuditLog.open(self.path)
            audit: AuditLog | None = self._reader
        except AuditError:
            audit = None
        ready: list[tuple[_AuditJob, list[Any] | None]] = []
        for job in jobs:
            try:
                ready.append((job, [] if job.kind == "feedback" else None if audit is None else self._records(audit, job)))
            except AuditError:
                ready.append((job, None))
            except Exception as exc:
                job.future.set_exception(AuditError.single(f"cannot make the audit record: {exc!r}"))
        return ready

    def _records(self, audit: AuditLog, job: "_AuditJob") -> list[Any]:
        """The prepared records of one call (:meth:`.AuditLog.prepare`)."""
        pack, pairs, dicts, ids, now, user, hook_instance, patient, suppressed = job.args
        return [audit.prepare(pack, state, result, now=now, user=user, input_mode=self.input_mode,
                              hook_instance=hook_instance, patient=patient, record_id=ids[i],
                              result_dict=dicts[i] if dicts else None, suppressed=suppressed if i == 0 else None)
                for i, (state, result) in enumerate(pairs)]

    def _take(self, cv: threading.Condition, queue: deque, finished: Callable[[], bool]) -> list[Any] | None:
        """Up to :attr:`MAX_BATCH` items from ``queue`` once it has any, or None when it is empty and ``finished()``."""
        with cv:
            while not queue and not finished():
                cv.wait()
            if not queue:
                return None
            return [queue.popleft() for _ in range(min(len(queue), self.MAX_BATCH))]

    def _commit_run(self) -> None:
        while True:
            batch = self._take(self._prepared_cv, self._prepared, lambda: self._drained)
            if batch is None:
                return
            try:
                self._write(batch)
            except BaseException as exc:  # never leave a caller waiting
                _fail([job for job, _ in batch], exc)

    def _write(self, batch: list[tuple["_AuditJob", list[Any] | None]]) -> None:
        """Records of consecutive calls in one transaction; feedback in its own, in queue order."""
        with self._lock:
            try:
                audit = self._opened()
            except AuditError as exc:
                self.healthy = False
                for job, _ in batch:
                    job.future.set_exception(exc)
                return
            group: list[tuple[_AuditJob, list[Any]]] = []
            for job, prepared in batch:
                if job.kind == "feedback":
                    self._commit(audit, group)
                    group = []
                    items, service, now, user = job.args
                    try:
                        job.future.set_result([e.id for e in audit.append_feedback(items, service=service, now=now, user=user)])
                    except AuditError as exc:
                        job.future.set_exception(exc)
                    continue
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
