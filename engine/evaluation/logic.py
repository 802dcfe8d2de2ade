"""Plain-Python, three-valued (Kleene) evaluation of conditions.

This is the reference semantics. The durable-rules matcher must agree with it on
every rule that it fires (the differential tests check that); pressor also uses
it to decide *unknown* versus *false* for rules the engine did not fire, to list
the facts that satisfied a fired rule, and to compute derived facts.

Truth values are ``True``, ``False`` and ``None`` (unknown: a fact it needs is absent); the connectives
are :mod:`.kleene`'s.
"""
from __future__ import annotations

import operator
from typing import Any, Mapping, NamedTuple

from ..model import All, Compare, Condition, Derived, Evidence, Not
from .dosing_weight import per_dosing_kg
from .kleene import decides, gather, junction, not3

_ORDER = {  # C functions where Python has them (each as the comparison operator it names)
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "in": lambda a, b: a in b,
    "includes": operator.contains,
}


class Verdict(NamedTuple):
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
        return not3(truth(cond.child, facts))
    return junction(isinstance(cond, All), (truth(child, facts) for child in cond.children))


def unknowns(cond: Condition, facts: Mapping[str, Any], missing_of: Mapping[str, frozenset[str]]) -> tuple[bool | None, frozenset[str]]:
    """Kleene truth and, if unknown, the input facts whose absence made it so (no evidence built)."""
    if isinstance(cond, Compare):
        t = compare(cond, facts)
        if t is not None:
            return t, frozenset()
        missing: frozenset[str] = frozenset()
        for path in cond.facts():
            if path not in facts:
                missing |= missing_of.get(path, frozenset((path,)))
        return None, missing
    if isinstance(cond, Not):
        t, missing = unknowns(cond.child, facts, missing_of)
        return not3(t), missing
    conj = isinstance(cond, All)
    pending: list[frozenset[str]] = []
    for child in cond.children:
        t, missing = unknowns(child, facts, missing_of)
        if decides(conj, t):
            return t, frozenset()
        if t is None:
            pending.append(missing)
    if pending:
        return None, frozenset().union(*pending)
    return conj, frozenset()


def verdict(cond: Condition, facts: Mapping[str, Any], missing_of: Mapping[str, frozenset[str]]) -> Verdict:
    """Kleene truth with the missing facts (if unknown) or the deciding evidence (if known).

    ``missing_of`` maps an unknown derived fact to the input facts whose absence made it unknown.
    For all(): the first false child decides; for any(): every true child is evidence.
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
        if cond.value_fact is None:
            return Verdict(t, evidence=(Evidence(cond.fact, cond.text, shown, t),))
        # A fact-to-fact comparison (MAP below the MAP target) is decided by both facts.
        return Verdict(t, evidence=(Evidence(cond.fact, cond.text, shown, t),
                                    Evidence(cond.value_fact, cond.text, facts[cond.value_fact], t)))
    if isinstance(cond, Not):
        inner = verdict(cond.child, facts, missing_of)
        return inner._replace(truth=not3(inner.truth))  # unknown: no evidence; known: nothing missing
    t, deciding = gather(isinstance(cond, All), ((v.truth, v) for v in (verdict(c, facts, missing_of) for c in cond.children)))
    if t is None:
        return Verdict(None, frozenset().union(*(v.missing for v in deciding)))
    return Verdict(t, evidence=tuple(e for v in deciding for e in v.evidence))


class Derivation:
    """What :func:`derive` learnt: the inputs missing behind each unknown derived fact, and, on
    demand, the evidence that decided each known one (built lazily: most evaluations never ask)."""

    def __init__(self, derived: tuple[Derived, ...], facts: Mapping[str, Any], missing_of: dict[str, frozenset[str]]) -> None:
        self.missing_of = missing_of
        self._by_name = {d.name: d for d in derived}
        self._facts = facts
        self._why: dict[str, tuple[Evidence, ...]] = {}
        self._chains: dict[str, tuple[Evidence, ...]] = {}

    def decided(self, name: str) -> bool:
        """True if ``name`` is a derived fact with a known value."""
        return name in self._by_name and name in self._facts

    def why(self, name: str) -> tuple[Evidence, ...]:
        """Evidence that decided the known derived fact ``name`` (empty for input facts)."""
        d = self._by_name.get(name)
        if d is None or name not in self._facts:
            return ()
        if name not in self._why:
            facts = self._facts
            if d.product is not None:
                self._why[name] = tuple(Evidence(p, f"{p} is a factor of {name}", facts[p]) for p in d.product)
            elif d.per_dosing_kg is not None:
                self._why[name] = per_dosing_kg_evidence(d, facts)
            elif d.mean_pressure is not None:
                m, sbp, dbp = d.mean_pressure
                if m in facts:
                    self._why[name] = (Evidence(m, f"{name} is the measured MAP", facts[m]),)
                else:
                    test = f"{name} ESTIMATED as DBP + (SBP - DBP) / 3 (no measured MAP)"
                    self._why[name] = (Evidence(sbp, test, facts[sbp]), Evidence(dbp, test, facts[dbp]))
            elif d.when is not None:
                self._why[name] = verdict(d.when, facts, self.missing_of).evidence
            else:
                decided: tuple[Evidence, ...] = ()
                for cond, _ in d.cases:
                    v = verdict(cond, facts, self.missing_of)
                    decided += v.evidence
                    if v.truth:
                        break
                self._why[name] = decided
        return self._why[name]

    def _chain(self, name: str) -> tuple[Evidence, ...]:
        """The evidence behind a derived fact, followed down to input facts (memoised per evaluation)."""
        chain = self._chains.get(name)
        if chain is None:
            out: list[Evidence] = []
            for e in self.why(name):
                out.append(e)
                out.extend(self._chain(e.fact))
            chain = self._chains[name] = tuple(out)
        return chain

    def expand(self, evidence: tuple[Evidence, ...]) -> tuple[Evidence, ...]:
        """Evidence with every derived fact followed by the input facts that decided it (no repeats)."""
        out: list[Evidence] = []
        seen: set[tuple[str, str]] = set()
        for e in evidence:
            for item in (e, *self._chain(e.fact)):
                key = (item.fact, item.test)
                if key not in seen:
                    seen.add(key)
                    out.append(item)
        return tuple(out)


def estimated_map(sbp: float, dbp: float) -> float:
    """MAP estimated from systolic and diastolic pressure: DBP + (SBP - DBP) / 3, to 0.1 mmHg."""
    return round(dbp + (sbp - dbp) / 3.0, 1)


#: How a result's warning about a measurement set aside begins (the plan prints these first).
SET_ASIDE = "measurement set aside: "


def pressure_doubt(d: Derived, facts: Mapping[str, Any]) -> str | None:
    """Why the measured mean pressure of ``d`` (a ``mean_pressure`` derived fact) cannot be used, or None.

    A measured MAP outside the envelope the pack declares, or not between the diastolic and systolic
    pressures read with it, is what a flushed, damped or disconnected arterial line (or readings from
    different moments) gives: it is treated as unknown, never estimated from the same suspect readings."""
    assert d.mean_pressure is not None
    m, sbp, dbp = d.mean_pressure
    value = facts.get(m)
    if value is None:
        return None
    if d.pressure_envelope is not None:
        low, high = d.pressure_envelope
        if not low <= value <= high:
            return (f"{SET_ASIDE}{m} {value:g} mmHg is outside the {low:g}-{high:g} mmHg the pack accepts as a mean pressure: "
                    f"treated as unknown (a flushed, damped or disconnected arterial line?); check the line and re-measure")
    s, di = facts.get(sbp), facts.get(dbp)
    if s is not None and di is not None and not di <= value <= s:
        return (f"{SET_ASIDE}{m} {value:g} mmHg is not between the diastolic {di:g} and systolic {s:g} mmHg: treated as unknown "
                f"(a damped or flushed line, or readings from different moments); check the line and re-measure")
    return None


def set_aside_doubtful_pressures(derived: tuple[Derived, ...], facts: dict[str, Any]) -> tuple[str, ...]:
    """Remove from ``facts`` the pressures a mean-pressure check doubts (see :func:`pressure_doubt`): the MAP outside
    its envelope; the MAP, SBP and DBP together when they contradict each other (which one is wrong is not known).
    Each is then unknown everywhere (rules, derived facts, questions). Returns the notes, one per check that fired."""
    out: list[str] = []
    for d in derived:
        if d.mean_pressure is None:
            continue
        why = pressure_doubt(d, facts)
        if why is None:
            continue
        m, sbp, dbp = d.mean_pressure
        envelope = d.pressure_envelope
        inside = envelope is None or envelope[0] <= facts[m] <= envelope[1]
        for fact in (m, sbp, dbp) if inside else (m,):
            facts.pop(fact, None)
        out.append(why)
    return tuple(out)


def derive_mean_pressure(d: Derived, facts: dict[str, Any], missing_of: dict[str, frozenset[str]]) -> None:
    """``d`` (a ``mean_pressure`` derived fact): the measured MAP if it can be used, else the estimate from SBP and
    DBP when no MAP was measured; a measured MAP in doubt leaves it unknown (see :func:`pressure_doubt`)."""
    assert d.mean_pressure is not None
    m, sbp, dbp = d.mean_pressure
    if m in facts:
        if pressure_doubt(d, facts) is None:
            facts[d.name] = facts[m]
        else:
            missing_of[d.name] = frozenset((m,))
    elif sbp in facts and dbp in facts:
        facts[d.name] = estimated_map(facts[sbp], facts[dbp])
    else:
        missing_of[d.name] = frozenset((m,))


def derive_per_dosing_kg(d: Derived, facts: dict[str, Any], missing_of: dict[str, frozenset[str]]) -> None:
    """``d`` (a ``per_dosing_kg`` derived fact) into ``facts``, or its missing inputs into ``missing_of``."""
    assert d.per_dosing_kg is not None
    fact, drug, policy = d.per_dosing_kg
    if fact not in facts:
        missing_of[d.name] = missing_of.get(fact, frozenset((fact,)))
        return
    value, missing = per_dosing_kg(facts[fact], drug, facts, policy)
    if value is None:
        missing_of[d.name] = frozenset().union(*(missing_of.get(m, frozenset((m,))) for m in missing))
    else:
        facts[d.name] = value


def per_dosing_kg_evidence(d: Derived, facts: Mapping[str, Any]) -> tuple[Evidence, ...]:
    """Why a ``per_dosing_kg`` fact has its value: the per-kg fact and the weights it was re-expressed with."""
    assert d.per_dosing_kg is not None
    fact, drug, _ = d.per_dosing_kg
    test = f"{d.name} is {fact} per kg of the weight the pack doses {drug} on"
    return tuple(Evidence(f, test, facts[f]) for f in (fact, *sorted(d.weight_reads)) if f in facts)


def derive(derived: tuple[Derived, ...], facts: dict[str, Any]) -> Derivation:
    """Add the pack's derived facts to ``facts`` in place (they are in dependency order).

    A derived fact that cannot be decided is left absent; ``missing_of`` gives, for each
    such fact, the input facts whose absence made it unknown.
    """
    missing_of: dict[str, frozenset[str]] = {}
    for d in derived:
        if d.mean_pressure is not None:
            derive_mean_pressure(d, facts, missing_of)
            continue
        if d.product is not None:
            a, b = d.product
            if a in facts and b in facts:
                facts[d.name] = facts[a] * facts[b]
            else:
                missing_of[d.name] = frozenset().union(
                    *(missing_of.get(p, frozenset((p,))) for p in (a, b) if p not in facts)
                )
            continue
        if d.per_dosing_kg is not None:
            derive_per_dosing_kg(d, facts, missing_of)
            continue
        if d.when is not None:
            t, missing = unknowns(d.when, facts, missing_of)
            if t is None:
                missing_of[d.name] = missing
            else:
                facts[d.name] = t
            continue
        value = d.default
        for cond, case_value in d.cases:
            t, missing = unknowns(cond, facts, missing_of)
            if t is True:
                value = case_value
                break
            if t is None:
                missing_of[d.name] = missing
                value = None
                break
        if value is not None:
            facts[d.name] = value
    return Derivation(derived, facts, missing_of)
