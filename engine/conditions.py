"""Conditions: comparisons of facts (leaves) under all / any / not, as rules, derived facts and decisions
state them, with their JSON form and their text."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

#: What a condition keeps about itself once computed (its hash, its leaves): never pickled, because a hash of
#: text differs between processes (``PYTHONHASHSEED``) and the leaves are rebuilt on demand.
_CACHED = ("_hash", "_leaves")


class _Node:
    """The hash ``@dataclass(frozen=True)`` generates (of the fields compared), computed once per node: the
    residual analysis keys its caches by conditions, and the generated hash rehashed every child on every
    lookup. Equality stays the generated one."""

    __slots__ = ()

    def _key(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __hash__(self) -> int:
        d = self.__dict__
        h = d.get("_hash")
        if h is None:
            h = d["_hash"] = hash(self._key())
        return h

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__
        if "_hash" in state or "_leaves" in state:
            state = {k: v for k, v in state.items() if k not in _CACHED}
        return state


@dataclass(frozen=True)
class Compare(_Node):
    """A leaf: ``fact op value`` (or ``fact op value_fact``), or ``fact known|unknown``."""

    fact: str
    op: str
    value: Any = None
    value_fact: str | None = None
    pointer: str = ""
    text: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", self._text())

    __hash__ = _Node.__hash__  # defined here, so the dataclass keeps it (and its generated __eq__)

    def _key(self) -> tuple[Any, ...]:
        return (self.fact, self.op, self.value, self.value_fact, self.pointer)

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
class All(_Node):
    """Every child holds."""

    children: tuple["Condition", ...]
    pointer: str = ""

    __hash__ = _Node.__hash__  # defined here, so the dataclass keeps it (and its generated __eq__)

    def _key(self) -> tuple[Any, ...]:
        return (self.children, self.pointer)


@dataclass(frozen=True)
class Any_(_Node):
    """At least one child holds."""

    children: tuple["Condition", ...]
    pointer: str = ""

    __hash__ = _Node.__hash__  # defined here, so the dataclass keeps it (and its generated __eq__)

    def _key(self) -> tuple[Any, ...]:
        return (self.children, self.pointer)


@dataclass(frozen=True)
class Not(_Node):
    """The child does not hold."""

    child: "Condition"
    pointer: str = ""

    __hash__ = _Node.__hash__  # defined here, so the dataclass keeps it (and its generated __eq__)

    def _key(self) -> tuple[Any, ...]:
        return (self.child, self.pointer)


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
    """Every comparison in a condition, in document order (a new list; kept with the node once computed)."""
    if cond.__class__ is Compare:
        return [cond]
    return list(_leaves(cond))


def _leaves(cond: Condition) -> tuple[Compare, ...]:
    if isinstance(cond, Compare):
        return (cond,)
    d = cond.__dict__
    found = d.get("_leaves")
    if found is None:
        if isinstance(cond, Not):
            found = _leaves(cond.child)
        else:
            found = tuple(leaf for child in cond.children for leaf in _leaves(child))
        d["_leaves"] = found
    return found


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
