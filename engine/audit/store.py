"""The audit log over any store: appending, reading (streamed), verifying, replaying, exporting.

A store (:mod:`.store_sqlite`, :mod:`.store_postgres`) supplies a handful of primitives: rows of
a query, a write transaction that holds the log's one write lock, the triggers present, and how
its errors read. Everything else, the hash chain first, is here, once.

Nothing here reads the wall clock: callers pass ``now``.
"""
from __future__ import annotations

import json
import os
import threading
import uuid
from collections import OrderedDict
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Protocol, TextIO

from ..errors import AuditError
from ..model import Result, RulePack
from .chain import Verification, head_problems
from .compression import PackCodec, UnreadableText, decode
from .records import (
    COLUMNS, FEEDBACK_COLUMNS, FEEDBACK_OUTCOMES, RECORD_FORMAT, SQL_COLUMNS, SQL_FEEDBACK_COLUMNS, GENESIS, INPUT_MODES, V6_ONLY, AuditRecord,
    FeedbackEntry, canonical_json, fired_rules, pack_files, record_from_row, record_row, sha256_text, utc_text,
    with_v6_fields,
)

#: Environment variable naming the audit log, a file or a ``postgresql://`` URL (overridden by an explicit one).
ENV_VAR = "PRESSOR_AUDIT_DB"
#: How long an append waits for another process holding the write lock.
BUSY_TIMEOUT_S = 10.0
#: Packs whose compression dictionaries an open log keeps (each a few MB; a log rarely holds more than a few packs).
CODEC_CACHE = 8
#: The first log format whose records can name their patient (the same number in both stores).
PATIENT_FORMAT = 5
#: The columns a listing reads (:meth:`AuditLog.summaries`): never the texts of a format-6 record.
SUMMARY_COLUMNS = ("seq", "id", "recorded_at", "user", "input_mode", "pack_name", "pack_version", "pack_sha256", "record_hash",
                   "patient", "hook_instance", "evaluated_at", "fired_json")
_COLUMN_FORMAT = {"hook_instance": 2, "patient": PATIENT_FORMAT, **{name: RECORD_FORMAT for name in V6_ONLY}}


def column_sql(name: str, fmt: int) -> str:
    """The SQL that reads column ``name`` from a log of format ``fmt`` (NULL where that format has no such column)."""
    return f"NULL AS {name}" if fmt < _COLUMN_FORMAT.get(name, 0) else f'"{name}"'


def record_select(fmt: int) -> str:
    """``SELECT`` every column of :data:`.records.COLUMNS` ``FROM records`` in a log of format ``fmt``."""
    return f"SELECT {', '.join(column_sql(c, fmt) for c in COLUMNS)} FROM records"

Progress = Callable[[int, int], None]


class Transaction(Protocol):
    """What a store's write transaction offers (SQL with ``?`` placeholders)."""

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> None: ...

    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None: ...


def is_url(target: str | os.PathLike[str]) -> bool:
    """True for a PostgreSQL connection URL (``postgresql://`` or ``postgres://``)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def default_path() -> Path:
    """``audit.db`` in the platform's user data directory for "pressor"."""
    import platformdirs

    return platformdirs.user_data_path("pressor", appauthor=False) / "audit.db"


def resolve_path(explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Any:
    """The audit log: ``explicit``, else ``$PRESSOR_AUDIT_DB``, else :func:`default_path`; a
    ``postgresql://`` URL stays a string, anything else is a file path."""
    value = explicit or (os.environ if environ is None else environ).get(ENV_VAR)
    if not value:
        return default_path()
    return str(value) if is_url(str(value)) else Path(value)


@dataclass(frozen=True)
class PreparedRecord:
    """One record ready to be chained and inserted (:meth:`AuditLog.prepare`)."""

    pack: RulePack
    record: AuditRecord
    rules: list[str]
    texts: tuple[bytes | None, bytes]
    files: Any  # the pack's files when the log did not hold the pack yet


class AuditLog:
    """An open audit log. Use :meth:`open`; close it (or use ``with``) when done."""

    #: The log's format (1 and 2: an older SQLite log opened read-only, never migrated then).
    format: int
    database_id: str
    #: A file path, or the URL without its password.
    path: Any
    #: Trigger names a store must have, by table.
    expected_triggers: frozenset[str]

    #: Records from this seq on have their site profile (if any) in ``profiles``; None: a log without that table.
    profiles_stored_from: int | None = None
    #: The record format appended (None: the log's own, 6 in a format-6 log). Tests and bench/audit.py set 5 to
    #: write records as pressor did before format 6 (a log of mixed formats, the baseline of a benchmark).
    write_format: int | None = None

    def _writes_v6(self) -> bool:
        return (self.write_format or self.format) >= RECORD_FORMAT

    def __init__(self) -> None:
        #: What a reader must be told about this log as it was opened (a part that could not be read).
        self.notes: list[str] = []
        #: Compression dictionaries by pack SHA-256, least recently used first (at most :data:`CODEC_CACHE`).
        self._codecs: OrderedDict[str, PackCodec] = OrderedDict()
        self._packs_held: set[str] = set()  # packs seen stored (never deleted: the triggers refuse it)
        self._reading = threading.Lock()  # what :meth:`prepare` reads, so that threads may prepare at once

    @staticmethod
    def open(target: str | os.PathLike[str], *, create: bool = True) -> "AuditLog":
        """Open the log at ``target``, a file path (SQLite) or a ``postgresql://`` URL;
        ``create``: creating (or migrating) it if needed, else strictly read-only.

        Raises :class:`AuditError` when it cannot be used, saying why and what to do.
        """
        if is_url(str(target)):
            return AuditLog._stores["url"].connect(str(target), create=create)
        return AuditLog._stores["file"].connect(Path(target), create=create)

    #: The stores by what they open ("file" or "url"): each registers itself when it is defined
    #: (``class SqliteAuditLog(AuditLog, opens="file")``), so this module never imports them.
    _stores: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, *, opens: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if opens is not None:
            AuditLog._stores[opens] = cls

    @property
    def where(self) -> str:
        """The log's location for messages."""
        return str(self.path)

    # -- what a store provides ------------------------------------------------
    def close(self) -> None:
        """Release the connection."""
        raise NotImplementedError

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of a query, fetched as they are read (memory stays flat)."""
        raise NotImplementedError

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        """The first row of a query."""
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Transaction]:
        """One transaction holding the log's write lock: committed whole, or rolled back."""
        raise NotImplementedError

    def _translated(self, action: str) -> AbstractContextManager[None]:
        """Turn the store's errors into :class:`AuditError`, keeping the cause."""
        raise NotImplementedError

    def _triggers_present(self) -> set[str]:
        raise NotImplementedError

    #: The SQL function that lower-cases any letter (SQLite's LOWER folds ASCII only: its store registers one).
    _lower = "LOWER"

    def _record_select(self) -> str:
        return record_select(self.format)

    def _since_hint(self) -> str:
        """What follows the FROM of a ``since`` query so that the store reads the ``recorded_at`` index."""
        return ""

    def _rule_clauses(self, rule: str, where: list[str], args: list[Any]) -> list[tuple[str, tuple[Any, ...]]]:
        """WHERE clauses with their arguments (covering consecutive runs of seq, in order) for the records in
        which ``rule`` fired."""
        return [(" AND ".join([*where, "seq IN (SELECT seq FROM record_rules WHERE rule_id = ?)"]), (*args, rule))]

    # -- with ``with`` --------------------------------------------------------
    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing --------------------------------------------------------------
    def append(self, pack: RulePack, state: Any, result: Result, *, now: datetime, user: str,
               input_mode: str = "full", hook_instance: str | None = None, patient: str | None = None) -> AuditRecord:
        """Record one evaluation; atomic (all of it or nothing) and safe across processes.

        ``now`` is the time of recording (the Result keeps its own ``evaluated_at``);
        ``input_mode`` "hash" keeps only the input's SHA-256 (no patient data stored);
        ``hook_instance``: the CDS Hooks call, when the service asked.
        """
        prepared = self.prepare(pack, state, result, now=now, user=user, input_mode=input_mode,
                                hook_instance=hook_instance, patient=patient)
        return self.append_prepared([prepared])[0]

    def prepare(self, pack: RulePack, state: Any, result: Result, *, now: datetime, user: str,
                input_mode: str = "full", hook_instance: str | None = None, patient: str | None = None,
                result_dict: Mapping[str, Any] | None = None, record_id: str | None = None,
                suppressed: Any = None) -> "PreparedRecord":
        """Everything of one record that needs no write lock: its canonical JSON and its compressed texts (several
        threads may prepare at once: zstd and hashlib release the GIL).

        ``result_dict``: ``result.to_dict()`` when the caller has it already (the service serialises a result
        once, for its cards and its record); ``record_id``: the record's id when the caller gave it out already;
        ``suppressed``: the cards of the call not shown again (a JSON list; format 6 keeps it, hashed).
        """
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}")
        input_text = canonical_json(state)
        if result_dict is None:
            result_dict = result.to_dict()
        record = AuditRecord(
            seq=0, id=record_id or str(uuid.uuid4()), recorded_at=utc_text(now), user=user, input_mode=input_mode,
            input_json=input_text if input_mode == "full" else None, input_sha256=sha256_text(input_text),
            pack_name=pack.name, pack_version=pack.version, pack_sha256=pack.sha256,
            engine_version=result_dict["engine_version"], include_draft=bool(result_dict["include_draft"]),
            result_json=canonical_json(result_dict), prev_hash="", record_hash="", hook_instance=hook_instance,
            patient=patient,
        )
        rules = sorted({r["rule_id"] for r in result_dict.get("recommendations", [])})
        with self._translated("write the record"):
            # Read the pack's files and compress before taking the write lock (the pack's files once per pack).
            files = None if self._has_pack(pack.sha256) else pack_files(pack)
            texts = self.stored_texts(record, files=None if files is None else files["files"])
        if self._writes_v6():
            record = with_v6_fields(record, texts, result_dict, suppressed)
        return PreparedRecord(pack, record, rules, texts, files)

    def append_prepared(self, prepared: list["PreparedRecord"]) -> list[AuditRecord]:
        """Append prepared records in one transaction (group commit: one fsync for all of them), chained in
        the order given; all of them or none."""
        with self._translated("write the record"):
            with self._write() as tx:
                stored: set[str] = set()
                for item in prepared:
                    pack, profile = item.pack, item.pack.profile
                    if pack.sha256 not in stored:
                        stored.add(pack.sha256)
                        if item.files is not None and tx.one("SELECT 1 FROM packs WHERE sha256 = ?", (pack.sha256,)) is None:
                            tx.execute("INSERT INTO packs (sha256, name, version, files_json) VALUES (?, ?, ?, ?)",
                                       (pack.sha256, pack.name, pack.version, canonical_json(item.files)))
                        if profile is not None and tx.one("SELECT 1 FROM profiles WHERE sha256 = ?", (profile.sha256,)) is None:
                            tx.execute("INSERT INTO profiles (sha256, name, text) VALUES (?, ?, ?)",
                                       (profile.sha256, profile.name, profile.text))
                return self._insert(tx, [(item.record, item.rules, item.texts) for item in prepared], self._check_head(tx))

    def stored_texts(self, record: AuditRecord, *, files: Mapping[str, str] | None = None) -> tuple[bytes | None, bytes]:
        """The record's input and result as stored: compressed against its pack's dictionary
        (``files``: the pack's texts when it is not stored yet)."""
        try:
            codec = self._codec(record.pack_sha256, files)
        except UnreadableText as exc:
            raise AuditError.single(f"cannot compress the record against its stored rule pack: {exc}", file=self.where,
                                    suggestion="run `pressor audit verify`; keep the log for investigation") from exc
        return (None if record.input_json is None else codec.compress(record.input_json)), codec.compress(record.result_json)

    def _insert(self, tx: Transaction, records: list[tuple[AuditRecord, list[str], tuple[bytes | None, bytes]]],
                head: tuple[int, str] | None = None) -> list[AuditRecord]:
        """Chain ``(record, rules, texts)`` to the head (``head``: its seq and hash, if read already) in that order and
        insert them with ``texts`` (their stored input and result) and their rule index rows (inside ``tx``): two
        statements for all of them."""
        seq, prev = head or tx.one("SELECT seq, record_hash FROM records ORDER BY seq DESC LIMIT 1") or (0, GENESIS)
        out: list[AuditRecord] = []
        for record, _, _ in records:
            record = replace(record, seq=seq + 1, prev_hash=prev)
            out.append(replace(record, record_hash=record.compute_hash(self.database_id)))
            seq, prev = out[-1].seq, out[-1].record_hash
        tx.execute_many(f"INSERT INTO records ({SQL_COLUMNS}) VALUES ({', '.join('?' * len(COLUMNS))})",
                        [record_row(record, texts) for record, (_, _, texts) in zip(out, records)])
        rule_rows = [(rule, record.seq) for record, (_, rules, _) in zip(out, records) for rule in rules]
        if rule_rows:
            tx.execute_many("INSERT INTO record_rules (rule_id, seq) VALUES (?, ?)", rule_rows)
        return out

    def _check_head(self, tx: Transaction) -> tuple[int, str]:
        """The head's seq and hash, refusing to extend a chain whose head is broken (:func:`.chain.head_problems`). Only
        the head is read, so that an append costs the same at any length; ``audit verify`` walks the whole chain."""
        row = tx.one(self._record_select() + " ORDER BY seq DESC LIMIT 1")
        if row is None:
            return 0, GENESIS
        seq = row[0]
        before = tx.one("SELECT seq, record_hash FROM records WHERE seq < ? ORDER BY seq DESC LIMIT 1", (seq,))
        reasons = head_problems(row, before, self.database_id, self._record)
        if reasons:
            raise AuditError.single(
                f"the audit chain is broken at its last record #{seq}: {'; '.join(reasons)}; nothing more is appended to it",
                file=self.where,
                suggestion="run `pressor audit verify` to see what is damaged; keep the log unchanged for investigation and "
                           "tell whoever is responsible for it (see docs/audit.md, 'When the chain is broken'); record into a "
                           f"new log meanwhile (--audit-db NEW or {ENV_VAR})")
        return seq, row[COLUMNS.index("record_hash")]

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
        with self._translated("write the feedback"), self._write() as tx:
            head = tx.one("SELECT seq, record_hash FROM feedback ORDER BY seq DESC LIMIT 1")
            seq, prev = head if head else (0, GENESIS)
            for draft in drafts:
                entry = replace(draft, seq=seq + 1, prev_hash=prev)
                entry = replace(entry, record_hash=entry.compute_hash(self.database_id))
                tx.execute(f"INSERT INTO feedback ({SQL_FEEDBACK_COLUMNS}) "
                           f"VALUES ({', '.join('?' * len(FEEDBACK_COLUMNS))})",
                           tuple(getattr(entry, c) for c in FEEDBACK_COLUMNS))
                out.append(entry)
                seq, prev = entry.seq, entry.record_hash
        return out

    def _has_pack(self, sha: str) -> bool:
        with self._reading:
            if sha not in self._packs_held and self._one("SELECT 1 FROM packs WHERE sha256 = ?", (sha,)) is not None:
                self._packs_held.add(sha)
        return sha in self._packs_held

    def _codec(self, sha: str, files: Mapping[str, str] | None = None) -> PackCodec:
        """The codec of pack ``sha``: its dictionary made from the stored pack's files (``files``:
        the texts about to be stored). Raises :class:`UnreadableText` if the pack is not stored."""
        with self._reading:  # one thread at a time reads the stored pack and digests it
            codec = self._codecs.get(sha)
            if codec is not None:
                self._codecs.move_to_end(sha)
                return codec
            if files is None:
                row = self._one("SELECT files_json FROM packs WHERE sha256 = ?", (sha,))
                if row is None:
                    raise UnreadableText(f"its rule pack {sha[:12]} is not stored, and its texts are compressed against it")
                try:
                    files = json.loads(row[0])["files"]
                    if not isinstance(files, dict) or not all(isinstance(t, str) for t in files.values()):
                        raise TypeError
                except (ValueError, KeyError, TypeError) as exc:
                    raise UnreadableText(f"its stored rule pack {sha[:12]} is unreadable") from exc
            try:
                codec = PackCodec(files)
            except UnicodeError as exc:  # a stored pack edited into bytes that are no UTF-8 text
                raise UnreadableText(f"its stored rule pack {sha[:12]} is unreadable") from exc
            self._codecs[sha] = codec
            while len(self._codecs) > CODEC_CACHE:
                self._codecs.popitem(last=False)
            return codec

    def _record(self, row: tuple[Any, ...]) -> AuditRecord:
        """The record of a row; a stored text that cannot be read is a clear :class:`AuditError`."""
        try:
            return record_from_row(row, self._codec)
        except (UnreadableText, UnicodeError) as exc:
            seq, rid = row[0], row[1]
            raise AuditError.single(f"record #{seq} ({rid}): its stored input or result cannot be read ({exc})",
                                    file=self.where,
                                    suggestion="run `pressor audit verify` to see what is damaged; keep the log for investigation") from exc

    # -- reading --------------------------------------------------------------
    def records(self, *, since: datetime | None = None, until: datetime | None = None, rule: str | None = None,
                user: str | None = None, version: str | None = None, hooked: bool = False,
                newest_first: bool = False, limit: int | None = None,
                patient: tuple[str, ...] = ()) -> Iterator[AuditRecord]:
        """Records in sequence order (``newest_first``: the reverse), streamed; at most ``limit``.

        Filters, all in the query, so that only matching records are read and decompressed: ``since`` /
        ``until``: recorded at or after / at or before (index on ``recorded_at``); ``rule``: that rule
        fired (index ``record_rules``); ``user``: the user's name contains it (any case); ``version``: the
        pack version; ``hooked``: only those made for a CDS Hooks call; ``patient``: about one patient (any of
        these stored forms: its reference and its keyed hash)."""
        for row in self._filtered(self._record_select(), since, until, rule, user, version, hooked, newest_first, limit, patient):
            with self._translated("read the records"):  # its pack's dictionary is read from the store too
                record = self._record(row)
            yield record

    def summaries(self, *, since: datetime | None = None, until: datetime | None = None, rule: str | None = None,
                  user: str | None = None, version: str | None = None, hooked: bool = False,
                  newest_first: bool = False, limit: int | None = None,
                  patient: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
        """What ``audit list`` shows of each record :meth:`records` gives (same filters), as dicts: seq, id,
        recorded_at, user, evaluated_at, input_mode, pack, recommendations (``rule-id@version``), record_hash,
        and patient and hook_instance when set. A format-6 record is read from its columns alone (its texts are
        not even read from the store); an older one from its decompressed Result."""
        text = "CASE WHEN fired_json IS NULL THEN result_json END" if self.format >= RECORD_FORMAT else "result_json"
        select = f"SELECT {', '.join(column_sql(c, self.format) for c in SUMMARY_COLUMNS)}, {text} FROM records"
        for row in self._filtered(select, since, until, rule, user, version, hooked, newest_first, limit, patient):
            with self._translated("read the records"):
                summary = self._summary(row)
            yield summary

    def _filtered(self, select: str, since: datetime | None, until: datetime | None, rule: str | None, user: str | None,
                  version: str | None, hooked: bool, newest_first: bool, limit: int | None,
                  patient: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
        """The rows of ``select`` (``... FROM records``) that pass :meth:`records`' filters, in its order."""
        clauses = self._clauses(since, until, rule, user, version, hooked, patient)
        select += self._time_hint(since, until, rule)
        order = " ORDER BY seq DESC" if newest_first else " ORDER BY seq"
        left = limit
        with self._translated("read the records"):
            for clause, args in (reversed(clauses) if newest_first else clauses):
                if left is not None and left <= 0:
                    return
                sql = select + (f" WHERE {clause}" if clause else "") + order + ("" if left is None else f" LIMIT {int(left)}")
                for row in self._rows(sql, args):
                    if left is not None:
                        left -= 1
                    yield row

    def _summary(self, row: tuple[Any, ...]) -> dict[str, Any]:
        """One :meth:`summaries` dict from its row (:data:`SUMMARY_COLUMNS` and the stored Result of an older record)."""
        seq, rid, recorded_at, user, input_mode, pack_name, pack_version, pack_sha, record_hash, patient, hook, \
            evaluated_at, fired_json, stored = row
        try:
            if fired_json is None:  # before format 6: from the Result itself
                result = json.loads(decode(stored, lambda: self._codec(pack_sha)) or "{}")
                evaluated_at, fired = result.get("evaluated_at"), fired_rules(result)
            else:
                fired = json.loads(fired_json)
        except (UnreadableText, UnicodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise AuditError.single(f"record #{seq} ({rid}): its stored result cannot be read ({exc})", file=self.where,
                                    suggestion="run `pressor audit verify` to see what is damaged; keep the log for investigation") from exc
        return {"seq": seq, "id": rid, "recorded_at": recorded_at, "user": user, "evaluated_at": evaluated_at or None,
                "input_mode": input_mode, "pack": {"name": pack_name, "version": pack_version, "sha256": pack_sha},
                "recommendations": fired, "record_hash": record_hash, **({"patient": patient} if patient else {}),
                **({"hook_instance": hook} if hook else {})}

    def count_records(self, *, since: datetime | None = None, until: datetime | None = None, rule: str | None = None,
                      user: str | None = None, version: str | None = None, hooked: bool = False,
                      patient: tuple[str, ...] = ()) -> int:
        """How many records :meth:`records` would give with these filters (counted in the database)."""
        hint = self._time_hint(since, until, rule)
        total = 0
        with self._translated("count the records"):
            for clause, args in self._clauses(since, until, rule, user, version, hooked, patient):
                row = self._one(f"SELECT COUNT(*) FROM records{hint}" + (f" WHERE {clause}" if clause else ""), args)
                total += int(row[0]) if row else 0
        return total

    def _time_hint(self, since: datetime | None, until: datetime | None, rule: str | None) -> str:
        """The index hint of a query by time (none with a rule: the rule index leads)."""
        return self._since_hint() if (since is not None or until is not None) and rule is None else ""

    def _clauses(self, since: datetime | None, until: datetime | None, rule: str | None, user: str | None,
                 version: str | None, hooked: bool, patient: tuple[str, ...] = ()) -> list[tuple[str, tuple[Any, ...]]]:
        """The WHERE clauses (one per run of records, in sequence order) for :meth:`records`' filters."""
        where: list[str] = []
        args: list[Any] = []
        if patient:
            if self.format < PATIENT_FORMAT:
                return []
            where.append(f"patient IN ({', '.join('?' * len(patient))})")
            args.extend(patient)
        if hooked:
            if self.format < 2:
                return []
            where.append("hook_instance IS NOT NULL")
        if since is not None:
            where.append("recorded_at >= ?")
            args.append(utc_text(since))
        if until is not None:
            where.append("recorded_at <= ?")
            args.append(utc_text(until))
        if user:
            where.append(f"{self._lower}(\"user\") LIKE ? ESCAPE '\\'")
            escaped = user.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args.append(f"%{escaped}%")
        if version:
            where.append("pack_version = ?")
            args.append(version)
        if rule is not None:
            return self._rule_clauses(rule, where, args)
        return [(" AND ".join(where), tuple(args))]

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
        sql = (f"SELECT {SQL_FEEDBACK_COLUMNS} FROM feedback" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY seq")
        with self._translated("read the feedback"):
            for row in self._rows(sql, tuple(args)):
                yield FeedbackEntry(*row)

    def record(self, ref: str) -> AuditRecord:
        """The record with this id, or with the one id starting with ``ref``."""
        with self._translated("read the record"):
            row = self._one(self._record_select() + " WHERE id = ?", (ref,))
            if row is not None:
                return self._record(row)
            rows: list[tuple[Any, ...]] = []
            if ref and all(c in "0123456789abcdef-" for c in ref.lower()):
                rows = list(self._rows(self._record_select() + " WHERE id LIKE ? ORDER BY seq LIMIT 2", (ref.lower() + "%",)))
        if not rows:
            raise AuditError.single(f"no audit record '{ref}'", file=self.where, suggestion="see `pressor audit list`")
        if len(rows) > 1:
            raise AuditError.single(f"'{ref}' matches more than one record", file=self.where, suggestion="give more of the id")
        with self._translated("read the record"):  # its pack's dictionary is read from the store too
            return self._record(rows[0])

    def neighbours(self, seq: int) -> tuple[AuditRecord | None, AuditRecord | None]:
        """The records just before and just after ``seq`` in the chain (None at either end): two indexed
        reads, whatever the length of the log."""
        with self._translated("read the neighbouring records"):
            before = self._one(self._record_select() + " WHERE seq < ? ORDER BY seq DESC LIMIT 1", (seq,))
            after = self._one(self._record_select() + " WHERE seq > ? ORDER BY seq LIMIT 1", (seq,))
            return (None if before is None else self._record(before)), (None if after is None else self._record(after))

    def stored_profile(self, sha: str) -> str | None:
        """The text of a stored site profile (None when this log does not hold it)."""
        if self.profiles_stored_from is None:
            return None
        with self._translated("read the stored site profile"):
            row = self._one("SELECT text FROM profiles WHERE sha256 = ?", (sha,))
        return None if row is None else row[0]

    def stored_pack(self, sha: str) -> tuple[str, str, dict[str, str]]:
        """``(name, version, {file name: text})`` of a stored pack."""
        with self._translated("read the stored pack"):
            row = self._one("SELECT name, version, files_json FROM packs WHERE sha256 = ?", (sha,))
        if row is None:
            raise AuditError.single(f"rule pack {sha} is not stored in the audit log", file=self.where)
        return row[0], row[1], json.loads(row[2])["files"]

    def head(self) -> tuple[int, str | None, str]:
        """``(seq, id, record_hash)`` of the last record; ``(0, None, GENESIS)`` when empty."""
        with self._translated("read the head"):
            row = self._one("SELECT seq, id, record_hash FROM records ORDER BY seq DESC LIMIT 1")
        return (int(row[0]), row[1], row[2]) if row else (0, None, GENESIS)

    # -- checking -------------------------------------------------------------
    def verify(self, *, anchor: tuple[int, str] | None = None, progress: Progress | None = None,
               upto: int | None = None, deep: bool = False) -> Verification:
        """Walk the chain in sequence order, streamed; report every record that is wrong and why (see
        :func:`.chain.verify`: ``anchor``, ``progress``, ``upto``, ``deep``)."""
        from .chain import verify

        return verify(self, anchor=anchor, progress=progress, upto=upto, deep=deep)

    # -- replay and export ------------------------------------------------------
    def replay(self, ref: str, *, state: Any = None, profile_text: str | None = None) -> Any:
        """Evaluate a record again (see :func:`.replay.replay`); a :class:`.replay.Replay`."""
        from .replay import replay

        return replay(self, ref, state=state, profile_text=profile_text)

    def stored_pack_under(self, pack_sha: str, profile_sha: str | None = None) -> RulePack:
        """A stored pack, loaded with a stored site profile applied (see :func:`.replay.stored_pack_under`)."""
        from .replay import stored_pack_under

        return stored_pack_under(self, pack_sha, profile_sha)

    def export(self, fmt: str, out: TextIO, *, kind: str = "records", progress: Callable[[int], None] | None = None,
               texts: str = "clear") -> int:
        """Every record, feedback entry or stored pack to ``out``, streamed (see :func:`.export.export`); how many."""
        from .export import export

        return export(self, fmt, out, kind=kind, progress=progress, texts=texts)

    def stored_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every record's row as stored (:data:`.records.COLUMNS`; texts not decompressed), in sequence order."""
        with self._translated("read the records"):
            for row in self._rows(self._record_select() + " ORDER BY seq"):
                yield row

    def stored_packs(self) -> Iterator[tuple[str, str, str, str]]:
        """``(sha256, name, version, files_json)`` of every stored pack."""
        with self._translated("read the stored packs"):
            for row in self._rows("SELECT sha256, name, version, files_json FROM packs ORDER BY sha256"):
                yield row
