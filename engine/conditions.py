"""Conditions: comparisons of facts (leaves) under all / any / not, as rules, derived facts and decisions
state them, with their JSON form and their text."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Compare:
    """A leaf: ``fact op value`` (or ``fact op value_fact``), or ``fact known|unknown``."""

    fact: str
    op: str
    value: Any = None
    value_fact: str | None = None
    pointer: str = ""
    text: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", self._text())

    def facts(self) -> tuple[str, ...]:
        """Fact paths this leaf reads."""
        return (self.fact,) if self.value_fact is None else (self.fact, self.value_fact)

    def describe(self) -> str:
        """``vitals.sbp_mmhg < 70`` in text (computed once)."""
        return self.text

    def _text(self) -> str:
        if self.op in ("known", "unknown"):
            return f"{self.fact} is {self.op}"
        rhs = self.value_fact if self.value_fact is not None else _literal(self.value)
        return f"{self.fact} {self.op} {rhs}"


@dataclass(frozen=True)
class All:
    """Every child holds."""

    children: tuple["Condition", ...]
    pointer: str = ""


@dataclass(frozen=True)
class Any_:
    """At least one child holds."""

    children: tuple["Condition", ...]
    pointer: str = ""


@dataclass(frozen=True)
class Not:
    """The child does not hold."""

    child: "Condition"
    pointer: str = ""


Condition = Union[Compare, All, Any_, Not]


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return str(value)


def condition_data(cond: Condition) -> dict[str, Any]:
    """A condition as rule-file data (``{fact, op, value}``, ``{all: [...]}``, ``{any: [...]}``, ``{not: ...}``)."""
    if isinstance(cond, Compare):
        out: dict[str, Any] = {"fact": cond.fact, "op": cond.op}
        if cond.value_fact is not None:
            out["value_fact"] = cond.value_fact
        elif cond.op not in ("known", "unknown"):
            out["value"] = list(cond.value) if isinstance(cond.value, tuple) else cond.value
        return out
    if isinstance(cond, Not):
        return {"not": condition_data(cond.child)}
    return {"all" if isinstance(cond, All) else "any": [condition_data(c) for c in cond.children]}


def leaves(cond: Condition) -> list[Compare]:
    """Every comparison in a condition, in document order."""
    if isinstance(cond, Compare):
        return [cond]
    if isinstance(cond, Not):
        return leaves(cond.child)
    out: list[Compare] = []
    for child in cond.children:
        out.extend(leaves(child))
    return out


def render_condition(cond: Condition, indent: str = "") -> list[str]:
    """A condition as indented text lines (for ``rules show`` and explanations)."""
    if isinstance(cond, Compare):
        return [indent + cond.describe()]
    if isinstance(cond, Not):
        return [indent + "not:"] + render_condition(cond.child, indent + "  ")
    head = "all of:" if isinstance(cond, All) else "any of:"
    out = [indent + head]
    for child in cond.children:
        out.extend(render_condition(child, indent + "  "))
    return out
