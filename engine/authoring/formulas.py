"""The solver's vocabulary: sets of numbers (intervals and their unions, with strict and non-strict bounds)
and formulas over single-variable constraints (atoms joined by and/or, simplified as they are built).
:mod:`.solver` searches them; nothing here knows the pack or the patient-state schema."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

INF = math.inf

# --- sets of numbers --------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """Numbers from ``lo`` to ``hi``; ``lo_in``/``hi_in`` say whether the bounds belong to it."""

    lo: float
    hi: float
    lo_in: bool = True
    hi_in: bool = True

    def empty(self) -> bool:
        """True if no number is in it."""
        return self.lo > self.hi or (self.lo == self.hi and not (self.lo_in and self.hi_in))

    def contains(self, x: float) -> bool:
        """Membership."""
        above = x > self.lo or (x == self.lo and self.lo_in)
        below = x < self.hi or (x == self.hi and self.hi_in)
        return above and below

    def meet(self, other: "Interval") -> "Interval":
        """Intersection."""
        if self.lo > other.lo:
            lo, lo_in = self.lo, self.lo_in
        elif other.lo > self.lo:
            lo, lo_in = other.lo, other.lo_in
        else:
            lo, lo_in = self.lo, self.lo_in and other.lo_in
        if self.hi < other.hi:
            hi, hi_in = self.hi, self.hi_in
        elif other.hi < self.hi:
            hi, hi_in = other.hi, other.hi_in
        else:
            hi, hi_in = self.hi, self.hi_in and other.hi_in
        return Interval(lo, hi, lo_in, hi_in)

    def describe(self) -> str:
        """``[65, 250]``, ``(0, 0.1)`` ..."""
        return f"{'[' if self.lo_in else '('}{_num(self.lo)}, {_num(self.hi)}{']' if self.hi_in else ')'}"


Span = tuple[Interval, ...]
EVERYTHING: Span = (Interval(-INF, INF, False, False),)


def meet(a: Span, b: Span) -> Span:
    """Intersection of two interval sets."""
    out = [x.meet(y) for x in a for y in b]
    return tuple(sorted((i for i in out if not i.empty()), key=lambda i: (i.lo, not i.lo_in)))


def points(values: Iterable[float]) -> Span:
    """The set of exactly these numbers."""
    return tuple(Interval(v, v) for v in sorted(set(values)))


def complement(span: Span) -> Span:
    """Every number not in ``span`` (``span`` sorted and disjoint)."""
    out: list[Interval] = []
    lo, lo_in = -INF, False
    for iv in span:
        gap = Interval(lo, iv.lo, lo_in, not iv.lo_in)
        if not gap.empty():
            out.append(gap)
        lo, lo_in = iv.hi, not iv.hi_in
    tail = Interval(lo, INF, lo_in, False)
    if not tail.empty():
        out.append(tail)
    return tuple(out)


def op_span(op: str, value: Any) -> Span:
    """The numbers ``x`` with ``x op value`` true."""
    if op == "in":
        return points(value)
    k = float(value)
    return {
        "<": (Interval(-INF, k, False, False),),
        "<=": (Interval(-INF, k, False, True),),
        ">": (Interval(k, INF, False, False),),
        ">=": (Interval(k, INF, True, False),),
        "==": (Interval(k, k),),
        "!=": (Interval(-INF, k, False, False), Interval(k, INF, False, False)),
    }[op]


def _num(x: float) -> str:
    if x in (INF, -INF):
        return "inf" if x > 0 else "-inf"
    return f"{x:g}"


# --- formulas ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Atom:
    """A constraint on one variable: ``known``, ``unknown``, ``num`` (in a span), ``set`` (one of),
    ``has`` (array member present or not), or ``rel`` (a comparison of two variables)."""

    var: str
    kind: str
    arg: Any = None


@dataclass(frozen=True, eq=False)
class And:
    """Every item holds."""

    items: tuple[Any, ...]


@dataclass(frozen=True, eq=False)
class Or:
    """At least one item holds."""

    items: tuple[Any, ...]


class _Const:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


TRUE = _Const("TRUE")
FALSE = _Const("FALSE")


def conj(*items: Any) -> Any:
    """``and`` of formulas, simplified."""
    out: list[Any] = []
    for f in items:
        if f is FALSE:
            return FALSE
        if f is TRUE:
            continue
        out.extend(f.items if isinstance(f, And) else (f,))
    if not out:
        return TRUE
    return out[0] if len(out) == 1 else And(tuple(out))


def disj(*items: Any) -> Any:
    """``or`` of formulas, simplified."""
    out: list[Any] = []
    for f in items:
        if f is TRUE:
            return TRUE
        if f is FALSE:
            continue
        out.extend(f.items if isinstance(f, Or) else (f,))
    if not out:
        return FALSE
    return out[0] if len(out) == 1 else Or(tuple(out))
