"""What the audit log holds, independent of where: records, feedback entries, canonical JSON
(RFC 8785, JCS) and the SHA-256 over it, and rows with their large texts in stored form
(:mod:`.compression`).

Nothing here reads the wall clock or touches storage.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from json.encoder import encode_basestring as _json_string  # the C function json.dumps uses (ensure_ascii=False)
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import orjson

from ..errors import AuditError
from ..model import RulePack
from .compression import PackCodec, decode

#: ``prev_hash`` of the first record of every log.
GENESIS = "0" * 64
INPUT_MODES = ("full", "hash")
FEEDBACK_OUTCOMES = ("accepted", "overridden")


# --- canonical JSON -----------------------------------------------------------


class _Exotic(Exception):
    """A value the fast path cannot serialise as JCS (an exponent-form number, a non-BMP key)."""


def _normal(value: Any) -> Any:
    """``value`` with every number in its JCS form, and dicts in JCS key order (UTF-16 code units);
    raises :class:`_Exotic` where only the slow serialiser can say it."""
    kind = type(value)
    if kind is dict:
        keys = list(value)
        for key in keys:
            if type(key) is not str:
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
            if not key.isascii() and max(key) > "\uffff":
                raise _Exotic
        keys.sort()
        return {k: _normal(value[k]) for k in keys}
    if kind is list or kind is tuple:
        return [_normal(v) for v in value]
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a JSON number")
        if value.is_integer() and abs(value) <= 2**53:
            return int(value)  # 36.0 -> 36, -0.0 -> 0 (exact below 2**53; above, ES6 prints fewer digits)
        if value.is_integer() or "e" in repr(value):
            raise _Exotic
        return value  # Python's shortest repr, positional: the same digits as ES6
    if kind is int and abs(value) > 2**53:
        raise _Exotic
    return value


def _es6_number(value: float) -> str:
    """ECMAScript's Number::toString (what JCS prescribes) for a finite double."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp = repr(abs(value)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    n = len(whole) + int(exp or 0) - (len(whole + frac) - len(digits))
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    body = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{body}e{'+' if e > 0 else '-'}{abs(e)}"


def _jcs_slow(value: Any) -> str:
    """The full JCS serialiser, for values the fast path refuses."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0].encode("utf-16-be"))
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{_jcs_slow(v)}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_jcs_slow(v) for v in value) + "]"
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{value} is not a JSON number")
        return _es6_number(number)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _reference_json(value: Any) -> str:
    """What :func:`canonical_json` gives, written by :mod:`json` (and :func:`_jcs_slow`): the reference its
    orjson path must equal byte for byte, and what writes (or refuses) anything that path leaves to it."""
    try:
        normal = _normal(value)
    except _Exotic:
        return _jcs_slow(value)
    return json.dumps(normal, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_SAFE_INT = 2**53
#: A 4-byte UTF-8 sequence: a character beyond the BMP, where UTF-16 order may differ from orjson's.
_NON_BMP = re.compile(rb"[\xf0-\xff]")


def _float_ready(value: float) -> Any:
    """A float as JCS writes it: an integral one as an int, any other as a :class:`orjson.Fragment` of its ``repr``
    (what :mod:`json` writes); :class:`_Exotic` for an exponent form, NaN or infinity."""
    if value.is_integer() and -_SAFE_INT <= value <= _SAFE_INT:
        return int(value)
    text = repr(value)
    if not math.isfinite(value) or "e" in text or value.is_integer():
        raise _Exotic
    return orjson.Fragment(text)


def _orjson_ready(value: Any) -> Any:
    """``value`` with each float as JCS writes it (:func:`_float_ready`), copying only the containers on the way to
    a float; raises :class:`_Exotic` at anything only :func:`_reference_json` may judge: a type other than exactly
    dict, list, tuple, str, int, float, bool or None, a number beyond 2**53, an exponent form, NaN.

    Members that are strings, booleans, None or ints are judged in the loop, without a call (most of a Result):
    this walk is most of the CPU of :func:`canonical_json` on a Result."""
    kind = type(value)
    if kind is dict:
        members: Any = value.items()
    elif kind is list or kind is tuple:
        members = enumerate(value)
    elif kind is float:
        return _float_ready(value)
    elif kind is int:
        if -_SAFE_INT <= value <= _SAFE_INT:
            return value
        raise _Exotic
    elif kind is str or kind is bool or value is None:
        return value
    else:
        raise _Exotic
    copy = None
    for key, item in members:
        inner = type(item)
        if inner is str or inner is bool or item is None:
            continue
        if inner is int:
            if -_SAFE_INT <= item <= _SAFE_INT:
                continue
            raise _Exotic
        ready = _float_ready(item) if inner is float else _orjson_ready(item)
        if ready is not item:
            if copy is None:
                copy = dict(value) if kind is dict else list(value)
            copy[key] = ready
    return value if copy is None else copy


def canonical_json(value: Any) -> str:
    """RFC 8785 (JCS): keys sorted by UTF-16 code units, no whitespace, numbers as ECMAScript prints
    them (``36.0`` -> ``36``, ``1e-7``), strings with JSON's minimal escapes, UTF-8 kept. Hash its
    UTF-8 encoding; any JCS implementation, in any language, gives the same bytes.

    Written by orjson (sorted keys; its string escapes are :mod:`json`'s for every character), a fifth of the
    time of :mod:`json`, except where it could differ from :func:`_reference_json`, which then writes it (or
    raises): anything :func:`_orjson_ready` refuses, anything orjson refuses (a non-str key, depth beyond 254,
    a lone surrogate), and a text with a character beyond the BMP (UTF-16 order)."""
    try:
        data = orjson.dumps(_orjson_ready(value), option=orjson.OPT_SORT_KEYS)
    except (_Exotic, orjson.JSONEncodeError, RecursionError):
        return _reference_json(value)
    if not data.isascii() and _NON_BMP.search(data):
        return _reference_json(value)
    return data.decode("utf-8")


def legacy_canonical_json(value: Any) -> str:
    """What format-1 and -2 logs stored and hashed (Python's sorted, compact JSON): kept so that an
    input supplied to replay an old hash-mode record can still be matched."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_text(text: str) -> str:
    """Hex SHA-256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def utc_text(moment: datetime) -> str:
    """``2026-11-24T12:00:00.000000Z``: fixed width, so text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("the audit clock needs a timezone-aware datetime")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    #: Whom the advice was about (CDS Hooks: ``Patient/{context.patientId}``, or its keyed hash
    #: ``hmac-sha256:...`` where the site keeps no identifiers in the log); None from the CLI and before format 5.
    patient: str | None = None
    # -- record format 6 (None in records made before it): what the hash covers instead of the texts --
    #: SHA-256 of ``result_json`` (the Result's canonical JSON).
    result_sha256: str | None = None
    #: SHA-256 of the stored bytes of the input and the Result (their zstd frames): :func:`stored_sha256`.
    stored_sha256: str | None = None
    #: The Result's ``evaluated_at``, and ``rule-id@version`` of every recommendation (canonical JSON array), kept
    #: beside it so that listing and filtering never decompress.
    evaluated_at: str | None = None
    fired_json: str | None = None
    #: The SHA-256 of the site profile the Result names, if any.
    profile_sha256: str | None = None
    #: The cards of the call not shown again (the repeat window), canonical JSON; None when none were.
    suppressed_json: str | None = None

    @property
    def format(self) -> int:
        """6 for a record hashed over its stored bytes (:data:`V6_FIELDS`); 5 for one hashed over its texts (formats 1-5)."""
        return 6 if self.result_sha256 is not None else 5

    def hashed(self, database_id: str) -> str:
        """The canonical JSON that ``record_hash`` is the SHA-256 of.

        Format 6: :data:`V6_FIELDS` (the texts by their SHA-256 and their stored bytes by theirs; see
        :func:`v6_hashed`). Before: every field, the texts included (``hook_instance`` and ``patient`` only
        when set, so that records made before they existed keep their hash)."""
        if self.result_sha256 is not None:
            return v6_hashed({name: getattr(self, name) for name in V6_FIELDS}, database_id)
        data = self.to_dict(parsed=False)
        del data["record_hash"]
        for name in V6_ONLY:
            data.pop(name, None)
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
    def profile(self) -> dict[str, Any] | None:
        """The site profile the record was made under (``name``, ``sha256``, ``changed``), if any."""
        return recorded_profile(self.result)

    @property
    def input(self) -> Any:
        """The stored input, parsed (None in hash mode)."""
        return None if self.input_json is None else json.loads(self.input_json)

    def fired(self) -> list[str]:
        """``rule-id@version`` of every recommendation in the stored Result."""
        return fired_rules(self.result)

    def to_dict(self, *, parsed: bool = True) -> dict[str, Any]:
        """JSON-ready. ``parsed``: input and result as objects; otherwise the exact stored texts
        (what an outside verifier must hash)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for optional in ("hook_instance", "patient", *V6_ONLY):
            if data[optional] is None:
                del data[optional]
        if self.result_sha256 is not None:  # what tells an outside verifier which fields the hash covers
            data["record_format"] = RECORD_FORMAT
        if parsed:
            data["input"] = self.input
            data["result"] = self.result
            del data["input_json"], data["result_json"]
        return data


def patient_key(patient_id: str, key: bytes | None) -> str:
    """What a record keeps of the patient: ``Patient/{id}``, or with ``key`` (a site secret) its keyed hash
    ``hmac-sha256:{hex}``, which names the same patient in every record without identifying them to
    anyone who lacks the key."""
    import hmac

    reference = patient_id if patient_id.startswith("Patient/") else f"Patient/{patient_id}"
    if key is None:
        return reference
    return "hmac-sha256:" + hmac.new(key, reference.encode("utf-8"), hashlib.sha256).hexdigest()


#: Where the site's patient key is read by those who search the log (the service may read it from a file).
PATIENT_KEY_ENV = "PRESSOR_AUDIT_PATIENT_KEY"


def patient_forms(patient: str | None, key: bytes | None = None) -> tuple[str, ...]:
    """The stored forms that name ``patient`` (``ID`` or ``Patient/ID``): its reference and, with the site's
    ``key``, its keyed hash; a stored ``hmac-sha256:...`` value is taken as it is. Empty for no patient."""
    if not patient:
        return ()
    if patient.startswith("hmac-sha256:"):
        return (patient,)
    return tuple(dict.fromkeys([patient_key(patient, None)] + ([patient_key(patient, key)] if key else [])))


def recorded_profile(result: Any) -> dict[str, Any] | None:
    """The site profile a stored Result names (``name``, ``sha256``, ``changed``), if any."""
    pack = result.get("pack") if isinstance(result, dict) else None
    profile = pack.get("profile") if isinstance(pack, dict) else None
    return profile if isinstance(profile, dict) and isinstance(profile.get("sha256"), str) else None


def fired_rules(result: dict[str, Any]) -> list[str]:
    """``rule-id@version`` of every recommendation in a Result."""
    return [f"{r['rule_id']}@{r['rule_version']}" for r in result.get("recommendations", [])]


COLUMNS = tuple(f.name for f in fields(AuditRecord))
#: The columns for SQL, quoted (``user`` is a reserved word in PostgreSQL).
SQL_COLUMNS = ", ".join(f'"{c}"' for c in COLUMNS)
#: The columns record format 6 added (None in older records).
V6_ONLY = ("result_sha256", "stored_sha256", "evaluated_at", "fired_json", "profile_sha256", "suppressed_json")
#: What a format-6 ``record_hash`` covers: every column but the texts themselves and the hash (the texts are
#: covered by ``input_sha256`` / ``result_sha256`` and their stored bytes by ``stored_sha256``).
V6_FIELDS = tuple(c for c in COLUMNS if c not in ("input_json", "result_json", "record_hash"))
#: The first record format hashed over the stored bytes.
RECORD_FORMAT = 6
_V6_SKIP_IF_NONE = frozenset(("hook_instance", "patient", "profile_sha256", "suppressed_json"))
#: The keys of a format-6 hash in JCS order (all ASCII: sorted code points).
_V6_ORDER = tuple(sorted((*V6_FIELDS, "database_id", "record_format")))


def v6_hashed(values: Mapping[str, Any], database_id: str) -> str:
    """The canonical JSON (RFC 8785) a format-6 ``record_hash`` is the SHA-256 of: :data:`V6_FIELDS` of ``values``
    (those in ``_V6_SKIP_IF_NONE`` only when set), ``database_id``, and ``"record_format": 6``.

    Every key is ASCII (so sorted by code point is JCS order) and every value a string, a small integer, a
    boolean or null, so the text is written here directly, each string with JSON's minimal escapes as
    :func:`canonical_json` writes it (the same C function); the same bytes, a third of the time of
    ``json.dumps``: this is what ``verify`` computes for every record. Anything else (bytes where a text was,
    in a damaged row) raises :class:`TypeError`."""
    parts = []
    for key in _V6_ORDER:
        value: Any = database_id if key == "database_id" else RECORD_FORMAT if key == "record_format" else values[key]
        kind = type(value)
        if kind is str:
            text = _json_string(value)
        elif value is None:
            if key in _V6_SKIP_IF_NONE:
                continue
            text = "null"
        elif key == "include_draft":
            text = "true" if value else "false"  # SQLite gives 0 or 1
        elif kind is int and abs(value) <= 2**53:
            text = str(value)
        elif kind is bool:
            text = "true" if value else "false"
        else:
            raise TypeError(f"{key} holds a {kind.__name__}")
        parts.append(f'"{key}":{text}')
    return "{" + ",".join(parts) + "}"


def stored_sha256(stored_input: bytes | memoryview | None, stored_result: bytes | memoryview) -> str:
    """``stored_sha256`` of a format-6 record: the SHA-256 of the input's stored bytes' length (8 bytes, big-endian;
    0 in hash mode), the input's stored bytes, then the Result's (the length fixes where one ends)."""
    digest = hashlib.sha256(len(stored_input or b"").to_bytes(8, "big"))
    digest.update(stored_input or b"")
    digest.update(stored_result)
    return digest.hexdigest()


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


FEEDBACK_COLUMNS = tuple(f.name for f in fields(FeedbackEntry))
SQL_FEEDBACK_COLUMNS = ", ".join(f'"{c}"' for c in FEEDBACK_COLUMNS)


def record_from_row(row: tuple[Any, ...], codec: Callable[[str], PackCodec]) -> AuditRecord:
    """An :class:`AuditRecord` from a row in :data:`COLUMNS` order, its texts in any stored form;
    ``codec(pack_sha256)`` gives the pack's codec when a text needs it. Raises
    :class:`.compression.UnreadableText` when a stored text cannot be read."""
    data = dict(zip(COLUMNS, row))
    data["include_draft"] = bool(data["include_draft"])
    sha = data["pack_sha256"]
    data["input_json"] = decode(data["input_json"], lambda: codec(sha))
    data["result_json"] = decode(data["result_json"], lambda: codec(sha))
    return AuditRecord(**data)


def with_v6_fields(record: AuditRecord, texts: tuple[bytes | None, bytes], result: Mapping[str, Any],
                   suppressed: Any = None) -> AuditRecord:
    """``record`` as format 6 stores it: with the SHA-256 of its Result text and of its stored bytes (``texts``),
    and what listing reads from the Result (``result``: its dict): ``evaluated_at``, the fired rules, the site
    profile; ``suppressed``: the cards of the call not shown again (JSON), if any."""
    profile = recorded_profile(result)
    stored_input, stored_result = texts
    return replace(
        record, result_sha256=sha256_text(record.result_json), stored_sha256=stored_sha256(stored_input, stored_result),
        evaluated_at=str(result.get("evaluated_at") or ""), fired_json=canonical_json(fired_rules(dict(result))),
        profile_sha256=None if profile is None else profile["sha256"],
        suppressed_json=None if not suppressed else canonical_json(suppressed))


def record_row(record: AuditRecord, texts: tuple[bytes | None, bytes]) -> tuple[Any, ...]:
    """The stored row of a record, with ``texts``: its input and result in stored form."""
    stored = dict(zip(("input_json", "result_json"), texts))
    return tuple(stored[c] if c in stored else getattr(record, c) for c in COLUMNS)


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
