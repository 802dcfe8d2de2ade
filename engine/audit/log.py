"""The audit log: every recommendation, and the feedback on it, append-only and hash-chained, in one SQLite file.

Each record holds the canonical JSON of the input (or only its SHA-256), the rule pack's
identity, the engine version, the full Result, who asked and when, and two hashes:
``prev_hash`` (the record before it; 64 zeros for the first) and ``record_hash`` (SHA-256 of
the canonical JSON of every other field and the database id). The pack's files are stored
once per pack SHA-256, so that any record can be replayed later.

The database refuses UPDATE and DELETE, and any INSERT that does not extend the head of the
chain, through triggers. Someone with write access can drop them; :meth:`AuditLog.verify`
then still finds every edited, deleted, inserted or reordered record, unless the whole chain
after it was rebuilt: anchoring the head hash elsewhere closes that gap (see docs/audit.md).

Feedback on CDS Hooks cards (accepted / overridden) is a second kind of entry, in the
``feedback`` table with its own chain (own ``seq``, genesis and triggers), so that the
records chain, its exports and outside verifiers stay exactly as they were.

Nothing here reads the wall clock: callers pass ``now``.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TextIO

from ..errors import AuditError, PatientStateError, Problem, RuleFileError
from ..model import Result, RulePack
from ..evaluation.pack import pack_sha256

#: ``prev_hash`` of the first record of every database.
GENESIS = "0" * 64
#: Schema version, kept in SQLite's ``user_version``. Format 1 (no feedback table, no
#: ``records.hook_instance``) is still read, and migrated when opened for writing.
FORMAT = 2
#: Formats this pressor reads.
READABLE_FORMATS = (1, 2)
#: Environment variable naming the audit database (overridden by an explicit path).
ENV_VAR = "PRESSOR_AUDIT_DB"
#: How long an append waits for another process holding the write lock.
BUSY_TIMEOUT_S = 10.0
INPUT_MODES = ("full", "hash")
FEEDBACK_OUTCOMES = ("accepted", "overridden")
EXPORT_FORMATS = ("jsonl", "csv")
EXPORT_KINDS = ("records", "feedback")

_TRIGGERS = {
    "records_append_at_head": f"""
        CREATE TRIGGER records_append_at_head BEFORE INSERT ON records
        WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM records)
          OR NEW.prev_hash IS NOT COALESCE((SELECT record_hash FROM records ORDER BY seq DESC LIMIT 1), '{GENESIS}')
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only: a new record must extend the head of the chain'); END""",
    "records_no_update": """
        CREATE TRIGGER records_no_update BEFORE UPDATE ON records
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only: UPDATE refused'); END""",
    "records_no_delete": """
        CREATE TRIGGER records_no_delete BEFORE DELETE ON records
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only: DELETE refused'); END""",
    "packs_insert_once": """
        CREATE TRIGGER packs_insert_once BEFORE INSERT ON packs
        WHEN EXISTS (SELECT 1 FROM packs WHERE sha256 = NEW.sha256)
        BEGIN SELECT RAISE(ABORT, 'a stored rule pack is never replaced'); END""",
    "packs_no_update": """
        CREATE TRIGGER packs_no_update BEFORE UPDATE ON packs
        BEGIN SELECT RAISE(ABORT, 'stored rule packs are append-only: UPDATE refused'); END""",
    "packs_no_delete": """
        CREATE TRIGGER packs_no_delete BEFORE DELETE ON packs
        BEGIN SELECT RAISE(ABORT, 'stored rule packs are append-only: DELETE refused'); END""",
    "meta_insert_once": """
        CREATE TRIGGER meta_insert_once BEFORE INSERT ON meta
        WHEN EXISTS (SELECT 1 FROM meta WHERE key = NEW.key)
        BEGIN SELECT RAISE(ABORT, 'audit metadata is never replaced'); END""",
    "meta_no_update": """
        CREATE TRIGGER meta_no_update BEFORE UPDATE ON meta
        BEGIN SELECT RAISE(ABORT, 'audit metadata is append-only: UPDATE refused'); END""",
    "meta_no_delete": """
        CREATE TRIGGER meta_no_delete BEFORE DELETE ON meta
        BEGIN SELECT RAISE(ABORT, 'audit metadata is append-only: DELETE refused'); END""",
}

_FEEDBACK_TRIGGERS = {
    "feedback_append_at_head": f"""
        CREATE TRIGGER feedback_append_at_head BEFORE INSERT ON feedback
        WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM feedback)
          OR NEW.prev_hash IS NOT COALESCE((SELECT record_hash FROM feedback ORDER BY seq DESC LIMIT 1), '{GENESIS}')
        BEGIN SELECT RAISE(ABORT, 'feedback entries are append-only: a new entry must extend the head of the chain'); END""",
    "feedback_no_update": """
        CREATE TRIGGER feedback_no_update BEFORE UPDATE ON feedback
        BEGIN SELECT RAISE(ABORT, 'feedback entries are append-only: UPDATE refused'); END""",
    "feedback_no_delete": """
        CREATE TRIGGER feedback_no_delete BEFORE DELETE ON feedback
        BEGIN SELECT RAISE(ABORT, 'feedback entries are append-only: DELETE refused'); END""",
}

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
        CHECK ((input_mode = 'full') = (input_json IS NOT NULL)))""",
    "CREATE INDEX records_recorded_at ON records (recorded_at)",
)
#: What turns a format-1 database into format 2 (run once, in one transaction).
_MIGRATE_1_TO_2 = ("ALTER TABLE records ADD COLUMN hook_instance TEXT", *_FEEDBACK_TABLE)


def canonical_json(value: Any) -> str:
    """Sorted keys, compact separators, non-ASCII kept (hash its UTF-8 encoding)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_text(text: str) -> str:
    """Hex SHA-256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def utc_text(moment: datetime) -> str:
    """``2026-11-24T12:00:00.000000Z``: fixed width, so text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("the audit clock needs a timezone-aware datetime")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_path() -> Path:
    """``audit.db`` in the platform's user data directory for "pressor"."""
    import platformdirs

    return platformdirs.user_data_path("pressor", appauthor=False) / "audit.db"


def resolve_path(explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The audit database: ``explicit``, else ``$PRESSOR_AUDIT_DB``, else :func:`default_path`."""
    if explicit:
        return Path(explicit)
    env = (os.environ if environ is None else environ).get(ENV_VAR)
    return Path(env) if env else default_path()


def os_user() -> str:
    """The operating-system user running this process ("unknown" if it has no name)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no USER/LOGNAME and no passwd entry (some containers)
        return "unknown"


# --- records ----------------------------------------------------------------


@dataclass(frozen=True)
class AuditRecord:
    """One recommendation as recorded. ``input_json`` is None when only its hash was kept."""

    seq: int
    id: str
    recorded_at: str
    user: str
    input_mode: str
    input_json: str | None
    input_sha256: str
    pack_name: str
    pack_version: str
    pack_sha256: str
    engine_version: str
    include_draft: bool
    result_json: str
    prev_hash: str
    record_hash: str
    #: The CDS Hooks call that asked (None from the CLI): with the rule, its version and the
    #: pack it gives the card uuids, which is how feedback finds this record.
    hook_instance: str | None = None

    def hashed(self, database_id: str) -> str:
        """The canonical JSON that ``record_hash`` is the SHA-256 of (``hook_instance`` only when
        set, so that records made before it existed keep their hash)."""
        data = self.to_dict(parsed=False)
        del data["record_hash"]
        data["database_id"] = database_id
        return canonical_json(data)

    def compute_hash(self, database_id: str) -> str:
        """What ``record_hash`` must be for this content."""
        return sha256_text(self.hashed(database_id))

    @property
    def result(self) -> dict[str, Any]:
        """The stored Result, parsed."""
        return json.loads(self.result_json)

    @property
    def input(self) -> Any:
        """The stored input, parsed (None in hash mode)."""
        return None if self.input_json is None else json.loads(self.input_json)

    def fired(self) -> list[str]:
        """``rule-id@version`` of every recommendation in the stored Result."""
        return [f"{r['rule_id']}@{r['rule_version']}" for r in self.result.get("recommendations", [])]

    def to_dict(self, *, parsed: bool = True) -> dict[str, Any]:
        """JSON-ready. ``parsed``: input and result as objects; otherwise the exact stored texts
        (what an outside verifier must hash)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if data["hook_instance"] is None:
            del data["hook_instance"]
        if parsed:
            data["input"] = self.input
            data["result"] = self.result
            del data["input_json"], data["result_json"]
        return data


_COLUMNS = tuple(f.name for f in fields(AuditRecord))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM records"
#: The same from a format-1 database, opened read-only (no ``hook_instance`` column yet).
_SELECT_V1 = _SELECT.replace("hook_instance FROM", "NULL AS hook_instance FROM")


@dataclass(frozen=True)
class FeedbackEntry:
    """One feedback item of a CDS Hooks ``/feedback`` call: what the clinician did with a card.

    ``payload_json`` is the item exactly as received (canonical JSON); the other fields are
    taken from it for querying, and all of them are hashed.
    """

    seq: int
    id: str
    recorded_at: str
    user: str
    service: str
    card_uuid: str
    outcome: str
    override_reason_json: str | None
    outcome_timestamp: str
    payload_json: str
    prev_hash: str
    record_hash: str

    def hashed(self, database_id: str) -> str:
        """The canonical JSON that ``record_hash`` is the SHA-256 of (marked as feedback, so that
        no feedback hash can stand in for a record's)."""
        data = self.to_dict(parsed=False)
        del data["record_hash"]
        data["database_id"] = database_id
        data["kind"] = "feedback"
        return canonical_json(data)

    def compute_hash(self, database_id: str) -> str:
        """What ``record_hash`` must be for this content."""
        return sha256_text(self.hashed(database_id))

    def to_dict(self, *, parsed: bool = True) -> dict[str, Any]:
        """JSON-ready. ``parsed``: payload and override reason as objects; otherwise the stored texts."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if parsed:
            data["payload"] = json.loads(self.payload_json)
            data["override_reason"] = None if self.override_reason_json is None else json.loads(self.override_reason_json)
            del data["payload_json"], data["override_reason_json"]
        return data


_FEEDBACK_COLUMNS = tuple(f.name for f in fields(FeedbackEntry))
_FEEDBACK_SELECT = f"SELECT {', '.join(_FEEDBACK_COLUMNS)} FROM feedback"


def _record(row: tuple[Any, ...]) -> AuditRecord:
    data = dict(zip(_COLUMNS, row))
    data["include_draft"] = bool(data["include_draft"])
    return AuditRecord(**data)


@dataclass(frozen=True)
class ChainProblem:
    """What is wrong with one record (``seq`` None: with the database as a whole)."""

    seq: int | None
    id: str | None
    reasons: tuple[str, ...]
    #: "record" or "feedback": which chain.
    kind: str = "record"

    def __str__(self) -> str:
        where = f"{self.kind} #{self.seq} ({self.id})" if self.seq is not None else "database"
        return f"{where}: {'; '.join(self.reasons)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": self.kind, "seq": self.seq, "id": self.id, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Verification:
    """The outcome of walking the chain. ``head_hash`` is what to anchor elsewhere."""

    database_id: str
    records: int
    head_seq: int
    head_id: str | None
    head_hash: str
    problems: tuple[ChainProblem, ...]
    feedback: int = 0
    #: ``(seq, id, record_hash)`` of the last feedback entry.
    feedback_head: tuple[int, str | None, str] = (0, None, GENESIS)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    @property
    def first_bad(self) -> ChainProblem | None:
        """The first entry (records first, then feedback, each in sequence order) that is wrong, if any."""
        return next((p for p in self.problems if p.seq is not None), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``audit verify --json``)."""
        bad = self.first_bad
        seq, fid, fhash = self.feedback_head
        return {
            "ok": self.ok, "database_id": self.database_id, "records": self.records,
            "head": {"seq": self.head_seq, "id": self.head_id, "record_hash": self.head_hash},
            "feedback": self.feedback, "feedback_head": {"seq": seq, "id": fid, "record_hash": fhash},
            "first_bad": bad.to_dict() if bad else None,
            "problems": [p.to_dict() for p in self.problems],
        }


@dataclass(frozen=True)
class Difference:
    """One place where a replayed Result differs from the stored one."""

    pointer: str
    stored: Any
    replayed: Any

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; a side that is absent is omitted."""
        out: dict[str, Any] = {"pointer": self.pointer}
        if self.stored is not _ABSENT:
            out["stored"] = self.stored
        if self.replayed is not _ABSENT:
            out["replayed"] = self.replayed
        return out


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Replay:
    """A record evaluated again from its stored input and pack."""

    record: AuditRecord
    differences: tuple[Difference, ...]

    @property
    def identical(self) -> bool:
        """True when the fresh Result equals the stored one exactly."""
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``audit replay --json``)."""
        return {"id": self.record.id, "seq": self.record.seq, "identical": self.identical,
                "pack": {"name": self.record.pack_name, "version": self.record.pack_version, "sha256": self.record.pack_sha256},
                "differences": [d.to_dict() for d in self.differences]}


def json_diff(stored: Any, replayed: Any, pointer: str = "") -> list[Difference]:
    """Every difference between two JSON values, by JSON pointer (types matter: 1 is not true)."""
    from ..evaluation.load import escape_pointer_token

    if isinstance(stored, dict) and isinstance(replayed, dict):
        out: list[Difference] = []
        for key in sorted(stored.keys() | replayed.keys()):
            out.extend(json_diff(stored.get(key, _ABSENT), replayed.get(key, _ABSENT), f"{pointer}/{escape_pointer_token(key)}"))
        return out
    if isinstance(stored, list) and isinstance(replayed, list):
        out = []
        for i in range(max(len(stored), len(replayed))):
            out.extend(json_diff(stored[i] if i < len(stored) else _ABSENT,
                                 replayed[i] if i < len(replayed) else _ABSENT, f"{pointer}/{i}"))
        return out
    if type(stored) is type(replayed) and stored == replayed:
        return []
    return [Difference(pointer or "/", stored, replayed)]


# --- failures ---------------------------------------------------------------


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
    return AuditError([Problem(f"{why}; could not {action} ({text})", file=str(path), suggestion=fix)])


@contextmanager
def _translated(path: Path, action: str) -> Iterator[None]:
    """Turn SQLite and OS errors into :class:`AuditError`, keeping the cause."""
    try:
        yield
    except AuditError:
        raise
    except (sqlite3.Error, OSError) as exc:
        raise _failure(exc, path, action) from exc


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """The one place a connection is made (autocommit: transactions are explicit)."""
    if readonly:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                               isolation_level=None, check_same_thread=False)
    return sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)


def _connect_for_reading(path: Path) -> sqlite3.Connection:
    """Read-only; also in a read-only directory (an archive), where WAL mode cannot create its index."""
    conn = _connect(path, readonly=True)
    try:
        conn.execute("PRAGMA user_version").fetchone()  # SQLite opens lazily: this is where it fails
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if "unable to open" not in str(exc) or path.with_name(path.name + "-wal").exists():
            raise
    # No WAL file and no way to create one: nobody is writing, so the file may be read as immutable.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None,
                           check_same_thread=False)


# --- the log ----------------------------------------------------------------


class AuditLog:
    """An open audit database. Use :meth:`open`; close it (or use ``with``) when done."""

    def __init__(self, path: Path, conn: sqlite3.Connection, database_id: str) -> None:
        self.path = path
        self.database_id = database_id
        self._conn = conn
        #: The format of the file: 1 only when an old log is opened read-only (never migrated then).
        self.format = conn.execute("PRAGMA user_version").fetchone()[0]
        self._select = _SELECT if self.format >= 2 else _SELECT_V1
        #: Packs rebuilt for replay, by SHA-256: each is compiled once per open log.
        self._replay_packs: dict[str, RulePack] = {}

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> "AuditLog":
        """Open (``create``: creating the file and its directory if needed) or open read-only.

        Raises :class:`AuditError` when the file cannot be used, saying why and what to do.
        """
        path = Path(path)
        if path.is_dir():
            raise AuditError.single("the audit log path is a directory", file=str(path), suggestion="name a file, e.g. audit.db")
        if not create and not path.exists():
            raise AuditError.single("no audit log here", file=str(path),
                                    suggestion=f"pass --audit-db PATH or set {ENV_VAR} to the log's file")
        conn = None
        with _translated(path, "open it"):
            try:
                if create:
                    path.parent.mkdir(parents=True, exist_ok=True)
                conn = _connect(path, readonly=False) if create else _connect_for_reading(path)
                conn.execute("PRAGMA foreign_keys = ON")
                if create:
                    _use_wal(conn)
                    # FULL: a record, once acknowledged, is on disk.
                    conn.execute("PRAGMA synchronous = FULL")
                    _ensure_schema(conn, path)
                else:
                    _check_format(conn, path)
                row = conn.execute("SELECT value FROM meta WHERE key = 'database_id'").fetchone()
                if row is None:
                    raise AuditError.single("the audit log has no database id (damaged)", file=str(path))
                return cls(path, conn, row[0])
            except BaseException:
                if conn is not None:
                    conn.close()
                raise

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing --------------------------------------------------------------
    def append(self, pack: RulePack, state: Any, result: Result, *, now: datetime, user: str,
               input_mode: str = "full", hook_instance: str | None = None) -> AuditRecord:
        """Record one evaluation; atomic (all of it or nothing) and safe across processes.

        ``now`` is the time of recording (the Result keeps its own ``evaluated_at``);
        ``input_mode`` "hash" keeps only the input's SHA-256 (no patient data stored);
        ``hook_instance``: the CDS Hooks call, when the service asked.
        """
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}")
        input_text = canonical_json(state)
        result_dict = result.to_dict()
        draft = bool(result_dict["include_draft"])
        record = AuditRecord(
            seq=0, id=str(uuid.uuid4()), recorded_at=utc_text(now), user=user, input_mode=input_mode,
            input_json=input_text if input_mode == "full" else None, input_sha256=sha256_text(input_text),
            pack_name=pack.name, pack_version=pack.version, pack_sha256=pack.sha256,
            engine_version=result_dict["engine_version"], include_draft=draft,
            result_json=canonical_json(result_dict), prev_hash="", record_hash="", hook_instance=hook_instance,
        )
        with _translated(self.path, "write the record"):
            # Read the pack's files before taking the write lock, and only once per pack.
            files = None if self._has_pack(pack.sha256) else pack_files(pack)
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if files is not None and not self._has_pack(pack.sha256):
                    conn.execute("INSERT INTO packs (sha256, name, version, files_json) VALUES (?, ?, ?, ?)",
                                 (pack.sha256, pack.name, pack.version, canonical_json(files)))
                head = conn.execute("SELECT seq, record_hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = head if head else (0, GENESIS)
                record = replace(record, seq=seq + 1, prev_hash=prev)
                record = replace(record, record_hash=record.compute_hash(self.database_id))
                conn.execute(f"INSERT INTO records ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                             tuple(getattr(record, c) for c in _COLUMNS))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return record

    def append_feedback(self, items: list[Mapping[str, Any]], *, service: str, now: datetime, user: str) -> list[FeedbackEntry]:
        """Record the items of one CDS Hooks feedback call, all in one transaction (all or none).

        Each item needs ``card``, ``outcome`` (accepted|overridden) and ``outcomeTimestamp``;
        the whole item is kept as canonical JSON.
        """
        drafts = []
        for item in items:
            if item.get("outcome") not in FEEDBACK_OUTCOMES:
                raise ValueError(f"outcome must be one of {FEEDBACK_OUTCOMES}")
            reason = item.get("overrideReason")
            drafts.append(FeedbackEntry(
                seq=0, id=str(uuid.uuid4()), recorded_at=utc_text(now), user=user, service=service,
                card_uuid=str(item["card"]), outcome=item["outcome"],
                override_reason_json=None if reason is None else canonical_json(reason),
                outcome_timestamp=str(item["outcomeTimestamp"]), payload_json=canonical_json(item),
                prev_hash="", record_hash=""))
        out: list[FeedbackEntry] = []
        with _translated(self.path, "write the feedback"):
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                head = conn.execute("SELECT seq, record_hash FROM feedback ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = head if head else (0, GENESIS)
                for draft in drafts:
                    entry = replace(draft, seq=seq + 1, prev_hash=prev)
                    entry = replace(entry, record_hash=entry.compute_hash(self.database_id))
                    conn.execute(f"INSERT INTO feedback ({', '.join(_FEEDBACK_COLUMNS)}) "
                                 f"VALUES ({', '.join('?' * len(_FEEDBACK_COLUMNS))})",
                                 tuple(getattr(entry, c) for c in _FEEDBACK_COLUMNS))
                    out.append(entry)
                    seq, prev = entry.seq, entry.record_hash
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return out

    def _has_pack(self, sha: str) -> bool:
        return self._conn.execute("SELECT 1 FROM packs WHERE sha256 = ?", (sha,)).fetchone() is not None

    # -- reading --------------------------------------------------------------
    def records(self, *, since: datetime | None = None, rule: str | None = None,
                hooked: bool = False) -> Iterator[AuditRecord]:
        """Records in sequence order; ``since``: recorded at or after; ``rule``: that rule fired;
        ``hooked``: only those made for a CDS Hooks call."""
        where, args = [], []
        if hooked:
            if self.format < 2:
                return
            where.append("hook_instance IS NOT NULL")
        if since is not None:
            where.append("recorded_at >= ?")
            args.append(utc_text(since))
        if rule is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(records.result_json, '$.recommendations') AS r "
                         "WHERE json_extract(r.value, '$.rule_id') = ?)")
            args.append(rule)
        sql = self._select + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq"
        with _translated(self.path, "read the records"):
            for row in self._conn.execute(sql, args):
                yield _record(row)

    def feedback(self, *, since: datetime | None = None, card: str | None = None) -> Iterator[FeedbackEntry]:
        """Feedback entries in sequence order; ``since``: recorded at or after; ``card``: on that card uuid."""
        if self.format < 2:
            return
        where, args = [], []
        if since is not None:
            where.append("recorded_at >= ?")
            args.append(utc_text(since))
        if card is not None:
            where.append("card_uuid = ?")
            args.append(card)
        sql = _FEEDBACK_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq"
        with _translated(self.path, "read the feedback"):
            for row in self._conn.execute(sql, args):
                yield FeedbackEntry(*row)

    def record(self, ref: str) -> AuditRecord:
        """The record with this id, or with the one id starting with ``ref``."""
        with _translated(self.path, "read the record"):
            row = self._conn.execute(self._select + " WHERE id = ?", (ref,)).fetchone()
            if row is not None:
                return _record(row)
            rows = []
            if ref and all(c in "0123456789abcdef-" for c in ref.lower()):
                rows = self._conn.execute(self._select + " WHERE id LIKE ? ORDER BY seq LIMIT 2", (ref.lower() + "%",)).fetchall()
        if not rows:
            raise AuditError.single(f"no audit record '{ref}'", file=str(self.path), suggestion="see `pressor audit list`")
        if len(rows) > 1:
            raise AuditError.single(f"'{ref}' matches more than one record", file=str(self.path), suggestion="give more of the id")
        return _record(rows[0])

    def stored_pack(self, sha: str) -> tuple[str, str, dict[str, str]]:
        """``(name, version, {file name: text})`` of a stored pack."""
        with _translated(self.path, "read the stored pack"):
            row = self._conn.execute("SELECT name, version, files_json FROM packs WHERE sha256 = ?", (sha,)).fetchone()
        if row is None:
            raise AuditError.single(f"rule pack {sha} is not stored in the audit log", file=str(self.path))
        return row[0], row[1], json.loads(row[2])["files"]

    def head(self) -> tuple[int, str | None, str]:
        """``(seq, id, record_hash)`` of the last record; ``(0, None, GENESIS)`` when empty."""
        with _translated(self.path, "read the head"):
            row = self._conn.execute("SELECT seq, id, record_hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        return tuple(row) if row else (0, None, GENESIS)  # type: ignore[return-value]

    # -- checking -------------------------------------------------------------
    def verify(self, *, anchor: tuple[int, str] | None = None) -> Verification:
        """Walk the chain in sequence order; report every record that is wrong and why.

        ``anchor`` (seq, record_hash), published earlier, must still be in the chain: this is
        what catches a chain rebuilt from some record onwards, or a truncated tail.
        """
        problems: list[ChainProblem] = []
        with _translated(self.path, "verify the chain"):
            present = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
            expected = set(_TRIGGERS) | (set(_FEEDBACK_TRIGGERS) if self.format >= 2 else set())
            missing = sorted(expected - present)
            if missing:
                problems.append(ChainProblem(None, None, (f"append-only triggers were removed: {', '.join(missing)}",)))
            bad_packs: dict[str, str] = {}
            for sha, files_json in self._conn.execute("SELECT sha256, files_json FROM packs"):
                reason = _pack_problem(sha, files_json)
                if reason:
                    bad_packs[sha] = reason
            expected_prev, expected_seq, head = GENESIS, 1, (0, None, GENESIS)
            known_packs = {r[0] for r in self._conn.execute("SELECT sha256 FROM packs")}
            anchored: str | None = None
            for row in self._conn.execute(self._select + " ORDER BY seq"):
                rec = _record(row)
                reasons = _record_problems(rec, self.database_id, expected_seq, expected_prev, head[0])
                if rec.pack_sha256 not in known_packs:
                    reasons.append(f"its rule pack {rec.pack_sha256[:12]} is missing from the stored packs")
                elif rec.pack_sha256 in bad_packs:
                    reasons.append(bad_packs[rec.pack_sha256])
                if reasons:
                    problems.append(ChainProblem(rec.seq, rec.id, tuple(reasons)))
                expected_prev, expected_seq, head = rec.record_hash, rec.seq + 1, (rec.seq, rec.id, rec.record_hash)
                if anchor is not None and rec.seq == anchor[0]:
                    anchored = rec.record_hash
            count = self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            feedback_count, feedback_head = self._verify_feedback(problems)
        if anchor is not None:
            seq, expected = anchor
            if anchored is None:
                problems.append(ChainProblem(None, None, (f"anchor #{seq} is not in the chain: records were deleted from the end",)))
            elif anchored != expected:
                problems.append(ChainProblem(None, None, (
                    f"record #{seq} no longer has the anchored hash {expected[:16]}...: the chain was rewritten",)))
        return Verification(self.database_id, count, head[0], head[1], head[2], tuple(problems),
                            feedback_count, feedback_head)

    def _verify_feedback(self, problems: list[ChainProblem]) -> tuple[int, tuple[int, str | None, str]]:
        """Walk the feedback chain like the records chain; append its problems. ``(count, head)``."""
        expected_prev, expected_seq, head = GENESIS, 1, (0, None, GENESIS)
        count = 0
        for entry in self.feedback():
            count += 1
            reasons = _chain_problems(entry, self.database_id, expected_seq, expected_prev, head[0], "entry")
            try:
                payload = json.loads(entry.payload_json)
                if (payload.get("card"), payload.get("outcome"), payload.get("outcomeTimestamp")) != (
                        entry.card_uuid, entry.outcome, entry.outcome_timestamp):
                    reasons.append("card_uuid, outcome or outcome_timestamp differ from the stored payload")
            except (ValueError, AttributeError):
                reasons.append("the stored payload is not a JSON object")
            if reasons:
                problems.append(ChainProblem(entry.seq, entry.id, tuple(reasons), kind="feedback"))
            expected_prev, expected_seq, head = entry.record_hash, entry.seq + 1, (entry.seq, entry.id, entry.record_hash)
        return count, head

    # -- replay ---------------------------------------------------------------
    def replay(self, ref: str, *, state: Any = None) -> Replay:
        """Evaluate a record again: its stored pack, input, ``evaluated_at`` and draft flag.

        A record kept in hash mode has no input: pass the original ``state`` (its SHA-256
        must match the recorded one) or it cannot be replayed.
        """
        from ..evaluation.evaluate import evaluate

        record = self.record(ref)
        if state is None:
            if record.input_json is None:
                raise AuditError.single(
                    f"record #{record.seq} cannot be replayed: it was recorded with --audit-input hash, "
                    "so only the SHA-256 of its input was kept, not the input itself",
                    file=str(self.path),
                    suggestion=f"pass the original input with --input FILE (its SHA-256 must be {record.input_sha256})")
            state = json.loads(record.input_json)
        elif sha256_text(canonical_json(state)) != record.input_sha256:
            raise AuditError.single(f"this input is not the one record #{record.seq} was made from (SHA-256 differs)",
                                    suggestion=f"the recorded input has SHA-256 {record.input_sha256}")
        pack = self._replay_pack(record)
        stored = record.result
        evaluated_at = datetime.fromisoformat(stored["evaluated_at"].replace("Z", "+00:00"))
        try:
            fresh = evaluate(pack, state, now=evaluated_at, include_draft=record.include_draft)
        except PatientStateError as exc:
            raise AuditError([Problem(f"the input of record #{record.seq} is rejected by this pressor version"),
                              *exc.problems]) from exc
        replayed = json.loads(canonical_json(fresh.to_dict()))
        return Replay(record, tuple(json_diff(stored, replayed)))

    def _replay_pack(self, record: AuditRecord) -> RulePack:
        """The record's pack, rebuilt from the stored texts in a temporary directory and loaded."""
        from ..evaluation.pack import load_pack

        pack = self._replay_packs.get(record.pack_sha256)
        if pack is not None:
            return pack
        _, _, files = self.stored_pack(record.pack_sha256)
        with tempfile.TemporaryDirectory(prefix="pressor-replay-") as tmp:
            for name, text in files.items():
                if Path(name).name != name:
                    raise AuditError.single(f"stored pack file name '{name}' is not a plain file name", file=str(self.path))
                # newline="": write the text back byte for byte, so that the pack hashes the same.
                with open(Path(tmp, name), "w", encoding="utf-8", newline="") as fh:
                    fh.write(text)
            try:
                pack = load_pack(tmp)
            except RuleFileError as exc:
                raise AuditError([Problem(f"the rule pack of record #{record.seq} no longer loads in this pressor version"),
                                  *exc.problems]) from exc
        if pack.sha256 != record.pack_sha256:
            raise AuditError.single(f"the rebuilt pack hashes to {pack.sha256}, not the recorded {record.pack_sha256}",
                                    file=str(self.path))
        # Kept while the log is open, so that replaying many records of one pack compiles it once.
        # Never released: durable-rules cannot free a compiled pack safely and completely.
        self._replay_packs[record.pack_sha256] = pack
        return pack

    # -- export ---------------------------------------------------------------
    def export(self, fmt: str, out: TextIO, *, kind: str = "records") -> int:
        """Write every record (``kind`` "feedback": every feedback entry) to ``out`` as JSON lines
        or CSV; returns how many.

        Texts are exactly as stored, so that ``record_hash`` can be recomputed from the export
        alone (with ``database_id``, included on every row; feedback rows also hash ``"kind": "feedback"``).
        """
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"format must be one of {EXPORT_FORMATS}")
        if kind not in EXPORT_KINDS:
            raise ValueError(f"kind must be one of {EXPORT_KINDS}")
        entries: Iterator[AuditRecord | FeedbackEntry] = self.records() if kind == "records" else self.feedback()
        columns = ["database_id", *(_COLUMNS if kind == "records" else _FEEDBACK_COLUMNS)]
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n") if fmt == "csv" else None
        if writer:
            writer.writeheader()
        count = 0
        for rec in entries:
            row = {"database_id": self.database_id, **rec.to_dict(parsed=False)}
            if writer:
                writer.writerow(row)
            else:
                out.write(canonical_json(row) + "\n")
            count += 1
        return count


def write_atomically(path: str | os.PathLike[str], write: Callable[[TextIO], Any]) -> Any:
    """Write a text file through a temporary file in the same directory, then rename it:
    readers see the old file or the whole new one, never half of it."""
    path = Path(path)
    with _translated(path, "write the file"):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                outcome = write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return outcome


def pack_files(pack: RulePack) -> dict[str, Any]:
    """``{"name", "version", "files": {file name: text}}`` read from the pack's directory;
    refuses files that changed since the pack was loaded (the record would lie)."""
    texts: dict[str, str] = {}
    for name, digest in sorted(pack.files.items()):
        path = Path(pack.directory, name)
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditError.single(f"cannot read this rule file to store it with the record ({exc})", file=str(path),
                                    suggestion="run the command again so that the pack is loaded afresh") from exc
        if sha256_text(text) != digest:
            raise AuditError.single("this rule file changed on disk after the pack was loaded", file=str(path),
                                    suggestion="run the command again so that the pack is loaded afresh")
        texts[name] = text
    return {"name": pack.name, "version": pack.version, "files": texts}


def _pack_problem(sha: str, files_json: str) -> str | None:
    """Why a stored pack does not match its SHA-256 (None when it does)."""
    try:
        files = json.loads(files_json)["files"]
        digest = pack_sha256({name: sha256_text(text) for name, text in files.items()})
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"its stored rule pack {sha[:12]} is unreadable"
    return None if digest == sha else f"its stored rule pack {sha[:12]} was altered (its files hash to {digest[:12]})"


def _chain_problems(rec: AuditRecord | FeedbackEntry, database_id: str, expected_seq: int, expected_prev: str,
                    prev_seq: int, noun: str) -> list[str]:
    """What breaks the chain at ``rec`` (``noun``: "record" or "entry", for the messages)."""
    reasons = []
    if rec.seq != expected_seq:
        reasons.append(f"sequence number {rec.seq} follows #{prev_seq}: {noun}s are missing, inserted or reordered"
                       if prev_seq else f"the chain starts at #{rec.seq}, not #1: {noun}s before it are missing")
    if rec.prev_hash != expected_prev:
        before = f"{noun} #{prev_seq}" if prev_seq else "the genesis (64 zeros)"
        reasons.append(f"prev_hash does not match {before}: the {noun} before it was deleted, replaced or edited")
    if rec.compute_hash(database_id) != rec.record_hash:
        reasons.append(f"record_hash does not match the {noun}'s content: the {noun} was edited")
    return reasons


def _record_problems(rec: AuditRecord, database_id: str, expected_seq: int, expected_prev: str, prev_seq: int) -> list[str]:
    reasons = _chain_problems(rec, database_id, expected_seq, expected_prev, prev_seq, "record")
    if rec.input_json is not None and sha256_text(rec.input_json) != rec.input_sha256:
        reasons.append("the stored input does not match its input_sha256")
    return reasons


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
    """Create the tables and triggers once; safe when several processes start together."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
            for sql in (*_TABLES, *_FEEDBACK_TABLE, *_TRIGGERS.values(), *_FEEDBACK_TRIGGERS.values()):
                conn.execute(sql)
            conn.execute("INSERT INTO meta (key, value) VALUES ('format', ?), ('database_id', ?)", (str(FORMAT), str(uuid.uuid4())))
            conn.execute(f"PRAGMA user_version = {FORMAT}")
        elif version == 1:
            # A log from before feedback: add the column and the second chain; the records keep their hashes.
            for sql in (*_MIGRATE_1_TO_2, *_FEEDBACK_TRIGGERS.values()):
                conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {FORMAT}")
        else:
            _check_format(conn, path)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
