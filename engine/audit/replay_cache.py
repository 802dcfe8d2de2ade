"""Token replay detection: the ``jti`` of every CDS Hooks token accepted, until it expires.

One narrow interface, :meth:`ReplayCache.seen`, atomic in every implementation: in-process (one
worker), SQLite (the workers of one machine) and PostgreSQL (several machines behind a load
balancer, sharing the audit database). :func:`open_replay_cache` picks one from a target.
"""
from __future__ import annotations

import heapq
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from ..errors import AuditError
from .store import BUSY_TIMEOUT_S, is_url

#: Expired ids are swept at most this often (seconds).
SWEEP_EVERY_S = 60.0


class ReplayCache(Protocol):
    """Token ids seen and not yet expired."""

    def seen(self, jti: str, expires_at: float) -> bool:
        """True if ``jti`` was already recorded (a replay); otherwise record it until ``expires_at``
        (seconds since the epoch) and return False. Atomic: of two callers racing with one id,
        exactly one gets False."""
        ...

    def close(self) -> None:
        """Release what it holds."""
        ...


class MemoryReplayCache:
    """Per process: what one worker has seen (the default)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str]] = []  # a heap, to forget in order of expiry
        self._lock = threading.Lock()

    def seen(self, jti: str, expires_at: float) -> bool:
        with self._lock:
            now = time.time()
            while self._expiry and self._expiry[0][0] < now:
                self._seen.discard(heapq.heappop(self._expiry)[1])
            if jti in self._seen:
                return True
            self._seen.add(jti)
            heapq.heappush(self._expiry, (expires_at, jti))
            return False

    def close(self) -> None:
        pass


class _SqlReplayCache:
    """Token ids in a ``token_ids`` table of a database connection (``param``: the driver's placeholder)."""

    param = "?"

    #: A query whose one value says whether ``token_ids`` exists (None: CREATE ... IF NOT EXISTS is enough).
    exists_sql: str | None = None

    def __init__(self, conn: Any, real: str) -> None:
        self._conn_now = conn
        # Asked first: a least-privilege role (docs/deploy.md) may use the table but not create one.
        if self.exists_sql is None or not conn.execute(self.exists_sql).fetchone()[0]:
            conn.execute(f"CREATE TABLE IF NOT EXISTS token_ids (jti TEXT PRIMARY KEY, expires_at {real} NOT NULL)")
        self._lock = threading.Lock()
        self._swept = 0.0

    @property
    def _conn(self) -> Any:
        return self._conn_now

    def seen(self, jti: str, expires_at: float) -> bool:
        p = self.param
        with self._lock:
            now = time.time()
            if now - self._swept > SWEEP_EVERY_S:
                self._conn.execute(f"DELETE FROM token_ids WHERE expires_at < {p}", (now,))
                self._swept = now
            # An expired row with this id is replaced; a live one is kept, and the insert changes nothing.
            cur = self._conn.execute(
                f"INSERT INTO token_ids (jti, expires_at) VALUES ({p}, {p}) "
                f"ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at WHERE token_ids.expires_at < {p}",
                (jti, expires_at, now))
            return cur.rowcount == 0

    def close(self) -> None:
        self._conn_now.close()


class SqliteReplayCache(_SqlReplayCache):
    """In a SQLite file: shared by the worker processes of one machine."""

    def __init__(self, path: str | Path) -> None:
        import sqlite3

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        super().__init__(conn, "REAL")


class PostgresReplayCache(_SqlReplayCache):
    """In PostgreSQL: shared by every instance that uses the same database."""

    param = "%s"
    exists_sql = "SELECT to_regclass('token_ids') IS NOT NULL"

    def __init__(self, url: str) -> None:
        from .store_postgres import Reconnecting, connect

        conn = connect(url, readonly=False)
        super().__init__(conn, "DOUBLE PRECISION")
        self._link = Reconnecting(url, conn, readonly=False)  # a database restart is survived (issue 24)

    @property
    def _conn(self) -> Any:
        return self._link.get()

    def close(self) -> None:
        self._link.close()


def open_replay_cache(target: str | Path | None) -> Any:
    """``None`` or "memory": in-process; a ``postgresql://`` URL: PostgreSQL; else a SQLite file.
    Raises :class:`AuditError` when it cannot be opened."""
    if target is None or str(target) == "memory":
        return MemoryReplayCache()
    try:
        if is_url(str(target)):
            return PostgresReplayCache(str(target))
        return SqliteReplayCache(target)
    except AuditError:
        raise
    except Exception as exc:  # noqa: BLE001 - driver errors of either store, reported with the target
        from .store_postgres import redacted

        raise AuditError.single(f"the token replay cache cannot be opened ({exc})", file=redacted(str(target)),
                                suggestion="check replay_cache in the service configuration") from exc
