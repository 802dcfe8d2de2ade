"""Cards that do not repeat (issue 18, item 5): an unchanged plan item is not shown again to the same patient
within a site-set window.

Each card of the plan carries ``extension.pressor.repeat_key`` (which plan item, ban or question it is) and
``signature`` (its action and dose: a changed dose or action is a new card; the values that fired it are not
part of it). :class:`RepeatWindow` decides which cards of a call were shown to the patient within the window
(critical cards: ``critical_s``, default 1 h; others: ``others_s``, default 4 h), and remembers what was shown.
The last-shown state lives where the token replay cache lives (``replay_cache``: this process, a SQLite file
or PostgreSQL), one row per patient and card key, swept past the longest window and bounded by ``max_entries``.
Patients are kept as a SHA-256 of their reference, not by id.

A call turns it off with the request extension ``{"extension": {"pressor": {"show_repeats": true}}}``
(CDS Hooks 2.0 allows ``extension`` on the request); a site with ``repeat_window: {enabled: false}``.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pressor.engine.audit.store import BUSY_TIMEOUT_S, is_url
from pressor.engine.errors import AuditError

#: Swept at most this often (seconds).
SWEEP_EVERY_S = 60.0


@dataclass(frozen=True)
class RepeatSettings:
    """The site's window (``repeat_window`` in the service configuration)."""

    enabled: bool = True
    critical_s: float = 3600.0
    others_s: float = 14400.0
    max_entries: int = 100_000

    def window(self, indicator: str) -> float:
        """How long a card of this indicator is not shown again unchanged."""
        return self.critical_s if indicator == "critical" else self.others_s


@dataclass(frozen=True)
class Suppressed:
    """A card not shown again: what it was and why."""

    card: dict[str, Any]
    key: str
    shown_at: float
    window_s: float

    def reason(self, now: float) -> str:
        """Why, in words."""
        minutes = max(0, round((now - self.shown_at) / 60))
        return (f"unchanged since it was shown to this patient {minutes} min ago, within the "
                f"{self.window_s / 3600:g} h window for {self.card['indicator']} cards")

    def to_dict(self, now: float) -> dict[str, Any]:
        """For the response extension and the audit log."""
        return {"card": self.card.get("uuid"), "summary": self.card["summary"], "indicator": self.card["indicator"],
                "repeat_key": self.key, "shown_at": self.shown_at, "window_s": self.window_s, "reason": self.reason(now)}


class ShownStore(Protocol):
    """The last card shown per patient and card key."""

    def last_shown(self, patient: str, keys: list[str]) -> dict[str, tuple[str, float]]:
        """``key -> (signature, shown_at)`` for those of ``keys`` recorded for ``patient``."""
        ...

    def mark(self, patient: str, shown: dict[str, str], at: float) -> None:
        """Record that these cards (``key -> signature``) were shown to ``patient`` at ``at``."""
        ...

    def close(self) -> None:
        """Release what it holds."""
        ...


class MemoryShownStore:
    """Per process (the default with no ``replay_cache``): the oldest entries go first past ``max_entries``."""

    def __init__(self, max_entries: int, horizon_s: float) -> None:
        self._rows: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._max, self._horizon = max_entries, horizon_s
        self._lock = threading.Lock()

    def last_shown(self, patient: str, keys: list[str]) -> dict[str, tuple[str, float]]:
        with self._lock:
            return {k: self._rows[(patient, k)] for k in keys if (patient, k) in self._rows}

    def mark(self, patient: str, shown: dict[str, str], at: float) -> None:
        with self._lock:
            for key, signature in shown.items():
                self._rows.pop((patient, key), None)
                self._rows[(patient, key)] = (signature, at)
            while len(self._rows) > self._max or (self._rows and next(iter(self._rows.values()))[1] < at - self._horizon):
                self._rows.popitem(last=False)

    def close(self) -> None:
        pass


class _SqlShownStore:
    """A ``shown_cards`` table in the replay cache's database (``param``: the driver's placeholder)."""

    param = "?"
    exists_sql: str | None = None

    def __init__(self, conn: Any, real: str, max_entries: int, horizon_s: float) -> None:
        self._conn = conn
        # Asked first: a least-privilege role (docs/deploy.md) may use the table but not create one.
        if self.exists_sql is None or not conn.execute(self.exists_sql).fetchone()[0]:
            conn.execute("CREATE TABLE IF NOT EXISTS shown_cards (patient TEXT NOT NULL, card_key TEXT NOT NULL, "
                         f"signature TEXT NOT NULL, shown_at {real} NOT NULL, PRIMARY KEY (patient, card_key))")
        self._max, self._horizon = max_entries, horizon_s
        self._lock = threading.Lock()
        self._swept = 0.0

    def last_shown(self, patient: str, keys: list[str]) -> dict[str, tuple[str, float]]:
        if not keys:
            return {}
        p = self.param
        with self._lock:
            rows = self._conn.execute(
                f"SELECT card_key, signature, shown_at FROM shown_cards WHERE patient = {p} "
                f"AND card_key IN ({', '.join([p] * len(keys))})", (patient, *keys)).fetchall()
        return {k: (s, float(at)) for k, s, at in rows}

    def mark(self, patient: str, shown: dict[str, str], at: float) -> None:
        p = self.param
        with self._lock:
            for key, signature in shown.items():
                self._conn.execute(
                    f"INSERT INTO shown_cards (patient, card_key, signature, shown_at) VALUES ({p}, {p}, {p}, {p}) "
                    "ON CONFLICT (patient, card_key) DO UPDATE SET signature = excluded.signature, shown_at = excluded.shown_at",
                    (patient, key, signature, at))
            if at - self._swept > SWEEP_EVERY_S:
                self._swept = at
                self._conn.execute(f"DELETE FROM shown_cards WHERE shown_at < {p}", (at - self._horizon,))
                # Bounded: past max_entries rows, the oldest go.
                self._conn.execute(
                    f"DELETE FROM shown_cards WHERE shown_at < (SELECT shown_at FROM shown_cards ORDER BY shown_at DESC "
                    f"LIMIT 1 OFFSET {p})", (self._max - 1,))

    def close(self) -> None:
        self._conn.close()


class SqliteShownStore(_SqlShownStore):
    """In the replay cache's SQLite file: shared by the worker processes of one machine."""

    def __init__(self, path: str | Path, max_entries: int, horizon_s: float) -> None:
        import sqlite3

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        super().__init__(conn, "REAL", max_entries, horizon_s)


class PostgresShownStore(_SqlShownStore):
    """In the replay cache's PostgreSQL database: shared by every instance that uses it."""

    param = "%s"
    exists_sql = "SELECT to_regclass('shown_cards') IS NOT NULL"

    def __init__(self, url: str, max_entries: int, horizon_s: float) -> None:
        from pressor.engine.audit.store_postgres import connect

        super().__init__(connect(url, readonly=False), "DOUBLE PRECISION", max_entries, horizon_s)


def open_shown_store(target: str | Path | None, settings: RepeatSettings) -> ShownStore:
    """Beside the token replay cache: ``None``/"memory" in-process, a ``postgresql://`` URL, else a SQLite file.
    Raises :class:`AuditError` when it cannot be opened."""
    horizon = max(settings.critical_s, settings.others_s)
    if target is None or str(target) == "memory":
        return MemoryShownStore(settings.max_entries, horizon)
    try:
        if is_url(str(target)):
            return PostgresShownStore(str(target), settings.max_entries, horizon)
        return SqliteShownStore(target, settings.max_entries, horizon)
    except Exception as exc:  # noqa: BLE001 - driver errors of either store, reported with the target
        from pressor.engine.audit.store_postgres import redacted

        raise AuditError.single(f"the shown-cards store cannot be opened ({exc})", file=redacted(str(target)),
                                suggestion="check replay_cache in the service configuration") from exc


def patient_hash(patient_id: str) -> str:
    """What the store keeps of the patient."""
    return hashlib.sha256(f"pressor-shown|Patient/{patient_id.removeprefix('Patient/')}".encode()).hexdigest()


def show_repeats_requested(body: dict[str, Any]) -> bool:
    """The request's ``extension.pressor.show_repeats`` (true: show every card, as if never shown)."""
    ext = body.get("extension")
    pressor = ext.get("pressor") if isinstance(ext, dict) else None
    return isinstance(pressor, dict) and pressor.get("show_repeats") is True


def _repeat(card: dict[str, Any]) -> tuple[str, str] | None:
    mark = card.get("extension", {}).get("pressor", {})
    key, signature = mark.get("repeat_key"), mark.get("signature")
    return (key, signature) if isinstance(key, str) and isinstance(signature, str) else None


class RepeatWindow:
    """Which cards of a call repeat an unchanged card shown to the same patient within the window."""

    def __init__(self, settings: RepeatSettings, store: ShownStore) -> None:
        self.settings = settings
        self.store = store
        #: Whether reading or writing the store may wait on I/O (a database): then it belongs in a thread, not on
        #: the event loop; the in-process store is asked in place (two thread hops a call saved).
        self.may_block = not isinstance(store, MemoryShownStore)

    def split(self, patient_id: str, cards: list[dict[str, Any]], now: float) -> tuple[list[dict[str, Any]], list[Suppressed]]:
        """``(shown, suppressed)``: a card is suppressed when the same key with the same signature was shown to this
        patient less than its window ago. Cards without a repeat mark (missing data, warnings) are always shown."""
        keyed = [(card, _repeat(card)) for card in cards]
        last = self.store.last_shown(patient_hash(patient_id), [m[0] for _, m in keyed if m is not None])
        shown, suppressed = [], []
        for card, mark in keyed:
            if mark is not None and mark[0] in last:
                signature, at = last[mark[0]]
                window = self.settings.window(card["indicator"])
                if signature == mark[1] and now - at < window:
                    suppressed.append(Suppressed(card, mark[0], at, window))
                    continue
            shown.append(card)
        return shown, suppressed

    def remember(self, patient_id: str, cards: list[dict[str, Any]], now: float) -> None:
        """Record the cards just shown (those with a repeat mark)."""
        marks = dict(m for m in map(_repeat, cards) if m is not None)
        if marks:
            self.store.mark(patient_hash(patient_id), marks, now)

    def close(self) -> None:
        """Release the store."""
        self.store.close()
