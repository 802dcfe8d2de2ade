"""Plain-Python, three-valued (Kleene) evaluation of conditions.

This is the reference semantics. The durable-rules matcher must agree with it on
every rule that it fires (the differential tests check that); pressor also uses
it to decide *unknown* versus *false* for rules the engine did not fire, to list
the facts that satisfied a fired rule, and to compute derived facts.

Truth values are ``True``, ``False`` and ``None`` (unknown: a fact it needs is absent).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .model import All, Any_, Compare, Condition, Derived, Evidence, Not

_ORDER = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "in": lambda a, b: a in b,
    "includes": lambda a, b: b in a,
}


@dataclass(frozen=True)
class Verdict:
    """Outcome of a condition: truth, the facts missing if unknown, and the deciding evidence."""

    truth: bool | None
    missing: frozenset[str] = frozenset()
    evidence: tuple[Evidence, ...] = ()


def compare(leaf: Compare, facts: Mapping[str, Any]) -> bool | None:
    """Truth of one leaf over ``facts`` (absent key = unknown)."""
    if leaf.op == "known":
        return leaf.fact in facts
    if leaf.op == "unknown":
        return leaf.fact not in facts
    if leaf.fact not in facts:
        return None
    if leaf.value_fact is not None:
        if leaf.value_fact not in facts:
            return None
        rhs = facts[leaf.value_fact]
    else:
        rhs = leaf.value
    return _ORDER[leaf.op](facts[leaf.fact], rhs)


def truth(cond: Condition, facts: Mapping[str, Any]) -> bool | None:
    """Kleene truth of a condition, without evidence (the fast path)."""
    if isinstance(cond, Compare):
        return compare(cond, facts)
    if isinstance(cond, Not):
        inner = truth(cond.child, facts)
        return None if inner is None else not inner
    if isinstance(cond, All):
        unknown = False
        for child in cond.children:
            t = truth(child, facts)
            if t is False:
                return False
            if t is None:
                unknown = True
        return None if unknown else True
    unknown = False
    for child in cond.children:
        t = truth(child, facts)
        if t is True:
            return True
        if t is None:
            unknown = True
    return None if unknown else False


def verdict(cond: Condition, facts: Mapping[str, Any], missing_of: Mapping[str, frozenset[str]]) -> Verdict:
    """Kleene truth with the missing facts (if unknown) or the deciding evidence (if known).

    ``missing_of`` maps an unknown derived fact to the input facts whose absence made it unknown.
    """
    if isinstance(cond, Compare):
        t = compare(cond, facts)
        if t is None:
            missing: set[str] = set()
            for path in cond.facts():
                if path not in facts:
                    missing |= missing_of.get(path, frozenset((path,)))
            return Verdict(None, frozenset(missing))
        shown = facts.get(cond.fact) if cond.op not in ("known", "unknown") else (cond.fact in facts)
        return Verdict(t, evidence=(Evidence(cond.fact, cond.describe(), shown, bool(t)),))
    if isinstance(cond, Not):
        inner = verdict(cond.child, facts, missing_of)
        if inner.truth is None:
            return inner
        return Verdict(not inner.truth, evidence=inner.evidence)
    children = [verdict(c, facts, missing_of) for c in cond.children]
    decisive = False if isinstance(cond, All) else True
    hits = [v for v in children if v.truth is decisive]
    if hits:
        # For all(): the first false child decides; for any(): every true child is evidence.
        chosen = hits[:1] if isinstance(cond, All) else hits
        return Verdict(decisive, evidence=tuple(e for v in chosen for e in v.evidence))
    unknown = [v for v in children if v.truth is None]
    if unknown:
        return Verdict(None, frozenset().union(*(v.missing for v in unknown)))
    return Verdict(not decisive, evidence=tuple(e for v in children for e in v.evidence))


@dataclass
class Derivation:
    """What :func:`derive` learnt: for unknown derived facts the missing inputs, for known ones the evidence."""

    missing_of: dict[str, frozenset[str]]
    why: dict[str, tuple[Evidence, ...]]

    def expand(self, evidence: tuple[Evidence, ...]) -> tuple[Evidence, ...]:
        """Evidence with every derived fact followed by the input facts that decided it (no repeats)."""
        out: list[Evidence] = []
        seen: set[tuple[str, str]] = set()

        def add(items: tuple[Evidence, ...]) -> None:
            for e in items:
                if (e.fact, e.test) in seen:
                    continue
                seen.add((e.fact, e.test))
                out.append(e)
                if e.fact in self.why:
                    add(self.why[e.fact])

        add(evidence)
        return tuple(out)


def derive(derived: tuple[Derived, ...], facts: dict[str, Any]) -> Derivation:
    """Add the pack's derived facts to ``facts`` in place (they are in dependency order).

    A derived fact that cannot be decided is left absent; ``missing_of`` gives, for each
    such fact, the input facts whose absence made it unknown. ``why`` gives, for each
    decided one, the evidence that decided it.
    """
    missing_of: dict[str, frozenset[str]] = {}
    why: dict[str, tuple[Evidence, ...]] = {}
    for d in derived:
        if d.product is not None:
            a, b = d.product
            if a in facts and b in facts:
                facts[d.name] = facts[a] * facts[b]
                why[d.name] = (Evidence(a, f"{a} is a factor of {d.name}", facts[a]), Evidence(b, f"{b} is a factor of {d.name}", facts[b]))
            else:
                missing_of[d.name] = frozenset().union(
                    *(missing_of.get(p, frozenset((p,))) for p in (a, b) if p not in facts)
                )
            continue
        if d.when is not None:
            v = verdict(d.when, facts, missing_of)
            if v.truth is None:
                missing_of[d.name] = v.missing
            else:
                facts[d.name] = v.truth
                why[d.name] = v.evidence
            continue
        pending: set[str] = set()
        decided: tuple[Evidence, ...] = ()
        for cond, value in d.cases:
            v = verdict(cond, facts, missing_of)
            decided += v.evidence
            if v.truth is True:
                break
            if v.truth is None:
                pending |= v.missing
                value = None
                break
        else:
            value = d.default
        if value is None:
            missing_of[d.name] = frozenset(pending)
        else:
            facts[d.name] = value
            why[d.name] = decided
    return Derivation(missing_of, why)
