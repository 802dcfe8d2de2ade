"""The hash chain: what breaks it at a record, what is wrong with a stored pack, walking it
(:func:`verify`, which is :meth:`.store.AuditLog.verify`) and the outcome (:class:`Verification`).
The same for every store."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..errors import AuditError
from ..evaluation.pack import pack_sha256
from .compression import UnreadableText
from .records import COLUMNS, GENESIS, AuditRecord, FeedbackEntry, fired_rules, record_from_row, recorded_profile, sha256_text, \
    stored_sha256, v6_hashed

if TYPE_CHECKING:
    from .store import AuditLog

Progress = Callable[[int, int], None]


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


def pack_problem(sha: str, files_json: str) -> str | None:
    """Why a stored pack does not match its SHA-256 (None when it does)."""
    try:
        files = json.loads(files_json)["files"]
        digest = pack_sha256({name: sha256_text(text) for name, text in files.items()})
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"its stored rule pack {sha[:12]} is unreadable"
    return None if digest == sha else f"its stored rule pack {sha[:12]} was altered (its files hash to {digest[:12]})"


def chain_problems(rec: AuditRecord | FeedbackEntry, database_id: str, expected_seq: int, expected_prev: str,
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


def record_problems(rec: AuditRecord, database_id: str, expected_seq: int, expected_prev: str, prev_seq: int) -> list[str]:
    """:func:`chain_problems` for a record, and its stored input against ``input_sha256``."""
    reasons = chain_problems(rec, database_id, expected_seq, expected_prev, prev_seq, "record")
    if rec.input_json is not None and sha256_text(rec.input_json) != rec.input_sha256:
        reasons.append("the stored input does not match its input_sha256")
    return reasons


def stored_problems(values: dict[str, Any], database_id: str, expected_seq: int, expected_prev: str, prev_seq: int) -> list[str]:
    """What breaks the chain at a format-6 record, from its stored row (``values``: column -> stored value), without
    decompressing anything: its place in the chain, its ``record_hash`` over :data:`.records.V6_FIELDS`, and its
    stored bytes against ``stored_sha256`` (which the hash covers). The texts
    those bytes decompress to are fixed by them and by the stored pack (whose SHA-256 the hash covers too):
    :func:`text_problems` checks them as well (``audit verify --deep``)."""
    seq = values["seq"]
    reasons = []
    if seq != expected_seq:
        reasons.append(f"sequence number {seq} follows #{prev_seq}: records are missing, inserted or reordered"
                       if prev_seq else f"the chain starts at #{seq}, not #1: records before it are missing")
    if values["prev_hash"] != expected_prev:
        before = f"record #{prev_seq}" if prev_seq else "the genesis (64 zeros)"
        reasons.append(f"prev_hash does not match {before}: the record before it was deleted, replaced or edited")
    try:
        digest = sha256_text(v6_hashed(values, database_id))
    except (TypeError, ValueError, UnicodeError):  # bytes where a text was, half a character: damaged
        digest = None
    if digest != values["record_hash"]:
        reasons.append("record_hash does not match the record's content: the record was edited")
    stored_input, stored_result = values["input_json"], values["result_json"]
    # Format 6 stores bytes (zstd frames) only: a text in their place (the same bytes, but read as a text of
    # formats 1-2 would be) is an edit too, and so is an input in hash mode or none in full mode.
    if (values["input_mode"] == "full") != (stored_input is not None) or not isinstance(stored_result, (bytes, memoryview)) \
            or not isinstance(stored_input, (bytes, memoryview, type(None))) \
            or stored_sha256(stored_input, stored_result) != values["stored_sha256"]:
        reasons.append("its stored input or result does not match its stored_sha256: the record was edited or damaged")
    return reasons


def head_problems(row: tuple[Any, ...], before: tuple[int, str] | None, database_id: str,
                  record_of: Callable[[tuple[Any, ...]], AuditRecord]) -> list[str]:
    """Why the head record (``row``, in :data:`.records.COLUMNS`) may not be extended: its content must still hash to
    its ``record_hash`` and its ``prev_hash`` must be the hash of the record before it (``before``: that record's seq
    and hash; None: none). ``record_of(row)`` reads a record of format 5 or older (its texts decompressed)."""
    prev_seq, prev_hash = before if before else (0, GENESIS)
    values = dict(zip(COLUMNS, row))
    try:
        if values["result_sha256"] is not None:  # format 6: nothing to decompress
            return stored_problems(values, database_id, prev_seq + 1, prev_hash, prev_seq)
        return record_problems(record_of(row), database_id, prev_seq + 1, prev_hash, prev_seq)
    except AuditError as exc:
        return [str(exc.problems[0].message) if exc.problems else str(exc)]


def text_problems(rec: AuditRecord) -> list[str]:
    """What is wrong with a format-6 record's texts, once decompressed: against ``input_sha256`` and
    ``result_sha256``, and the columns read from the Result (``evaluated_at``, the fired rules, the profile).
    The writer made them agree; only a writer at fault (or a flaw in the decompressor) could make them differ."""
    reasons = []
    if rec.input_json is not None and sha256_text(rec.input_json) != rec.input_sha256:
        reasons.append("the stored input does not match its input_sha256")
    if sha256_text(rec.result_json) != rec.result_sha256:
        reasons.append("the stored result does not match its result_sha256")
        return reasons
    try:
        result = json.loads(rec.result_json)
        profile = recorded_profile(result)
        if (str(result.get("evaluated_at") or ""), fired_rules(result), None if profile is None else profile["sha256"]) != (
                rec.evaluated_at, json.loads(rec.fired_json or "null"), rec.profile_sha256):
            reasons.append("evaluated_at, fired_json or profile_sha256 differ from the stored result")
    except (ValueError, TypeError, KeyError, AttributeError):
        reasons.append("the stored result is not a Result")
    return reasons


def feedback_problems(entry: FeedbackEntry, database_id: str, expected_seq: int, expected_prev: str, prev_seq: int) -> list[str]:
    """:func:`chain_problems` for a feedback entry, and its fields against the stored payload."""
    reasons = chain_problems(entry, database_id, expected_seq, expected_prev, prev_seq, "entry")
    try:
        payload = json.loads(entry.payload_json)
        if (payload.get("card"), payload.get("outcome"), payload.get("outcomeTimestamp")) != (
                entry.card_uuid, entry.outcome, entry.outcome_timestamp):
            reasons.append("card_uuid, outcome or outcome_timestamp differ from the stored payload")
    except (ValueError, AttributeError):
        reasons.append("the stored payload is not a JSON object")
    return reasons


def profile_problem(sha: str, text: str) -> str | None:
    """Why a stored site profile does not match its SHA-256 (None when it does)."""
    try:
        digest = sha256_text(text)
    except (UnicodeError, AttributeError):  # edited into bytes that are no UTF-8 text, or not a text at all
        return f"its stored site profile {sha[:12]} is unreadable"
    return None if digest == sha else f"its stored site profile {sha[:12]} was altered (its text hashes to {digest[:12]})"


# --- walking the chain: AuditLog.verify -------------------------------------------------------------

#: Progress is reported every this many entries.
PROGRESS_EVERY = 1000


def verify(log: "AuditLog", *, anchor: tuple[int, str] | None = None, progress: Progress | None = None,
           upto: int | None = None, deep: bool = False) -> Verification:
    """Walk the chain in sequence order, streamed; report every record that is wrong and why.

    ``anchor`` (seq, record_hash), published earlier, must still be in the chain: this is
    what catches a chain rebuilt from some record onwards, or a truncated tail.
    ``progress(done, total)`` is called every :data:`PROGRESS_EVERY` records. ``upto``: only
    the records up to that seq (what vouches for one record: ``audit show`` and ``replay``), and
    no feedback.

    A format-6 record is checked from its stored bytes, never decompressed (its hash covers their SHA-256:
    docs/audit.md); ``deep`` also decompresses its texts and checks them against their SHA-256 and the
    columns read from them (:func:`.chain.text_problems`), as every older record always is.
    """
    problems: list[ChainProblem] = [ChainProblem(None, None, (note,)) for note in log.notes]
    with log._translated("verify the chain"):
        missing = sorted(log.expected_triggers - log._triggers_present())
        if missing:
            problems.append(ChainProblem(None, None, (f"append-only triggers were removed: {', '.join(missing)}",)))
        bad_packs: dict[str, str | None] = {
            sha: pack_problem(sha, files_json) for sha, files_json in log._rows("SELECT sha256, files_json FROM packs")}
        profiles_from = log.profiles_stored_from
        bad_profiles: dict[str, str | None] = {} if profiles_from is None else {
            sha: profile_problem(sha, text) for sha, text in log._rows("SELECT sha256, text FROM profiles")}
        total = log.head()[0] if upto is None else upto
        head: tuple[int, str | None, str] = (0, None, GENESIS)
        expected_prev, expected_seq = GENESIS, 1
        anchored: str | None = None
        count = 0
        where, args = ("", ()) if upto is None else (" WHERE seq <= ?", (upto,))
        seq_at, id_at, hash_at, pack_at, profile_at = (COLUMNS.index(c) for c in (
            "seq", "id", "record_hash", "pack_sha256", "profile_sha256"))
        for row in log._rows(log._record_select() + where + " ORDER BY seq", args):
            count += 1
            values = dict(zip(COLUMNS, row))
            if values["result_sha256"] is not None:  # format 6: from the stored bytes, nothing decompressed
                seq, rid, record_hash, pack_sha = row[seq_at], row[id_at], row[hash_at], row[pack_at]
                reasons = stored_problems(values, log.database_id, expected_seq, expected_prev, head[0])
                if deep and not reasons:
                    try:
                        reasons = text_problems(record_from_row(row, log._codec))
                    except (ValueError, UnicodeError) as exc:
                        reasons = [f"its stored input or result is not readable ({exc}): the record was damaged"]
                profile = row[profile_at]
                if profile is not None and profiles_from is not None and seq >= profiles_from:
                    problem = bad_profiles.get(profile, f"its site profile {str(profile)[:12]} is missing from the stored profiles")
                    if problem:
                        reasons.append(problem)
                if pack_sha not in bad_packs:
                    reasons.append(f"its rule pack {str(pack_sha)[:12]} is missing from the stored packs")
                elif bad_packs[pack_sha]:
                    reasons.append(bad_packs[pack_sha])  # type: ignore[arg-type]
                if reasons:
                    problems.append(ChainProblem(seq, rid, tuple(reasons)))
                expected_prev, expected_seq, head = record_hash, seq + 1, (seq, rid, record_hash)
                if anchor is not None and seq == anchor[0]:
                    anchored = record_hash
                if progress is not None and count % PROGRESS_EVERY == 0:
                    progress(count, total)
                continue
            try:
                rec = record_from_row(row, log._codec)
                reasons = record_problems(rec, log.database_id, expected_seq, expected_prev, head[0])
                if profiles_from is not None and rec.seq >= profiles_from:
                    reasons += _profile_reasons(rec, bad_profiles)
            except (ValueError, UnicodeError) as exc:  # an edit that left bytes no text has, or its pack is missing
                rec = AuditRecord(**{**dict(zip(COLUMNS, row)), "input_json": None, "result_json": ""})
                why = f" ({exc})" if isinstance(exc, UnreadableText) else ""
                reasons = [f"its stored input or result is not readable{why}: the record was edited or damaged"]
                reasons += [r for r in record_problems(rec, log.database_id, expected_seq, expected_prev, head[0])
                            if "record_hash" not in r]
            if rec.pack_sha256 not in bad_packs:
                reasons.append(f"its rule pack {rec.pack_sha256[:12]} is missing from the stored packs")
            elif bad_packs[rec.pack_sha256]:
                reasons.append(bad_packs[rec.pack_sha256])  # type: ignore[arg-type]
            if reasons:
                problems.append(ChainProblem(rec.seq, rec.id, tuple(reasons)))
            expected_prev, expected_seq, head = rec.record_hash, rec.seq + 1, (rec.seq, rec.id, rec.record_hash)
            if anchor is not None and rec.seq == anchor[0]:
                anchored = rec.record_hash
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(count, total)
        feedback_count, feedback_head = _verify_feedback(log, problems) if upto is None else (0, (0, None, GENESIS))
    if anchor is not None:
        seq, expected = anchor
        if anchored is None:
            problems.append(ChainProblem(None, None, (f"anchor #{seq} is not in the chain: records were deleted from the end",)))
        elif anchored != expected:
            problems.append(ChainProblem(None, None, (
                f"record #{seq} no longer has the anchored hash {expected[:16]}...: the chain was rewritten",)))
    return Verification(log.database_id, count, head[0], head[1], head[2], tuple(problems),
                        feedback_count, feedback_head)

def _verify_feedback(log: "AuditLog", problems: list[ChainProblem]) -> tuple[int, tuple[int, str | None, str]]:
    """Walk the feedback chain like the records chain; append its problems. ``(count, head)``."""
    head: tuple[int, str | None, str] = (0, None, GENESIS)
    expected_prev, expected_seq = GENESIS, 1
    count = 0
    for entry in log.feedback():
        count += 1
        reasons = feedback_problems(entry, log.database_id, expected_seq, expected_prev, head[0])
        if reasons:
            problems.append(ChainProblem(entry.seq, entry.id, tuple(reasons), kind="feedback"))
        expected_prev, expected_seq, head = entry.record_hash, entry.seq + 1, (entry.seq, entry.id, entry.record_hash)
    return count, head


def _profile_reasons(rec: AuditRecord, bad_profiles: Mapping[str, str | None]) -> list[str]:
    """What is wrong with the stored site profile a record names (its Result, which is hashed, names it)."""
    if '"profile":{' not in rec.result_json:  # most records have none: skip parsing the Result
        return []
    profile = recorded_profile(rec.result)
    if profile is None:
        return []
    sha = profile["sha256"]
    if sha not in bad_profiles:
        return [f"its site profile {sha[:12]} is missing from the stored profiles"]
    problem = bad_profiles[sha]
    return [problem] if problem else []
