"""Three-valued (Kleene) logic: the one place its connectives are written.

A truth is ``True``, ``False`` or ``None`` (unknown: a fact it needs is absent). ``not`` keeps unknown;
``and`` is false as soon as one part is false, else unknown if one part is unknown; ``or`` the dual.
:mod:`.logic` (the reference evaluation, with its missing facts and evidence), :mod:`.partial` (residuals
of undecided rules), :mod:`.explain` (the deciding comparisons) and the lint's solver (per polarity,
:mod:`pressor.engine.authoring.solver`) follow these; :mod:`.compiled` generates the same in Python source,
and the differential tests hold it to :func:`.logic.truth`.
"""
from __future__ import annotations

from collections.abc import Iterable

#: ``True``, ``False``, or ``None`` for unknown.
Truth = bool | None


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
