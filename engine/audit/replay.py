"""Replay: evaluate a record again from its stored pack and input, and compare the Results."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AuditError, PatientStateError, Problem, RuleFileError
from ..model import RulePack
from .records import AuditRecord, canonical_json, legacy_canonical_json, sha256_text

if TYPE_CHECKING:
    from .store import AuditLog


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
    if _number(stored) and _number(replayed) and stored == replayed:
        return []  # JSON has one number type: 36.0 (an older log's text) is 36 (JCS)
    return [Difference(pointer or "/", stored, replayed)]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def replay(log: "AuditLog", ref: str, *, state: Any = None) -> Replay:
    """Evaluate a record again: its stored pack, input, ``evaluated_at`` and draft flag.

    A record kept in hash mode has no input: pass the original ``state`` (its SHA-256
    must match the recorded one) or it cannot be replayed.
    """
    from ..evaluation.evaluate import evaluate

    record = log.record(ref)
    if state is None:
        if record.input_json is None:
            raise AuditError.single(
                f"record #{record.seq} cannot be replayed: it was recorded with --audit-input hash, "
                "so only the SHA-256 of its input was kept, not the input itself",
                file=log.where,
                suggestion=f"pass the original input with --input FILE (its SHA-256 must be {record.input_sha256})")
        state = json.loads(record.input_json)
    elif record.input_sha256 not in (sha256_text(canonical_json(state)), sha256_text(legacy_canonical_json(state))):
        # JCS since format 3; an older record hashed Python's sorted JSON.
        raise AuditError.single(f"this input is not the one record #{record.seq} was made from (SHA-256 differs)",
                                suggestion=f"the recorded input has SHA-256 {record.input_sha256}")
    pack = replay_pack(log, record)
    stored = record.result
    evaluated_at = datetime.fromisoformat(stored["evaluated_at"].replace("Z", "+00:00"))
    try:
        fresh = evaluate(pack, state, now=evaluated_at, include_draft=record.include_draft)
    except PatientStateError as exc:
        raise AuditError([Problem(f"the input of record #{record.seq} is rejected by this pressor version"),
                          *exc.problems]) from exc
    replayed = json.loads(canonical_json(fresh.to_dict()))
    return Replay(record, tuple(json_diff(stored, replayed)))


def replay_pack(log: "AuditLog", record: AuditRecord) -> RulePack:
    """The record's pack, rebuilt from the stored texts in a temporary directory and loaded
    (once per open log: durable-rules cannot free a compiled pack safely and completely)."""
    from ..evaluation.pack import load_pack

    pack = log.replay_packs.get(record.pack_sha256)
    if pack is not None:
        return pack
    _, _, files = log.stored_pack(record.pack_sha256)
    with tempfile.TemporaryDirectory(prefix="pressor-replay-") as tmp:
        for name, text in files.items():
            if Path(name).name != name:
                raise AuditError.single(f"stored pack file name '{name}' is not a plain file name", file=log.where)
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
                                file=log.where)
    log.replay_packs[record.pack_sha256] = pack
    return pack
