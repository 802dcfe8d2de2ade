"""Conditions: from YAML data to checked model objects, and from those to durable-rules JSON.

Fact names and value types are checked here against the fact vocabulary (the
patient-state schema plus the pack's derived facts), so a misspelt fact or a
string compared with a number fails when the pack loads.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from ..errors import Problem, close_matches
from ..model import All, Any_, Compare, Condition, Not
from .kleene import every_part

NUMERIC_OPS = {"<", "<=", ">", ">=", "==", "!=", "in"}
OPS_BY_KIND = {
    "number": NUMERIC_OPS,
    "boolean": {"==", "!="},
    "enum": {"==", "!=", "in"},
    "array": {"includes"},
}
_NEGATE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


@dataclass(frozen=True)
class FactType:
    """The type of one fact in the vocabulary."""

    path: str
    kind: str  # number | boolean | enum | array
    values: tuple[str, ...] = ()  # enum members (for enum and array facts)
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""
    derived: bool = False


def state_vocabulary(state_schema: dict[str, Any]) -> dict[str, FactType]:
    """Fact paths and types read off the patient-state schema (the public contract)."""
    vocab: dict[str, FactType] = {}

    def add(path: str, node: dict[str, Any]) -> None:
        t = node.get("type")
        if t == "object":
            for key, child in node.get("properties", {}).items():
                add(f"{path}.{key}" if path else key, child)
        elif t == "array":
            vocab[path] = FactType(path, "array", tuple(node["items"].get("enum", ())), description=node.get("description", ""))
        elif "enum" in node:
            vocab[path] = FactType(path, "enum", tuple(node["enum"]), description=node.get("description", ""))
        elif t == "boolean":
            vocab[path] = FactType(path, "boolean", description=node.get("description", ""))
        elif t in ("number", "integer"):
            lo = node.get("minimum", node.get("exclusiveMinimum"))
            vocab[path] = FactType(path, "number", minimum=lo, maximum=node.get("maximum"), description=node.get("description", ""))

    add("", state_schema)
    return vocab


@lru_cache(maxsize=4096)
def engine_name(path: str) -> str:
    """Property name of a fact in the engine (flat: durable-rules reads dots as nesting)."""
    return path.replace(".", "__")


def member_name(path: str, member: str) -> str:
    """Engine property for 'array fact ``path`` includes ``member``'."""
    return f"{engine_name(path)}__has__{member}"


class ConditionCompiler:
    """Parses condition data into model objects, reporting problems through ``report``."""

    def __init__(self, vocab: dict[str, FactType], report: Callable[[str, str, str | None], None]) -> None:
        self.vocab = vocab
        self.report = report  # (pointer, message, suggestion)

    def parse(self, data: Any, pointer: str, *, allow_fact_refs: bool = False) -> Condition | None:
        """Model object for ``data`` at ``pointer``, or None after reporting why it is invalid."""
        if not isinstance(data, dict):
            self.report(pointer, "a condition must be a mapping", "use all / any / not or fact + op")
            return None
        for key, cls in (("all", All), ("any", Any_)):
            if key in data:
                kids = [self.parse(c, f"{pointer}/{key}/{i}", allow_fact_refs=allow_fact_refs) for i, c in enumerate(data[key])]
                if not kids:
                    self.report(f"{pointer}/{key}", f"'{key}' needs at least one condition", None)
                    return None
                parsed = [kid for kid in kids if kid is not None]
                return cls(tuple(parsed), pointer) if len(parsed) == len(kids) else None
        if "not" in data:
            kid = self.parse(data["not"], f"{pointer}/not", allow_fact_refs=allow_fact_refs)
            return None if kid is None else Not(kid, pointer)
        return self._leaf(data, pointer, allow_fact_refs)

    def _fact(self, path: Any, pointer: str) -> FactType | None:
        ft = self.vocab.get(path) if isinstance(path, str) else None
        if ft is None:
            close = close_matches(str(path), list(self.vocab), n=1, cutoff=0.6)
            self.report(pointer, f"unknown fact '{path}'", f"did you mean '{close[0]}'?" if close else "see the patient-state schema and the derived facts")
        return ft

    def _leaf(self, data: dict[str, Any], pointer: str, allow_fact_refs: bool) -> Compare | None:
        ft = self._fact(data.get("fact"), f"{pointer}/fact")
        op = data.get("op")
        if ft is None:
            return None
        if op in ("known", "unknown"):
            return Compare(ft.path, op, pointer=pointer)
        if op not in OPS_BY_KIND[ft.kind]:
            self.report(f"{pointer}/op", f"operator '{op}' does not apply to {ft.kind} fact '{ft.path}'",
                        f"use one of: {', '.join(sorted(OPS_BY_KIND[ft.kind]))}, known, unknown")
            return None
        if "value_fact" in data:
            if not allow_fact_refs:
                self.report(f"{pointer}/value_fact", "rules compare facts with constants only",
                            "declare the comparison as a derived fact and test that")
                return None
            other = self._fact(data["value_fact"], f"{pointer}/value_fact")
            if other is None:
                return None
            if other.kind != ft.kind or op in ("in", "includes"):
                self.report(f"{pointer}/value_fact", f"cannot compare {ft.kind} '{ft.path}' with {other.kind} '{other.path}' using '{op}'", None)
                return None
            return Compare(ft.path, op, value_fact=other.path, pointer=pointer)
        value = data.get("value")
        if op == "in" and not isinstance(value, list):
            self.report(f"{pointer}/value", "'in' needs a list of values", None)
            return None
        values: list[Any] = value if isinstance(value, list) and op == "in" else [value]
        for i, v in enumerate(values):
            vp = f"{pointer}/value/{i}" if op == "in" else f"{pointer}/value"
            if not self._value_ok(ft, v, vp):
                return None
        return Compare(ft.path, op, tuple(values) if op == "in" else value, pointer=pointer)

    def _value_ok(self, ft: FactType, v: Any, pointer: str) -> bool:
        if ft.kind == "number":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                self.report(pointer, f"{v!r} is not a number, but '{ft.path}' is numeric", "write the number without quotes")
                return False
            return True
        if ft.kind == "boolean":
            if not isinstance(v, bool):
                self.report(pointer, f"{v!r} is not true or false, but '{ft.path}' is a boolean", "write true or false")
                return False
            return True
        if v not in ft.values:
            close = close_matches(str(v), list(ft.values), n=1)
            self.report(pointer, f"{v!r} is not a value of '{ft.path}'",
                        f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(ft.values)}")
            return False
        return True


def to_engine(cond: Condition, negated: bool = False) -> dict[str, Any]:
    """durable-rules JSON for a condition, negation pushed down to the leaves.

    The engine treats a comparison on an absent property as false; with negations at
    the leaves that makes the engine fire exactly when the Kleene truth is TRUE.
    """
    from ._durable import group, leaf

    if isinstance(cond, Not):
        return to_engine(cond.child, not negated)
    if isinstance(cond, (All, Any_)):
        every = every_part(isinstance(cond, All), not negated)  # the engine fires on true: under a not(), on false
        return group("$and" if every else "$or", [to_engine(c, negated) for c in cond.children])
    name = engine_name(cond.fact)
    op = cond.op
    if op == "known":
        return leaf(name, "absent" if negated else "exists", 1)
    if op == "unknown":
        return leaf(name, "exists" if negated else "absent", 1)
    if op == "includes":
        return leaf(member_name(cond.fact, cond.value), "==", not negated)
    if op == "in":
        kids = [leaf(name, "!=" if negated else "==", v) for v in cond.value]
        return group("$and" if negated else "$or", kids)
    return leaf(name, _NEGATE[op] if negated else op, cond.value)


def engine_limit(rule_id: str, cond: Condition) -> tuple[str, str] | None:
    """Why durable-rules would refuse this rule's condition, predicted before it is asked:
    ``(message, what to change)``, or None when it fits."""
    from ._durable import limit_problem

    return limit_problem(rule_id, to_engine(cond))


def problems_from(report_into: list[Problem], where: Callable[[str], dict[str, Any]], rule_id: str | None = None) -> Callable[[str, str, str | None], None]:
    """A ``report`` callback that appends located problems to ``report_into``."""

    def report(pointer: str, message: str, suggestion: str | None) -> None:
        report_into.append(Problem(message, suggestion=suggestion, rule_id=rule_id, **where(pointer)))

    return report
