"""Replay: evaluate a record again from its stored pack and input, and compare the Results."""
from __future__ import annotations

import json
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AuditError, InputError, PatientStateError, Problem, RuleFileError
from ..model import RulePack
from .records import AuditRecord, canonical_json, legacy_canonical_json, recorded_profile, sha256_text

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


def replay(log: "AuditLog", ref: str, *, state: Any = None, profile_text: str | None = None) -> Replay:
    """Evaluate a record again: its stored pack and site profile, input, ``evaluated_at`` and draft flag.

    A record kept in hash mode has no input: pass the original ``state`` (its SHA-256
    must match the recorded one) or it cannot be replayed. A record made under a site profile
    before the log stored profiles needs ``profile_text`` (its SHA-256 must match the recorded one).
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
    stored = record.result
    pack = replay_pack(log, record, stored, profile_text)
    evaluated_at = datetime.fromisoformat(stored["evaluated_at"].replace("Z", "+00:00"))
    try:
        fresh = evaluate(pack, state, now=evaluated_at, include_draft=record.include_draft)
    except PatientStateError as exc:
        raise AuditError([Problem(f"the input of record #{record.seq} is rejected by this pressor version"),
                          *exc.problems]) from exc
    replayed = json.loads(canonical_json(fresh.to_dict()))
    return Replay(record, tuple(json_diff(stored, replayed)))


def replay_pack(log: "AuditLog", record: AuditRecord, result: dict[str, Any] | None = None,
                profile_text: str | None = None) -> RulePack:
    """The record's pack with its site profile (see :func:`rebuilt_pack`). ``result``: the record's
    parsed Result; ``profile_text``: the profile when the log does not hold it."""
    profile = recorded_profile(record.result if result is None else result)
    if profile is not None:
        profile_text = _profile_text(log, record, profile, profile_text)
    return rebuilt_pack(log, record.pack_sha256, profile_text, of=f"record #{record.seq}")


def stored_pack_under(log: "AuditLog", pack_sha: str, profile_sha: str | None = None) -> RulePack:
    """A pack stored in the log with a site profile stored in the log applied (``profile_sha`` None:
    the pack's own parameter values): what a record made under that pack and profile was evaluated with."""
    profile_text = None
    if profile_sha is not None:
        profile_text = log.stored_profile(profile_sha)
        if profile_text is None:
            raise AuditError.single(f"site profile {profile_sha} is not stored in the audit log (a record made "
                                    "before the log stored profiles names one it does not hold)", file=log.where,
                                    suggestion="replay such a record with `pressor audit replay ID --profile FILE`")
        if sha256_text(profile_text) != profile_sha:
            raise AuditError.single(f"the stored site profile {profile_sha[:12]} was altered (its text no longer hashes "
                                    "to its SHA-256)", file=log.where,
                                    suggestion="run `pressor audit verify`; keep the log for investigation")
    return rebuilt_pack(log, pack_sha, profile_text, of=f"stored pack {pack_sha[:12]}")


#: Packs rebuilt for replay, by SHA-256 (and the site profile's), for the life of the process: a pack and a
#: profile with these hashes are the same whichever log holds them, a log opened per request (the web app)
#: would otherwise rebuild and compile the pack each time, and durable-rules cannot free a compiled pack
#: safely and completely. A log holds a few packs (versions times profiles), so this stays small.
_REBUILT: dict[str, RulePack] = {}
_REBUILT_LOCK = threading.Lock()


def rebuilt_pack(log: "AuditLog", pack_sha: str, profile_text: str | None, *, of: str) -> RulePack:
    """A stored pack with ``profile_text`` (a site profile) applied, rebuilt from the stored texts in a
    temporary directory and loaded (once per process, see :data:`_REBUILT`). ``of`` names what asked,
    for the errors."""
    from ..evaluation.pack import pack_sha256

    key = pack_sha + (f"+{sha256_text(profile_text)}" if profile_text is not None else "")
    _, _, files = log.stored_pack(pack_sha)
    # What this log stores must still be that pack, even when the pack was rebuilt before (a few ms)
    if pack_sha256({name: sha256_text(text) for name, text in files.items()}) != pack_sha:
        raise AuditError.single(f"the stored rule pack {pack_sha[:12]} of {of} was altered (its files no longer hash "
                                "to its SHA-256)", file=log.where,
                                suggestion="run `pressor audit verify`; keep the log for investigation")
    with _REBUILT_LOCK:
        pack = _REBUILT.get(key)
        if pack is None:
            pack = _REBUILT[key] = _rebuild(log, pack_sha, files, profile_text, of=of)
    return pack


def _rebuild(log: "AuditLog", pack_sha: str, files: dict[str, str], profile_text: str | None, *, of: str) -> RulePack:
    from ..evaluation.pack import load_pack

    with tempfile.TemporaryDirectory(prefix="pressor-replay-") as tmp:
        directory = Path(tmp, "pack")
        directory.mkdir()
        for name, text in files.items():
            if Path(name).name != name:
                raise AuditError.single(f"stored pack file name '{name}' is not a plain file name", file=log.where)
            # newline="": write the text back byte for byte, so that the pack hashes the same.
            with open(directory / name, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        profile_path = None
        if profile_text is not None:
            profile_path = Path(tmp, "profile.yaml")
            with open(profile_path, "w", encoding="utf-8", newline="") as fh:
                fh.write(profile_text)
        try:
            pack = load_pack(directory, profile=profile_path, cache=False)  # a temporary directory: never loaded again
        except (RuleFileError, InputError) as exc:
            what = "rule pack" if isinstance(exc, RuleFileError) else "site profile"
            raise AuditError([Problem(f"the {what} of {of} no longer loads in this pressor version"),
                              *exc.problems]) from exc
    if pack.sha256 != pack_sha:
        raise AuditError.single(f"the rebuilt pack hashes to {pack.sha256}, not the recorded {pack_sha}",
                                file=log.where)
    return pack


def _profile_text(log: "AuditLog", record: AuditRecord, profile: dict[str, Any], supplied: str | None) -> str:
    """The text of the site profile a record was made under: stored in the log, else ``supplied``."""
    sha = profile["sha256"]
    stored = log.stored_profile(sha)
    if stored is not None:
        if sha256_text(stored) != sha:
            raise AuditError.single(f"the stored site profile {sha[:12]} of record #{record.seq} was altered "
                                    "(its text no longer hashes to the recorded SHA-256)", file=log.where,
                                    suggestion="run `pressor audit verify`; keep the log for investigation")
        return stored
    if supplied is None:
        raise AuditError.single(
            f"record #{record.seq} was made under site profile '{profile.get('name')}', which this log does not hold "
            "(it was recorded before pressor stored profiles with records)", file=log.where,
            suggestion=f"pass the profile file with --profile FILE (its SHA-256 must be {sha})")
    if sha256_text(supplied) != sha:
        raise AuditError.single(f"this site profile is not the one record #{record.seq} was made under (SHA-256 differs)",
                                suggestion=f"the recorded profile has SHA-256 {sha}")
    return supplied
