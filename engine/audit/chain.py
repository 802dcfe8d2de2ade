"""The hash chain: what breaks it at a record, what is wrong with a stored pack, and the outcome
of walking it (:class:`Verification`). The same for every store."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..evaluation.pack import pack_sha256
from .records import GENESIS, AuditRecord, FeedbackEntry, fired_rules, recorded_profile, sha256_text, stored_sha256, \
    v6_hashed


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
