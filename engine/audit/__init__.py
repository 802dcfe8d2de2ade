"""The audit log: every recommendation, and the feedback on it, append-only and hash-chained.

Each record holds the canonical JSON (RFC 8785) of the input (or only its SHA-256), the rule
pack's identity, the engine version, the full Result, who asked and when, and two hashes:
``prev_hash`` (the record before it; 64 zeros for the first) and ``record_hash`` (SHA-256 of the
canonical JSON of every other field and the database id). The pack's files are stored once per
pack SHA-256, and a site profile once per SHA-256 of its text, so that any record can be replayed
later; the input and result texts are stored compressed against the record's pack. Feedback on CDS Hooks cards has a chain
of its own.

The store refuses UPDATE and DELETE, and any INSERT that does not extend the head of the chain,
through triggers; :meth:`AuditLog.verify` finds every edited, deleted, inserted or reordered
record even when they are dropped, unless the whole chain after it was rebuilt: anchoring the head
hash elsewhere closes that gap (see docs/audit.md).

Modules: :mod:`.records` (what is recorded, canonical JSON, hashing), :mod:`.compression` (the
stored form of the large texts), :mod:`.chain`
(verification), :mod:`.store` (the log over any store), :mod:`.store_sqlite` (one file, the
default), :mod:`.store_postgres` (a shared server), :mod:`.replay`, :mod:`.export`,
:mod:`.replay_cache` (CDS Hooks token ids seen, shared between instances).
"""
from .chain import ChainProblem, Verification
from .export import EXPORT_FORMATS, EXPORT_KINDS, output_target, write_atomically
from .records import (
    GENESIS, INPUT_MODES, AuditRecord, FeedbackEntry, canonical_json, os_user, pack_files, sha256_text, utc_text,
)
from .replay import Difference, Replay, json_diff
from .store import ENV_VAR, AuditLog, default_path, is_url, resolve_path

# The stores register themselves with AuditLog.open (psycopg is imported only when PostgreSQL is used).
from . import store_postgres, store_sqlite  # noqa: E402, F401

__all__ = [
    "AuditLog", "AuditRecord", "FeedbackEntry", "ChainProblem", "Verification", "Difference", "Replay",
    "GENESIS", "INPUT_MODES", "ENV_VAR", "EXPORT_FORMATS", "EXPORT_KINDS",
    "canonical_json", "sha256_text", "utc_text", "os_user", "pack_files", "json_diff",
    "resolve_path", "default_path", "is_url", "output_target", "write_atomically",
]
