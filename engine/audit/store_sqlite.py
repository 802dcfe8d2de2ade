"""The audit log in one SQLite file (the embedded default): schema, triggers, migration,
connections (read-only ones never write anything), and its errors.

WAL mode: readers never block the one writer; ``BEGIN IMMEDIATE`` takes the write lock, so
processes appending together still make one chain. Input and result texts are stored
zstd-compressed against the record's pack (format 4, :mod:`.compression`); format 3 stored them
zlib-compressed, formats 1 and 2 as text. Older logs are read as they are, and migrated
(cheaply: nothing is rewritten) when opened for writing.
"""
from __future__ import annotations

import os
import sqlite3
import time
import uuid
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import AuditError, Problem
from .records import COLUMNS, FEEDBACK_COLUMNS, GENESIS, SQL_FEEDBACK_COLUMNS, AuditRecord, FeedbackEntry, canonical_json, pack_files, \
    sha256_text, utc_text
from .records import V6_ONLY
from .store import BUSY_TIMEOUT_S, ENV_VAR, AuditLog, record_select

__all__ = ["SqliteAuditLog", "FORMAT", "COLUMNS", "FEEDBACK_COLUMNS", "canonical_json", "pack_files", "sha256_text", "utc_text",
           "AuditRecord", "FeedbackEntry"]

#: Schema version, kept in SQLite's ``user_version``. 1: no feedback, no ``records.hook_instance``;
#: 2: feedback; 3: zlib-compressed input and result texts, the ``record_rules`` index; 4: texts
#: compressed with zstd against the record's pack, site profiles stored (``profiles``); 5: ``records.patient``;
#: 6: records hashed over their stored bytes, with ``evaluated_at`` and the fired rules in columns (:data:`V6_COLUMNS`).
FORMAT = 6
#: Formats this pressor reads (older ones are migrated when opened for writing).
READABLE_FORMATS = (1, 2, 3, 4, 5, 6)
#: Page size of a new log. A record takes 2-10 KB (most 2-4 KB): with 4 KB pages most take a page
#: of their own and waste 0.7 KB of it; with 1 KB pages SQLite fills whole overflow pages and the
#: rest packs closely (5.4 KB against 4.8 KB a record on the project's scenarios, bench/audit.py).
PAGE_SIZE = 1024
#: The deepest path accepted for the log (its missing directories are created one level at a time).
MAX_DEPTH = 255

def _refusals(table: str, noun: str) -> dict[str, str]:
    """The triggers that refuse every UPDATE and DELETE of ``table`` (``noun``: what its rows are, for the message)."""
    return {
        f"{table}_no_update": f"""
        CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
        BEGIN SELECT RAISE(ABORT, '{noun} append-only: UPDATE refused'); END""",
        f"{table}_no_delete": f"""
        CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
        BEGIN SELECT RAISE(ABORT, '{noun} append-only: DELETE refused'); END""",
    }


def _insert_once(table: str, key: str, message: str) -> dict[str, str]:
    """The trigger that refuses a second row with the same ``key`` (a stored text is never replaced)."""
    return {f"{table}_insert_once": f"""
        CREATE TRIGGER {table}_insert_once BEFORE INSERT ON {table}
        WHEN EXISTS (SELECT 1 FROM {table} WHERE {key} = NEW.{key})
        BEGIN SELECT RAISE(ABORT, '{message}'); END"""}


def _append_at_head(table: str, message: str) -> dict[str, str]:
    """The trigger that lets a new row only extend the head of ``table``'s hash chain."""
    return {f"{table}_append_at_head": f"""
        CREATE TRIGGER {table}_append_at_head BEFORE INSERT ON {table}
        WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM {table})
          OR NEW.prev_hash IS NOT COALESCE((SELECT record_hash FROM {table} ORDER BY seq DESC LIMIT 1), '{GENESIS}')
        BEGIN SELECT RAISE(ABORT, '{message}'); END"""}


_TRIGGERS = {
    **_append_at_head("records", "audit records are append-only: a new record must extend the head of the chain"),
    **_refusals("records", "audit records are"),
    **_insert_once("packs", "sha256", "a stored rule pack is never replaced"), **_refusals("packs", "stored rule packs are"),
    **_insert_once("meta", "key", "audit metadata is never replaced"), **_refusals("meta", "audit metadata is"),
}
_FEEDBACK_TRIGGERS = {
    **_append_at_head("feedback", "feedback entries are append-only: a new entry must extend the head of the chain"),
    **_refusals("feedback", "feedback entries are"),
}
_RULES_TRIGGERS = _refusals("record_rules", "the rule index is")

_FEEDBACK_TABLE = (
    """CREATE TABLE feedback (
        seq INTEGER PRIMARY KEY CHECK (seq >= 1),
        id TEXT NOT NULL UNIQUE,
        recorded_at TEXT NOT NULL,
        user TEXT NOT NULL,
        service TEXT NOT NULL,
        card_uuid TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('accepted', 'overridden')),
        override_reason_json TEXT,
        outcome_timestamp TEXT NOT NULL,
        payload_json TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        record_hash TEXT NOT NULL UNIQUE)""",
    "CREATE INDEX feedback_card_uuid ON feedback (card_uuid)",
)

#: Which records each rule fired in: what ``audit list --rule`` reads instead of every result.
_RULES_TABLE = (
    """CREATE TABLE record_rules (
        rule_id TEXT NOT NULL,
        seq INTEGER NOT NULL REFERENCES records (seq),
        PRIMARY KEY (rule_id, seq)) WITHOUT ROWID""",
)

#: The site profiles records were made under, once per SHA-256 of the profile's text (format 4).
_PROFILES_TABLE = ("CREATE TABLE profiles (sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, text TEXT NOT NULL)",)
_PROFILES_TRIGGERS = {**_insert_once("profiles", "sha256", "a stored site profile is never replaced"),
                      **_refusals("profiles", "stored site profiles are")}

# input_json and result_json: compressed BLOBs since format 3 (zlib; zstd from format 4) (TEXT affinity keeps a BLOB a
# BLOB), plain text in records made before.
_TABLES = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE packs (
        sha256 TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        files_json TEXT NOT NULL)""",
    """CREATE TABLE records (
        seq INTEGER PRIMARY KEY CHECK (seq >= 1),
        id TEXT NOT NULL UNIQUE,
        recorded_at TEXT NOT NULL,
        user TEXT NOT NULL,
        input_mode TEXT NOT NULL CHECK (input_mode IN ('full', 'hash')),
        input_json TEXT,
        input_sha256 TEXT NOT NULL,
        pack_name TEXT NOT NULL,
        pack_version TEXT NOT NULL,
        pack_sha256 TEXT NOT NULL REFERENCES packs (sha256),
        engine_version TEXT NOT NULL,
        include_draft INTEGER NOT NULL CHECK (include_draft IN (0, 1)),
        result_json TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        record_hash TEXT NOT NULL UNIQUE,
        hook_instance TEXT,
        patient TEXT,
        CHECK ((input_mode = 'full') = (input_json IS NOT NULL)))""",
    "CREATE INDEX records_recorded_at ON records (recorded_at)",
    "CREATE INDEX records_patient ON records (patient)",
)
#: The columns of record format 6 (NULL in the records made before it: a log holds both after a migration).
V6_COLUMNS = tuple(f"ALTER TABLE records ADD COLUMN {name} TEXT" for name in V6_ONLY)
#: What turns a format-1 database into format 2.
_MIGRATE_1_TO_2 = ("ALTER TABLE records ADD COLUMN hook_instance TEXT", *_FEEDBACK_TABLE, *_FEEDBACK_TRIGGERS.values())
#: What turns a format-2 database into format 3 (records before ``rules_indexed_from`` keep their
#: text and are searched by rule the old way).
_MIGRATE_2_TO_3 = (*_RULES_TABLE, *_RULES_TRIGGERS.values())
#: What turns a format-3 database into format 4 (records before ``profiles_stored_from`` kept no profile).
_MIGRATE_3_TO_4 = (*_PROFILES_TABLE, *_PROFILES_TRIGGERS.values())
#: What turns a format-4 database into format 5 (records before it name no patient).
_MIGRATE_4_TO_5 = ("ALTER TABLE records ADD COLUMN patient TEXT", "CREATE INDEX records_patient ON records (patient)")
#: What turns a format-5 database into format 6 (records before it keep their columns NULL and their hashes).
_MIGRATE_5_TO_6 = V6_COLUMNS

_SELECT = record_select(FORMAT)
_FEEDBACK_SELECT = f"SELECT {SQL_FEEDBACK_COLUMNS} FROM feedback"
#: Records whose result names the rule, read from the result itself (text only: formats 1-2).
_RULE_IN_TEXT = ("typeof(result_json) = 'text' AND EXISTS (SELECT 1 FROM json_each(records.result_json, '$.recommendations') AS r "
                 "WHERE json_extract(r.value, '$.rule_id') = ?)")


def _failure(exc: BaseException, path: Path, action: str) -> AuditError:
    """One clear AuditError for a SQLite or file-system failure."""
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if isinstance(exc, PermissionError) or "readonly" in low or "read-only" in low:
        why, fix = "the audit log is read-only", f"make {path} and its directory writable, or set --audit-db / {ENV_VAR}"
    elif "disk is full" in low or "no space" in low or getattr(exc, "errno", None) == 28:
        why, fix = "the disk holding the audit log is full", "free space on that disk, or set --audit-db to another disk"
    elif "not a database" in low or "malformed" in low or "corrupt" in low:
        why, fix = ("the audit log is not a readable SQLite database (corrupt, or another kind of file)",
                    "keep the file for investigation, move it aside and start a new log")
    elif "locked" in low or "busy" in low:
        why, fix = (f"the audit log is locked by another process (waited up to {BUSY_TIMEOUT_S:g} s)",
                    "retry; look for a hung process holding the file")
    elif isinstance(exc, FileNotFoundError):
        why, fix = f"the directory {path.parent} does not exist", "create it, or choose another path"
    elif "unable to open" in low:
        why, fix = "the audit log cannot be opened", f"check that {path.parent} exists and is writable"
    elif "no such table" in low or "no such column" in low:
        why, fix = "the audit log is damaged (its tables were altered)", "keep the file for investigation; start a new log"
    else:
        why, fix = "the audit log failed", "report this with the message above"
    return AuditError([Problem(f"{why}; could not {action} ({text})", file=_shortened(str(path)), suggestion=fix)])


@contextmanager
def _translated(path: Path, action: str) -> Iterator[None]:
    """Turn SQLite and OS errors into :class:`AuditError`, keeping the cause."""
    try:
        yield
    except AuditError:
        raise
    except (sqlite3.Error, OSError) as exc:
        raise _failure(exc, path, action) from exc


def _shortened(text: str, limit: int = 120) -> str:
    """A path fit for a one-line message: its start and its end around an ellipsis when it is long."""
    return text if len(text) <= limit else f"{text[:60]}...{text[-40:]} ({len(text):,} characters)"


def _text(data: bytes) -> str:
    # A text edited into invalid UTF-8 is read (and then found not to match its hash), not a crash.
    return data.decode("utf-8", "surrogateescape")


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """The one place a connection is made (autocommit: transactions are explicit)."""
    if readonly:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                               isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    return _prepared(conn)


def _immutable(path: Path) -> sqlite3.Connection:
    return _prepared(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None,
                                     check_same_thread=False))


def _prepared(conn: sqlite3.Connection) -> sqlite3.Connection:
    """Texts read leniently, and ``unicode_lower``: SQLite's own LOWER folds ASCII letters only (the user filter
    must find "Émile" from "émile", as PostgreSQL's LOWER does)."""
    conn.text_factory = _text
    conn.create_function("unicode_lower", 1, lambda text: text.lower() if isinstance(text, str) else text, deterministic=True)
    return conn


def _connect_for_reading(path: Path) -> tuple[sqlite3.Connection, list[str]]:
    """Read-only, never writing anything: also a log in a directory this user cannot write (an
    archive, a root-owned 755 directory), where a WAL file's shared-memory index cannot be made,
    and a log on a full disk. Returns the connection and what the reader must be told (a part
    of the log that could not be read).

    With no ``-wal`` beside the file nobody is writing it, so when the directory or the file is
    not writable it is read as immutable (no locks, no ``-shm``); otherwise ``mode=ro``, and as
    immutable if SQLite still finds it needs to write to read (no ``-shm`` yet, or a full disk).
    A ``-wal`` that holds records not yet copied into the file cannot be read without its
    shared-memory index: the log is then read without them, and the reader is told so.
    """
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() and not (os.access(path.parent, os.W_OK) and os.access(path, os.W_OK)):
        return _immutable(path), []
    conn = _connect(path, readonly=True)
    try:
        conn.execute("PRAGMA user_version").fetchone()  # SQLite opens lazily: this is where it fails
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn, []
    except sqlite3.OperationalError as exc:
        conn.close()
        low = str(exc).lower()
        if not ("unable to open" in low or "readonly" in low or "read-only" in low or "disk i/o" in low or "full" in low):
            raise
        reason = str(exc)
    pending = wal.stat().st_size if wal.exists() else 0
    if not pending:
        return _immutable(path), []
    return _immutable(path), [f"its write-ahead file {wal.name} ({pending:,} bytes: the latest writes, not yet copied into "
                              f"the log) could not be read ({reason}); what follows leaves them out. Free space on that disk "
                              "(or make the directory writable) and run the command again"]


def _use_wal(conn: sqlite3.Connection) -> None:
    """WAL mode (readers never block the writer), kept in the file once set.

    Switching needs a moment alone with a new file; SQLite then answers "locked" at once,
    without its busy handler, so two processes creating the log together retry here.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _check_format(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a SQLite file that is not a pressor audit log, or is from a newer pressor."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version in READABLE_FORMATS:
        return
    if version > FORMAT:
        raise AuditError.single(f"the audit log has format {version}; this pressor reads format {FORMAT}", file=str(path),
                                suggestion="use the newer pressor that wrote it")
    raise AuditError.single("this SQLite file is not a pressor audit log", file=str(path),
                            suggestion=f"point --audit-db / {ENV_VAR} at the audit log, or at a new file")


def _ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables and triggers once, or migrate an older log; safe when several processes start together."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
            for sql in (*_TABLES, *V6_COLUMNS, *_FEEDBACK_TABLE, *_RULES_TABLE, *_PROFILES_TABLE, *_TRIGGERS.values(),
                        *_FEEDBACK_TRIGGERS.values(), *_RULES_TRIGGERS.values(), *_PROFILES_TRIGGERS.values()):
                conn.execute(sql)
            conn.execute("INSERT INTO meta (key, value) VALUES ('format', ?), ('database_id', ?)", (str(FORMAT), str(uuid.uuid4())))
            conn.execute(f"PRAGMA user_version = {FORMAT}")
        elif version in (1, 2, 3, 4, 5):
            # An older log: add what is new; existing records are not rewritten and keep their hashes.
            for sql in (*(_MIGRATE_1_TO_2 if version == 1 else ()), *(_MIGRATE_2_TO_3 if version <= 2 else ()),
                        *(_MIGRATE_3_TO_4 if version <= 3 else ()), *(_MIGRATE_4_TO_5 if version <= 4 else ()),
                        *_MIGRATE_5_TO_6):
                conn.execute(sql)
            head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0]
            if version <= 2:
                conn.execute("INSERT INTO meta (key, value) VALUES ('rules_indexed_from', ?)", (str(head + 1),))
            if version <= 3:
                conn.execute("INSERT INTO meta (key, value) VALUES ('profiles_stored_from', ?)", (str(head + 1),))
            conn.execute(f"PRAGMA user_version = {FORMAT}")
        else:
            _check_format(conn, path)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class _SqliteTransaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        self._conn.execute(sql, args)

    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._conn.executemany(sql, rows)

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        return self._conn.execute(sql, args).fetchone()


class SqliteAuditLog(AuditLog, opens="file"):
    """An audit log in a SQLite file."""

    def __init__(self, path: Path, conn: sqlite3.Connection, database_id: str) -> None:
        super().__init__()
        self.path = path
        self.database_id = database_id
        self._conn = conn
        self.format = conn.execute("PRAGMA user_version").fetchone()[0]
        self.expected_triggers = frozenset(_TRIGGERS) | (frozenset(_FEEDBACK_TRIGGERS) if self.format >= 2 else frozenset()) \
            | (frozenset(_RULES_TRIGGERS) if self.format >= 3 else frozenset()) \
            | (frozenset(_PROFILES_TRIGGERS) if self.format >= 4 else frozenset())
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('rules_indexed_from', 'profiles_stored_from')"))
        #: Records from this seq on are in ``record_rules`` (after a migration: the first new one).
        self._rules_indexed_from = int(meta.get("rules_indexed_from", 1)) if self.format >= 3 else None
        self.profiles_stored_from = int(meta.get("profiles_stored_from", 1)) if self.format >= 4 else None

    @classmethod
    def connect(cls, path: Path, *, create: bool = True) -> "SqliteAuditLog":
        """Open (``create``: creating the file and its directory if needed) or open read-only."""
        try:
            if len(path.parts) > MAX_DEPTH:  # creating its directories would recurse that deep
                raise OSError(36, f"more than {MAX_DEPTH} directories deep")
            is_dir, exists = path.is_dir(), path.exists()
        except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte
            raise AuditError.single(f"this is not a usable path for the audit log ({getattr(exc, 'strerror', None) or exc})",
                                    file=_shortened(str(path)),
                                    suggestion=f"give --audit-db / {ENV_VAR} a shorter path to a file") from exc
        if is_dir:
            raise AuditError.single("the audit log path is a directory", file=_shortened(str(path)),
                                    suggestion="name a file, e.g. audit.db")
        if not create and not exists:
            raise AuditError.single("no audit log here", file=_shortened(str(path)),
                                    suggestion=f"pass --audit-db PATH or set {ENV_VAR} to the log's file")
        conn = None
        with _translated(path, "open it"):
            try:
                if create:
                    path.parent.mkdir(parents=True, exist_ok=True)
                notes: list[str] = []
                if create:
                    conn = _connect(path, readonly=False)
                else:
                    conn, notes = _connect_for_reading(path)
                conn.execute("PRAGMA foreign_keys = ON")
                if create:
                    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # a new file only; an existing one keeps its own
                    _use_wal(conn)
                    # FULL: a record, once acknowledged, is on disk.
                    conn.execute("PRAGMA synchronous = FULL")
                    _ensure_schema(conn, path)
                else:
                    _check_format(conn, path)
                row = conn.execute("SELECT value FROM meta WHERE key = 'database_id'").fetchone()
                if row is None:
                    raise AuditError.single("the audit log has no database id (damaged)", file=str(path))
                log = cls(path, conn, row[0])
                log.notes = notes
                return log
            except BaseException:
                if conn is not None:
                    conn.close()
                raise

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def _translated(self, action: str) -> AbstractContextManager[None]:
        return _translated(self.path, action)

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        # Not ``yield from``: that would close the cursor when a reader stops early (a closed pipe), after the
        # connection may already be closed, and the cursor's close would raise there.
        for row in self._conn.execute(sql, args):
            yield row

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        return self._conn.execute(sql, args).fetchone()

    @contextmanager
    def _write(self) -> Iterator[_SqliteTransaction]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield _SqliteTransaction(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _triggers_present(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}

    _lower = "unicode_lower"

    def _since_hint(self) -> str:
        # Without statistics SQLite prefers walking the rowid (seq) order to skip a sort: a full scan.
        return " INDEXED BY records_recorded_at"

    def _rule_clauses(self, rule: str, where: list[str], args: list[Any]) -> list[tuple[str, tuple[Any, ...]]]:
        if self._rules_indexed_from is None:  # an old log, read-only: read each result
            return [(" AND ".join([*where, _RULE_IN_TEXT]), (*args, rule))]
        clauses = []
        if self._rules_indexed_from > 1:  # the records from before the migration
            clauses.append((" AND ".join([*where, "seq < ?", _RULE_IN_TEXT]), (*args, self._rules_indexed_from, rule)))
        return clauses + super()._rule_clauses(rule, where, args)
