"""A condition partially evaluated over the known facts: its *residual*, per polarity (three-valued, as
:mod:`.logic`), with derived facts expanded into their definitions, so that what is left reads only the
input facts that are absent. :mod:`.residual` asks what the residuals of undecided rules need."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..model import All, Any_, Compare, Condition, Derived, Not, leaves
from .kleene import every_part
from .logic import compare

Residual = Any  # True | False | Condition


_FLIP = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "==", "known": "unknown", "unknown": "known"}
_TURN = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


# --- building residuals ------------------------------------------------------------


def conj(items: Iterable[Residual]) -> Residual:
    """``and`` of residuals, simplified (Kleene-sound: constants folded, nesting flattened, repeats dropped)."""
    out: list[Condition] = []
    for item in items:
        if item is False:
            return False
        if item is True:
            continue
        for child in (item.children if isinstance(item, All) else (item,)):
            if child not in out:
                out.append(child)
    if not out:
        return True
    return out[0] if len(out) == 1 else All(tuple(out))


def disj(items: Iterable[Residual]) -> Residual:
    """``or`` of residuals, simplified; ``x < 1 or x >= 1`` becomes ``x is known``."""
    out: list[Condition] = []
    for item in items:
        if item is True:
            return True
        if item is False:
            continue
        for child in (item.children if isinstance(item, Any_) else (item,)):
            if child not in out:
                out.append(child)
    if not out:
        return False
    for leaf in [c for c in out if isinstance(c, Compare) and c.value_fact is None and c.op not in ("known", "unknown")]:
        other = _negated(leaf)
        if leaf in out and other in out:  # x or not x: true once x is known, whatever its value
            out = [c for c in out if c != leaf and c != other] + [_leaf_of(leaf.fact, "known")]
    return out[0] if len(out) == 1 else Any_(tuple(out))


_LEAVES: dict[tuple[Any, ...], Compare] = {}


def _leaf_of(fact: str, op: str, value: Any = None, value_fact: str | None = None) -> Compare:
    """One shared Compare per meaning (building one renders its text; residuals build many)."""
    key = (fact, op, type(value), value, value_fact)
    found = _LEAVES.get(key)
    if found is None:
        if len(_LEAVES) > 20_000:
            _LEAVES.clear()
        found = _LEAVES[key] = Compare(fact, op, value, value_fact)
    return found


def _negated(leaf: Compare) -> Condition:
    """A leaf that is true exactly when ``leaf`` is false (both facts known)."""
    if leaf.op in _FLIP:
        value = leaf.value
        if leaf.op in ("==", "!=") and isinstance(value, bool):  # b != true reads as b == false
            return _leaf_of(leaf.fact, "==", not value) if leaf.op == "==" else _leaf_of(leaf.fact, "==", value)
        return _leaf_of(leaf.fact, _FLIP[leaf.op], value, leaf.value_fact)
    return Not(leaf)  # in, includes


def _plain(leaf: Compare) -> Compare:
    """The leaf without its file pointer (residuals compare by meaning), ``b != x`` as ``b == not x``."""
    if leaf.op == "!=" and isinstance(leaf.value, bool):
        return _leaf_of(leaf.fact, "==", not leaf.value)
    return _leaf_of(leaf.fact, leaf.op, leaf.value, leaf.value_fact)


class Partial:
    """Partial evaluation of conditions over one patient's facts (memoised per call)."""

    def __init__(self, derived: Mapping[str, Derived], facts: Mapping[str, Any], absent: frozenset[str]) -> None:
        self.derived = derived
        self.facts = facts
        self.absent = absent  # absent facts declared not applicable: they stay absent
        self._memo: dict[tuple[int, bool], Residual] = {}
        self._settled: dict[str, bool] = {}  # derived path -> unsettled (see _unsettled)

    def of(self, cond: Condition, pol: bool) -> Residual:
        """What must hold of the missing facts for ``cond`` to be ``pol`` (True: fires; False: false)."""
        key = (id(cond), pol)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._of(cond, pol)
        return found

    def _of(self, cond: Condition, pol: bool) -> Residual:
        if isinstance(cond, Compare):
            return self._leaf(cond, pol)
        if isinstance(cond, Not):
            return self.of(cond.child, not pol)
        parts = (self.of(c, pol) for c in cond.children)
        return conj(parts) if every_part(isinstance(cond, All), pol) else disj(parts)

    def _leaf(self, leaf: Compare, pol: bool) -> Residual:
        if leaf.op in ("known", "unknown") and leaf.fact not in self.facts and leaf.fact not in self.derived:
            if leaf.fact in self.absent:  # it stays absent
                return (leaf.op == "unknown") == pol
            return _plain(leaf) if pol else _leaf_of(leaf.fact, _FLIP[leaf.op])  # supplying it changes the test
        t = None if any(self._unsettled(p) for p in leaf.facts()) else compare(leaf, self.facts)
        if t is not None:
            return t == pol
        lefts = self.branches(leaf.fact)
        rights = self.branches(leaf.value_fact) if leaf.value_fact is not None else [(True, ("const", leaf.value))]
        return disj(conj((gl, gr, self._test(tl, leaf.op, tr, pol))) for gl, tl in lefts for gr, tr in rights)

    def branches(self, path: str) -> list[tuple[Residual, tuple[str, Any]]]:
        """How a fact takes its value: ``[(when, ("const", value) | ("var", path))]``. A derived fact that is
        known only because an input it reads is absent (an ``unknown`` test) is expanded like an unknown one:
        supplying that input can change it."""
        if path in self.facts and not self._unsettled(path):
            return [(True, ("const", self.facts[path]))]
        d = self.derived.get(path)
        if path in self.absent:
            return []
        if d is None or d.product is not None or d.mean_pressure is not None:  # a number of its own
            factors = (d.product or d.mean_pressure) if d is not None else ()
            if factors and all(p in self.absent for p in factors):
                return []
            return [(True, ("var", path))]
        if d.when is not None:
            return [(self.of(d.when, True), ("const", True)), (self.of(d.when, False), ("const", False))]
        out, prefix = [], True
        for case, value in d.cases:
            out.append((conj((prefix, self.of(case, True))), ("const", value)))
            prefix = conj((prefix, self.of(case, False)))
        if d.default is not None:  # no default: unknown when no case holds
            out.append((prefix, ("const", d.default)))
        return out

    def _unsettled(self, path: str) -> bool:
        """A derived fact (not a number of its own) that is known but reads an absent input."""
        found = self._settled.get(path)
        if found is None:
            d = self.derived.get(path)
            found = self._settled[path] = (d is not None and path in self.facts and d.product is None
                                           and d.mean_pressure is None and self._reads_absent(path))
        return found

    def _reads_absent(self, path: str) -> bool:
        """Whether the definition of derived ``path`` reads, directly or through other derived facts, an
        input fact that is absent and not declared not applicable."""
        todo, seen = [path], set()
        while todo:
            d = self.derived.get(todo.pop())
            if d is None:
                continue
            conds = ([d.when] if d.when is not None else []) + [c for c, _ in d.cases]
            for leaf in (x for c in conds for x in leaves(c)):
                for p in leaf.facts():
                    if p in self.derived:
                        if p not in seen:
                            seen.add(p)
                            todo.append(p)
                    elif p not in self.facts and p not in self.absent:
                        return True
        return False

    @staticmethod
    def _test(left: tuple[str, Any], op: str, right: tuple[str, Any], pol: bool) -> Residual:
        (lk, lv), (rk, rv) = left, right
        if lk == "const" and rk == "const":
            return compare(_leaf_of("a", op, rv), {"a": lv}) == pol
        if lk == "const":
            if op not in _TURN:  # includes / in with a constant on the left cannot arise from the schema
                return False
            lk, lv, rk, rv, op = rk, rv, lk, lv, _TURN[op]
        leaf = _leaf_of(lv, op, value_fact=rv) if rk == "var" else _plain(_leaf_of(lv, op, rv))
        return leaf if pol else _negated(leaf)


def inputs_of(res: Residual) -> tuple[str, ...]:
    """The facts a residual reads, in order of first mention."""
    if res is True or res is False:
        return ()
    out: list[str] = []
    for leaf in leaves(res):
        for p in leaf.facts():
            if p not in out:
                out.append(p)
    return tuple(out)


# --- the outcome for one patient ------------------------------------------------------
