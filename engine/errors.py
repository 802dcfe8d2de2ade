"""One typed error hierarchy. Every error says where, why, and how to fix it.

Foreign exceptions (PyYAML, jsonschema, durable-rules) are wrapped once, at the
module that talks to the foreign library, keeping the original as ``__cause__``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self


#: Control characters (C0, DEL, C1) and Unicode line separators, written as escapes.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def close_matches(word: str, choices: Any, n: int = 1, cutoff: float = 0.6) -> list[str]:
    """The did-you-mean candidates for ``word`` (:func:`difflib.get_close_matches`, imported only when a
    message needs one: it is not worth its import on every start)."""
    import difflib

    return difflib.get_close_matches(word, choices, n=n, cutoff=cutoff)


def one_line(text: str) -> str:
    """``text`` with control characters escaped: what input put in a message can neither break
    its line nor reach the terminal as an escape sequence."""
    return text.translate(_ESCAPES)


@dataclass(frozen=True)
class Problem:
    """One located problem: a rule file or patient state may have many."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    pointer: str | None = None
    fact_path: str | None = None
    rule_id: str | None = None
    suggestion: str | None = None
    severity: str = "error"
    code: str | None = None

    def location(self) -> str:
        """``file:line:col`` (as much of it as is known)."""
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        where = self.location()
        if self.pointer is not None:
            where += f" {self.pointer or '/'}"
        text = f"{where}: {self.message}"
        if self.suggestion:
            text += f" ({self.suggestion})"
        return one_line(text)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; absent fields are omitted."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class PressorError(Exception):
    """Base of every error pressor raises on purpose. ``exit_code`` is the CLI's."""

    problems: list[Problem] = field(default_factory=list)
    exit_code = 1
    kind = "error"

    def __post_init__(self) -> None:
        super().__init__(str(self))

    @classmethod
    def single(cls, message: str, **where: Any) -> Self:
        """Build the error from one problem."""
        return cls([Problem(message, **where)])

    def __str__(self) -> str:
        if not self.problems:
            return self.kind
        head = str(self.problems[0])
        more = len(self.problems) - 1
        return head + (f" (+{more} more)" if more else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``--json`` error output."""
        return {"error": self.kind, "problems": [p.to_dict() for p in self.problems]}


class InputError(PressorError):
    """A document could not be read or parsed (missing file, bad YAML/JSON, too large)."""

    kind = "input_error"


class RuleFileError(PressorError):
    """The rule pack is invalid; raised at load time, before any patient is seen."""

    kind = "rule_pack_error"


class PatientStateError(PressorError):
    """The patient state does not satisfy the patient-state schema."""

    kind = "patient_state_error"


class EvaluationError(PressorError):
    """The rule engine failed during an evaluation (the evaluator is rebuilt)."""

    kind = "evaluation_error"


class AuditError(PressorError):
    """The audit log could not be opened, written or read, or a record cannot be replayed."""

    kind = "audit_error"
