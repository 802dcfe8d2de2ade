"""Three-valued (Kleene) logic: the one place its connectives are written.

A truth is ``True``, ``False`` or ``None`` (unknown: a fact it needs is absent). ``not`` keeps unknown;
``and`` is false as soon as one part is false, else unknown if one part is unknown; ``or`` the dual.

Who uses what:

* :func:`not3`, :func:`junction`, :func:`decides`: the reference evaluation (:mod:`.logic`'s ``truth`` and
  ``unknowns``);
* :func:`gather`, the connectives with what decided them: :mod:`.logic`'s ``verdict`` and :mod:`.compiled`'s
  verdicts (the evidence), :mod:`.explain` (the deciding comparisons);
* :func:`every_part` and :data:`NEGATED`, the connectives read per polarity (is it true, false, not true, not
  false): :mod:`.partial` (residuals of undecided rules), :mod:`.compile` (the engine's conditions, negation
  pushed to the leaves) and the lint's solver (:mod:`pressor.engine.authoring.solver`).

:mod:`.compiled` also generates the same connectives as Python source (its truth functions); the differential
tests hold it to :func:`.logic.truth`.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, TypeVar

#: ``True``, ``False``, or ``None`` for unknown.
Truth = bool | None

#: What one asks of a truth: is it true (``T``), false (``F``), not true (``NT``: false or unknown), or not
#: false (``NF``: true or unknown).
Polarity = Literal["T", "F", "NT", "NF"]
#: The polarity a ``not`` turns a question into: ``not x`` is true exactly when ``x`` is false, and so on.
NEGATED: dict[Polarity, Polarity] = {"T": "F", "F": "T", "NT": "NF", "NF": "NT"}

P = TypeVar("P")


def not3(t: Truth) -> Truth:
    """``not``: unknown stays unknown."""
    return None if t is None else not t


def and3(truths: Iterable[Truth]) -> Truth:
    """``and``: false if any is false (the rest is not looked at), else unknown if any is unknown, else true."""
    return junction(True, truths)


def or3(truths: Iterable[Truth]) -> Truth:
    """``or``: true if any is true (the rest is not looked at), else unknown if any is unknown, else false."""
    return junction(False, truths)


def junction(conj: bool, truths: Iterable[Truth]) -> Truth:
    """``and`` (``conj``) or ``or`` of ``truths``, read lazily: it stops at the first one that decides."""
    unknown = False
    for t in truths:
        if decides(conj, t):
            return t
        if t is None:
            unknown = True
    return None if unknown else conj


def decides(conj: bool, t: Truth) -> bool:
    """Whether one part's truth ``t`` decides the whole alone: false for an ``and``, true for an ``or``."""
    return t is (not conj)


def gather(conj: bool, parts: Iterable[tuple[Truth, P]]) -> tuple[Truth, list[P]]:
    """``and`` (``conj``) or ``or`` of parts that each carry something (their evidence, their missing facts),
    with what the parts that decided the whole carry.

    A false ``and``: its first false part (the rest is not looked at). A true ``or``: every true part (all are
    looked at). Unknown: the unknown parts. A true ``and`` or a false ``or``: every part.
    """
    held: list[P] = []
    failed: list[P] = []
    unknown: list[P] = []
    for t, part in parts:
        if t is None:
            unknown.append(part)
        elif t:
            held.append(part)
        elif conj:
            return False, [part]
        else:
            failed.append(part)
    if not conj and held:
        return True, held
    if unknown:
        return None, unknown
    return (True, held) if conj else (False, failed)


def every_part(conj: bool, positive: bool) -> bool:
    """Whether an ``and`` (``conj``) or an ``or`` answers a question only when every part does (else: when one
    part does). ``positive``: the question is "true" or "not false" (``T``, ``NF``), else "false" or "not true".
    An ``and`` is true (not false) when every part is; it is false (not true) when one part is; an ``or`` dually.
    """
    return conj == positive


def positive(pol: Polarity) -> bool:
    """Whether ``pol`` asks "true" or "not false" (see :func:`every_part`)."""
    return pol in ("T", "NF")
