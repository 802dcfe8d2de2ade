"""The audit log in PostgreSQL (``audit_db: postgresql://...``): one log, and one replay cache,
shared by several service instances.

Same records, same hash chain, same :meth:`verify` as SQLite. Triggers (PL/pgSQL) refuse UPDATE,
DELETE and TRUNCATE of every table and any INSERT that does not extend the head of its chain.
Writers serialise on a transaction-scoped advisory lock, so processes appending together make one
chain; the ``seq`` primary key would refuse a fork of it anyway. Reading connections are
``default_transaction_read_only``: reading never writes. Tables live in the connection's current
schema (``?options=-csearch_path%3Dname`` picks another).

Needs psycopg 3 (``pip install 'pressor[postgresql]'``).
"""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from ..errors import AuditError, Problem
from .records import GENESIS, V6_ONLY
from .store import BUSY_TIMEOUT_S, ENV_VAR, AuditLog

#: The format of a PostgreSQL log (its own numbering started at SQLite's 3: zlib-compressed texts, rule
#: index; 4: zstd against the record's pack, site profiles stored; 5: ``records.patient``; 6: records hashed over
#: their stored bytes, ``evaluated_at`` and the fired rules in columns). Formats 3 to 5 are migrated when opened for
#: writing (by the tables' owner: docs/deploy.md).
FORMAT = 6
READABLE_FORMATS = ("3", "4", "5", "6")
#: Key of the advisory lock every writer takes ("pressor" in ASCII).
WRITE_LOCK = 0x70726573736F72

_FUNCTIONS = (
    """CREATE OR REPLACE FUNCTION pressor_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation'; END $$""",
    f"""CREATE OR REPLACE FUNCTION pressor_append_at_head() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE head_seq BIGINT; head_hash TEXT;
    BEGIN
      EXECUTE format('SELECT seq, record_hash FROM %I.%I ORDER BY seq DESC LIMIT 1', TG_TABLE_SCHEMA, TG_TABLE_NAME)
        INTO head_seq, head_hash;
      IF head_seq IS NULL THEN head_seq := 0; head_hash := '{GENESIS}'; END IF;
      IF NEW.seq IS DISTINCT FROM head_seq + 1 OR NEW.prev_hash IS DISTINCT FROM head_hash THEN
        RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
      END IF;
      RETURN NEW;
    END $$""",
)

_TABLES = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE packs (
        sha256 TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        files_json TEXT NOT NULL)""",
    """CREATE TABLE records (
        seq BIGINT PRIMARY KEY CHECK (seq >= 1),
        id TEXT NOT NULL UNIQUE,
        recorded_at TEXT NOT NULL,
        "user" TEXT NOT NULL,
        input_mode TEXT NOT NULL CHECK (input_mode IN ('full', 'hash')),
        input_json BYTEA,
        input_sha256 TEXT NOT NULL,
        pack_name TEXT NOT NULL,
        pack_version TEXT NOT NULL,
        pack_sha256 TEXT NOT NULL REFERENCES packs (sha256),
        engine_version TEXT NOT NULL,
        include_draft BOOLEAN NOT NULL,
        result_json BYTEA NOT NULL,
        prev_hash TEXT NOT NULL,
        record_hash TEXT NOT NULL UNIQUE,
        hook_instance TEXT,
        patient TEXT,
        CHECK ((input_mode = 'full') = (input_json IS NOT NULL)))""",
    "CREATE INDEX records_recorded_at ON records (recorded_at)",
    "CREATE INDEX records_patient ON records (patient)",
    *(f"ALTER TABLE records ADD COLUMN {name} TEXT" for name in V6_ONLY),
    """CREATE TABLE record_rules (
        rule_id TEXT NOT NULL,
        seq BIGINT NOT NULL REFERENCES records (seq),
        PRIMARY KEY (rule_id, seq))""",
    """CREATE TABLE feedback (
        seq BIGINT PRIMARY KEY CHECK (seq >= 1),
        id TEXT NOT NULL UNIQUE,
        recorded_at TEXT NOT NULL,
        "user" TEXT NOT NULL,
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
#: The site profiles records were made under, once per SHA-256 of the profile's text (format 4).
_PROFILES_TABLE = "CREATE TABLE profiles (sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, text TEXT NOT NULL)"


def _refusals(table: str, noun: str) -> dict[str, str]:
    return {
        f"{table}_no_update": f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} FOR EACH ROW "
                              f"EXECUTE FUNCTION pressor_refuse('{noun} append-only: UPDATE refused')",
        f"{table}_no_delete": f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} FOR EACH ROW "
                              f"EXECUTE FUNCTION pressor_refuse('{noun} append-only: DELETE refused')",
        f"{table}_no_truncate": f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT "
                                f"EXECUTE FUNCTION pressor_refuse('{noun} append-only: TRUNCATE refused')",
    }


_TRIGGERS = {
    "records_append_at_head": "CREATE TRIGGER records_append_at_head BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION "
                              "pressor_append_at_head('audit records are append-only: a new record must extend the head of the chain')",
    "feedback_append_at_head": "CREATE TRIGGER feedback_append_at_head BEFORE INSERT ON feedback FOR EACH ROW EXECUTE FUNCTION "
                               "pressor_append_at_head('feedback entries are append-only: a new entry must extend the head of the chain')",
    **_refusals("records", "audit records are"), **_refusals("feedback", "feedback entries are"),
    **_refusals("packs", "stored rule packs are"), **_refusals("meta", "audit metadata is"),
    **_refusals("record_rules", "the rule index is"),
}
_PROFILES_TRIGGERS = _refusals("profiles", "stored site profiles are")


def redacted(url: str) -> str:
    """The URL without its password, for messages and ``verify --json``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # the optional dependency
        raise AuditError.single("a postgresql:// audit log needs the psycopg package, which is not installed",
                                suggestion="pip install 'pressor[postgresql]'") from exc
    return psycopg


def _failure(exc: BaseException, where: str, action: str) -> AuditError:
    psycopg = _psycopg()
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, psycopg.OperationalError):
        why, fix = "the audit database cannot be reached", f"check the server is up and the URL in --audit-db / {ENV_VAR} / audit_db"
    elif isinstance(exc, psycopg.errors.InsufficientPrivilege) or isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        why, fix = "the audit database refuses this user", "grant the user INSERT and SELECT on the audit tables"
    elif isinstance(exc, psycopg.errors.UndefinedTable) or isinstance(exc, psycopg.errors.UndefinedColumn):
        why, fix = "the audit database is damaged (its tables were altered)", "keep it for investigation; start a new log"
    elif isinstance(exc, psycopg.errors.IntegrityError):
        why, fix = "the audit database refused the write", "report this with the message above"
    elif isinstance(exc, psycopg.errors.QueryCanceled) or isinstance(exc, psycopg.errors.LockNotAvailable):
        why, fix = f"the audit log is locked by another writer (waited up to {BUSY_TIMEOUT_S:g} s)", "retry; look for a hung writer"
    else:
        why, fix = "the audit log failed", "report this with the message above"
    return AuditError([Problem(f"{why}; could not {action} ({text})", file=where, suggestion=fix)])


def connect(url: str, *, readonly: bool) -> Any:
    """One autocommit connection (transactions are explicit); read-only ones can never write."""
    psycopg = _psycopg()
    options = "-c default_transaction_read_only=on" if readonly else f"-c lock_timeout={int(BUSY_TIMEOUT_S * 1000)}"
    conn = psycopg.connect(url, autocommit=True, connect_timeout=int(BUSY_TIMEOUT_S), application_name="pressor",
                           options=options)
    return conn


#: Back-off between attempts to reconnect after the database went away: the first at once, then doubling.
RECONNECT_FIRST_S = 0.25
RECONNECT_MAX_S = 5.0


class Reconnecting:
    """One connection that is opened again when the database went away (a restart, a fail-over, a network
    cut), with back-off: an attempt at most every ``delay`` seconds, doubling to :data:`RECONNECT_MAX_S`
    while it fails. Between attempts a caller gets an ``OperationalError`` at once (no pile-up of
    connect time-outs). Before issue 24 one PostgreSQL restart kept every instance failing until pressor
    itself was restarted."""

    def __init__(self, url: str, conn: Any, *, readonly: bool, clock: Any = None) -> None:
        import time

        self.url, self.readonly, self._conn = url, readonly, conn
        self._clock = clock or time.monotonic
        self._delay = RECONNECT_FIRST_S
        self._next_try = 0.0
        self.reconnects = 0

    def get(self) -> Any:
        """The live connection, opened again if the last one broke (:class:`psycopg.OperationalError` if it cannot be now)."""
        conn = self._conn
        if conn is not None and not conn.closed and not getattr(conn, "broken", False):
            return conn
        psycopg = _psycopg()
        now = self._clock()
        if now < self._next_try:
            raise psycopg.OperationalError(f"the database is unavailable; the next attempt to reconnect is in "
                                           f"{self._next_try - now:.1f} s")
        if conn is not None:
            conn.close()
            self._conn = None
        try:
            self._conn = connect(self.url, readonly=self.readonly)
        except psycopg.Error:
            self._next_try = self._clock() + self._delay
            self._delay = min(self._delay * 2, RECONNECT_MAX_S)
            raise
        self._delay, self._next_try = RECONNECT_FIRST_S, 0.0
        self.reconnects += 1
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _sql(text: str) -> str:
    return text.replace("?", "%s")


class _PostgresTransaction:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        self._conn.execute(_sql(sql), args)

    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(_sql(sql), rows)

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        return self._conn.execute(_sql(sql), args).fetchone()


def _migrate(conn: Any) -> None:
    """Format 3, 4 or 5 to 6, under the write lock: the ``profiles`` table (records before it kept no profile),
    the ``records.patient`` column, the format-6 columns (NULL in the records before it, which keep their
    hashes). The format row is the one row of ``meta`` ever changed, with its trigger off for that moment."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        old = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0]
        if old not in ("3", "4", "5"):
            return  # another process migrated it meanwhile
        if old == "3":
            for sql in (_PROFILES_TABLE, *_PROFILES_TRIGGERS.values()):
                conn.execute(sql)
            conn.execute("INSERT INTO meta (key, value) SELECT 'profiles_stored_from', (COALESCE(MAX(seq), 0) + 1)::text FROM records")
        if old in ("3", "4"):
            conn.execute("ALTER TABLE records ADD COLUMN patient TEXT")
            conn.execute("CREATE INDEX records_patient ON records (patient)")
        for name in V6_ONLY:
            conn.execute(f"ALTER TABLE records ADD COLUMN {name} TEXT")
        conn.execute("ALTER TABLE meta DISABLE TRIGGER meta_no_update")
        conn.execute("UPDATE meta SET value = %s WHERE key = 'format'", (str(FORMAT),))
        conn.execute("ALTER TABLE meta ENABLE TRIGGER meta_no_update")


class PostgresAuditLog(AuditLog, opens="url"):
    """An audit log in a PostgreSQL database."""

    def __init__(self, url: str, conn: Any, database_id: str, fmt: int, profiles_stored_from: int | None, *,
                 readonly: bool = False) -> None:
        super().__init__()
        self.url = url
        self.path = redacted(url)
        self._link = Reconnecting(url, conn, readonly=readonly)
        self.database_id = database_id
        self.format = fmt
        self.profiles_stored_from = profiles_stored_from
        self.expected_triggers = frozenset(_TRIGGERS) | (frozenset(_PROFILES_TRIGGERS) if fmt >= 4 else frozenset())

    @classmethod
    def connect(cls, url: str, *, create: bool = True) -> "PostgresAuditLog":
        """Connect; ``create``: make the tables and triggers if the database has none yet."""
        psycopg = _psycopg()
        where = redacted(url)
        conn = None
        try:
            conn = connect(url, readonly=not create)
            exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
            if not exists and not create:
                raise AuditError.single("no audit log in this database", file=where,
                                        suggestion=f"pass --audit-db or set {ENV_VAR} to the log's URL")
            if not exists:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                    if not conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]:
                        for sql in (*_FUNCTIONS, *_TABLES, _PROFILES_TABLE, *_TRIGGERS.values(), *_PROFILES_TRIGGERS.values()):
                            conn.execute(sql)
                        conn.execute("INSERT INTO meta (key, value) VALUES ('format', %s), ('database_id', %s)",
                                     (str(FORMAT), str(uuid.uuid4())))
            fmt = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if create and fmt is not None and fmt[0] in ("3", "4", "5"):
                _migrate(conn)
            rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('format', 'database_id', 'profiles_stored_from')")
                        .fetchall())
            if rows.get("format") not in READABLE_FORMATS:
                raise AuditError.single(f"the audit log has format {rows.get('format')}; this pressor reads formats "
                                        f"{', '.join(READABLE_FORMATS)}", file=where, suggestion="use the pressor that wrote it")
            if "database_id" not in rows:
                raise AuditError.single("the audit log has no database id (damaged)", file=where)
            fmt_number = int(rows["format"])
            profiles_from = int(rows.get("profiles_stored_from", 1)) if fmt_number >= 4 else None
            return cls(url, conn, rows["database_id"], fmt_number, profiles_from, readonly=not create)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, psycopg.Error):
                raise _failure(exc, where, "open it") from exc
            raise

    @property
    def _conn(self) -> Any:
        """The live connection (opened again after the database went away)."""
        return self._link.get()

    def close(self) -> None:
        """Close the connection."""
        self._link.close()

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        psycopg = _psycopg()
        try:
            yield
        except AuditError:
            raise
        except psycopg.Error as exc:
            raise _failure(exc, self.path, action) from exc

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        # A server-side cursor: rows arrive a thousand at a time, whatever the size of the log.
        conn = self._conn
        with conn.transaction():
            with conn.cursor(name=f"pressor_{uuid.uuid4().hex}") as cur:
                cur.itersize = 1000
                cur.execute(_sql(sql), args)
                yield from cur

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        return self._conn.execute(_sql(sql), args).fetchone()

    @contextmanager
    def _write(self) -> Iterator[_PostgresTransaction]:
        conn = self._conn
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield _PostgresTransaction(conn)

    def _triggers_present(self) -> set[str]:
        return {r[0] for r in self._conn.execute(
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace")}


#: What the service's least-privilege role may do (docs/deploy.md): read and append the log; the
#: token replay cache also updates and sweeps its own expired rows. Nothing else: no DDL, so the
#: append-only triggers stay whatever the service is made to run.
SERVICE_GRANTS = {"meta": "SELECT, INSERT", "packs": "SELECT, INSERT", "records": "SELECT, INSERT",
                  "record_rules": "SELECT, INSERT", "feedback": "SELECT, INSERT", "profiles": "SELECT, INSERT",
                  "token_ids": "SELECT, INSERT, UPDATE, DELETE", "shown_cards": "SELECT, INSERT, UPDATE, DELETE"}


def create_shown_cards(url: str) -> None:
    """The table in which the CDS service remembers the cards it showed (service/repeats.py), created by the
    owner role (``pressor audit init``): the service's least-privilege role may use it but not create it."""
    with connect(url, readonly=False) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS shown_cards (patient TEXT NOT NULL, card_key TEXT NOT NULL, "
                     "signature TEXT NOT NULL, shown_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (patient, card_key))")


def grant_service_role(url: str, role: str) -> list[str]:
    """Grant ``role`` :data:`SERVICE_GRANTS` on the tables that exist (run as their owner); the statements run."""
    psycopg = _psycopg()
    from psycopg import sql

    done = []
    try:
        with connect(url, readonly=False) as conn:
            for table, privileges in SERVICE_GRANTS.items():
                if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]:
                    statement = sql.SQL(f"GRANT {privileges} ON {{}} TO {{}}").format(sql.Identifier(table), sql.Identifier(role))
                    conn.execute(statement)
                    done.append(statement.as_string(conn))
    except psycopg.Error as exc:
        raise _failure(exc, redacted(url), f"grant {role} its privileges") from exc
    return done
