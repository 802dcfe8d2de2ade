"""Which patient states make a condition true, false or unknown: an exact search of the fact space.

The lint (contradictions, gaps, unreachable rules) and the scenario coverage report
ask questions such as "can rule A and rule B hold for the same patient?". They are
answered here by search, not by sampling:

* every input fact of the patient-state schema is a variable that is either absent
  (unknown) or takes a value in its domain: an interval set for numbers (strict and
  non-strict bounds, the schema's own range included), a set for enumerations and
  booleans, required and excluded members for arrays;
* a condition is translated, for the polarity asked (true, false, not true, not
  false), into and/or of constraints on single variables, following the Kleene
  semantics of :mod:`pressor.engine.evaluation.logic` (an absent fact makes a comparison
  unknown, never false);
* derived facts are expanded into their definitions: a boolean into its condition,
  a number by cases into one branch per case. A product (``derived.crystalloid_ml``)
  is its own numeric variable, known exactly when both factors are known, ranging
  over the products of the factors' ranges; the coupling ``p = a x b`` is enforced
  when a witness is built (and a branch whose product cannot be realised yields no
  witness); a per-kg amount re-expressed on a dosing weight (``per_dosing_kg``) is
  searched as the per-kg fact itself, that is where the dosing weight is the actual
  weight (not an obese adult): the witnesses found are real, the search is narrower;
* a depth-first search over the disjunctions, pruning as soon as one variable's
  domain is empty, returns the satisfying regions.

Comparisons of two facts (``value_fact``) are exact when either side is a derived
number by cases (the pack's MAP target) and otherwise checked only when a witness
is built. Every witness the lint reports is also run through ``evaluate``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product as cartesian
from typing import Any, Iterable, Iterator, Mapping

from ..evaluation.kleene import NEGATED, Polarity, every_part, positive
from ..evaluation.logic import _ORDER
from .formulas import EVERYTHING, FALSE, INF, TRUE, And, Atom, Interval, Or, Span, complement, conj, disj, meet, op_span, points  # noqa: F401 (re-exported)
from ..model import All, Any_, Compare, Condition, Derived, Not, RulePack

# --- the fact space ---------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    """One variable of the space: an input fact, or a product of two facts."""

    path: str
    kind: str  # number | boolean | enum | array
    span: Span = EVERYTHING
    values: tuple[Any, ...] = ()
    max_items: int | None = None
    factors: tuple[str, str] | None = None
    #: (measured MAP, SBP, DBP) for a mean pressure: the measured value, else DBP + (SBP - DBP) / 3
    estimate: tuple[str, str, str] | None = None


def schema_variables(state_schema: Mapping[str, Any]) -> dict[str, Variable]:
    """The input facts of the patient-state schema, with exact (strict or not) numeric bounds."""
    out: dict[str, Variable] = {}

    def add(path: str, node: Mapping[str, Any]) -> None:
        t = node.get("type")
        if t == "object":
            for key, child in node.get("properties", {}).items():
                add(f"{path}.{key}" if path else key, child)
        elif t == "array":
            out[path] = Variable(path, "array", values=tuple(node["items"].get("enum", ())), max_items=node.get("maxItems"))
        elif "enum" in node:
            out[path] = Variable(path, "enum", values=tuple(node["enum"]))
        elif t == "boolean":
            out[path] = Variable(path, "boolean", values=(False, True))
        elif t in ("number", "integer"):
            lo, lo_in = (node["minimum"], True) if "minimum" in node else (node.get("exclusiveMinimum", -INF), False)
            hi, hi_in = (node["maximum"], True) if "maximum" in node else (node.get("exclusiveMaximum", INF), False)
            out[path] = Variable(path, "number", (Interval(float(lo), float(hi), lo_in, hi_in),))

    add("", state_schema)
    return out


class SolverLimit(Exception):
    """The search took more steps than allowed (the question is left undecided)."""


#: A store maps a variable to its domain; ``RELATIONS`` holds the fact-to-fact comparisons to check.
RELATIONS = "\0relations"
Store = Mapping[str, Any]


class Space:
    """The fact space of one pack; translates conditions and searches for states."""

    def __init__(self, pack: RulePack, state_schema: Mapping[str, Any], *, budget: int = 200_000) -> None:
        self.variables = schema_variables(state_schema)
        self.derived: dict[str, Derived] = {d.name: d for d in pack.derived}
        for d in pack.derived:  # dependency order: factors come first
            if d.product is not None:
                a, b = (self.variables[p] for p in d.product)
                corners = [x * y for x in (a.span[0].lo, a.span[0].hi) for y in (b.span[0].lo, b.span[0].hi)]
                self.variables[d.name] = Variable(d.name, "number", (Interval(min(corners), max(corners)),), factors=d.product)
            elif d.mean_pressure is not None:
                self.variables[d.name] = Variable(d.name, "number", self.variables[d.mean_pressure[0]].span, estimate=d.mean_pressure)
        self.budget = budget
        self.steps = 0
        self._memo: dict[tuple[Condition, str], Any] = {}
        self._branch_memo: dict[str, tuple[list[tuple[Any, tuple[str, Any]]], Any, Any]] = {}
        self.assumed: dict[str, Any] = {}

    def assuming(self, path: str, value: Any) -> "Space":
        """The same space, in which the derived fact ``path`` is taken to have ``value``.

        Sound only for questions whose goal itself forces ``path`` to ``value`` (a decision's
        population ``derived.X == value``): the rules' own tests of ``path`` then need no search.
        """
        other = object.__new__(Space)
        other.__dict__.update(self.__dict__)
        other._memo, other._branch_memo, other.assumed = {}, {}, {**self.assumed, path: value}
        return other

    # -- translation ------------------------------------------------------------
    def formula(self, cond: Condition, pol: Polarity) -> Any:
        """``cond`` as a formula for polarity ``T`` (true), ``F`` (false), ``NT`` (not true) or ``NF`` (not false)."""
        key = (cond, pol)  # by value: equal conditions have equal formulas, and the key keeps ``cond`` alive
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._translate(cond, pol)
        return found

    def unknown(self, cond: Condition) -> Any:
        """``cond`` is unknown (neither true nor false)."""
        return conj(self.formula(cond, "NT"), self.formula(cond, "NF"))

    def _translate(self, cond: Condition, pol: Polarity) -> Any:
        if isinstance(cond, Not):
            return self.formula(cond.child, NEGATED[pol])
        if isinstance(cond, (All, Any_)):
            kids = [self.formula(c, pol) for c in cond.children]
            return conj(*kids) if every_part(isinstance(cond, All), positive(pol)) else disj(*kids)
        return self._leaf(cond, pol)

    def _leaf(self, leaf: Compare, pol: Polarity) -> Any:
        lb, lk, lu = self.branches(leaf.fact)
        if leaf.op in ("known", "unknown"):
            is_true = lk if leaf.op == "known" else lu
            is_false = lu if leaf.op == "known" else lk
            return {"T": is_true, "F": is_false, "NT": is_false, "NF": is_true}[pol]
        if leaf.value_fact is not None:
            rb, _, ru = self.branches(leaf.value_fact)
        else:
            rb, ru = [(TRUE, ("const", leaf.value))], FALSE
        if pol in ("T", "F"):
            positive = pol == "T"
            return disj(*(conj(sl, sr, self._test(tl, leaf.op, tr, positive)) for sl, tl in lb for sr, tr in rb))
        other = self._leaf(leaf, "F" if pol == "NT" else "T")
        return disj(lu, ru, other)

    def branches(self, path: str) -> tuple[list[tuple[Any, tuple[str, Any]]], Any, Any]:
        """How a fact takes its value: ``[(selector, term)]``, when it is known, when it is unknown."""
        found = self._branch_memo.get(path)
        if found is not None:
            return found
        d = self.derived.get(path)
        out: tuple[list[tuple[Any, tuple[str, Any]]], Any, Any]
        if path in self.assumed:
            out = ([(TRUE, ("const", self.assumed[path]))], TRUE, FALSE)
        elif d is None:
            out = ([(TRUE, ("var", path))], Atom(path, "known"), Atom(path, "unknown"))
        elif d.per_dosing_kg is not None:  # searched where the dosing weight is the actual weight (not obese)
            out = self.branches(d.per_dosing_kg[0])
        elif d.product is not None:
            ks, us = zip(*(self.branches(p)[1:] for p in d.product))
            out = ([(TRUE, ("var", path))], conj(*ks), disj(*us))
        elif d.mean_pressure is not None:
            (_, mk, mu), (_, sk, su), (_, dk, du) = (self.branches(p) for p in d.mean_pressure)
            out = ([(TRUE, ("var", path))], disj(mk, conj(sk, dk)), conj(mu, disj(su, du)))
        elif d.when is not None:
            t, f = self.formula(d.when, "T"), self.formula(d.when, "F")
            out = ([(t, ("const", True)), (f, ("const", False))], disj(t, f), self.unknown(d.when))
        else:
            sels, unknowns, prefix = [], [], TRUE
            for case, value in d.cases:
                sels.append((conj(prefix, self.formula(case, "T")), ("const", value)))
                unknowns.append(conj(prefix, self.unknown(case)))
                prefix = conj(prefix, self.formula(case, "F"))
            sels.append((prefix, ("const", d.default)))
            out = (sels, disj(*(s for s, _ in sels)), disj(*unknowns))
        self._branch_memo[path] = out
        return out

    def _test(self, left: tuple[str, Any], op: str, right: tuple[str, Any], positive: bool) -> Any:
        (lk, lv), (rk, rv) = left, right
        if lk == "const" and rk == "const":
            return TRUE if _ORDER[op](lv, rv) == positive else FALSE
        if lk == "const":  # constant op variable: turn it round
            flipped = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}[op]
            return self._test(right, flipped, left, positive)
        if rk == "var":
            return conj(Atom(lv, "known"), Atom(rv, "known"), Atom(lv, "rel", (op, rv, positive)))
        var = self.variables[lv]
        if var.kind == "array":
            return Atom(lv, "has", (rv, positive))
        if var.kind == "number":
            span = op_span(op, rv)
            return Atom(lv, "num", span if positive else complement(span))
        allowed = frozenset(x for x in var.values if _ORDER[op](x, rv) == positive)
        return Atom(lv, "set", allowed)

    def inputs(self, cond: Condition) -> set[str]:
        """Input facts ``cond`` reads, through derived facts."""
        out: set[str] = set()
        todo = [p for leaf in _leaves(cond) for p in leaf.facts()]
        while todo:
            path = todo.pop()
            d = self.derived.get(path)
            if d is None:
                out.add(path)
            elif path not in out:
                out.add(path)
                todo.extend(d.reads())
        return {p for p in out if p not in self.derived}

    # -- search -----------------------------------------------------------------
    def solutions(self, goal: Any) -> Iterator[Store]:
        """Every region (a store of domains) where ``goal`` holds; raises :class:`SolverLimit` past the budget."""
        self.steps = 0  # the budget is per question
        yield from self._dfs((goal,), {})

    def satisfiable(self, goal: Any) -> bool:
        """Whether any state satisfies ``goal``."""
        return next(self.solutions(goal), None) is not None

    def _tick(self) -> None:
        self.steps += 1
        if self.steps > self.budget:
            raise SolverLimit(f"more than {self.budget} search steps")

    def _dfs(self, pending: tuple[Any, ...], store: Store) -> Iterator[Store]:
        ors: list[Or] = []
        stack = list(pending)
        while stack:
            f = stack.pop()
            if f is TRUE:
                continue
            if f is FALSE:
                return
            if isinstance(f, And):
                stack.extend(f.items)
            elif isinstance(f, Or):
                ors.append(f)
            else:
                applied = self._apply(store, f)
                if applied is None:
                    return
                store = applied
        if not ors:
            yield store
            return
        best: Or | None = None
        best_alive: list[Any] = []
        for o in ors:
            alive = [c for c in o.items if self._viable(c, store)]
            if not alive:
                return
            if best is None or len(alive) < len(best_alive):
                best, best_alive = o, alive
                if len(alive) == 1:
                    break
        rest = tuple(o for o in ors if o is not best)
        for child in best_alive:
            self._tick()
            yield from self._dfs((child,) + rest, store)

    def _viable(self, f: Any, store: Store) -> bool:
        if isinstance(f, Atom):
            return self._apply(store, f) is not None
        if isinstance(f, And):
            for item in f.items:
                if isinstance(item, Atom):
                    applied = self._apply(store, item)
                    if applied is None:
                        return False
                    store = applied
        return f is not FALSE

    def domain(self, store: Store, var: str) -> tuple[Any, ...]:
        """The domain of ``var`` in ``store`` (its full domain if unconstrained)."""
        found = store.get(var)
        if found is not None:
            return found
        v = self.variables[var]
        if v.kind == "number":
            return ("num", True, v.span)
        if v.kind == "array":
            return ("arr", True, True, frozenset(), frozenset())
        return ("set", True, frozenset(v.values))

    def _apply(self, store: Store, atom: Atom) -> Store | None:
        if atom.kind == "rel":
            new = dict(store)
            new[RELATIONS] = store.get(RELATIONS, ()) + ((atom.var,) + atom.arg,)
            return new
        dom = self.domain(store, atom.var)
        tag = dom[0]
        if tag == "arr":
            _, unknown_ok, known_ok, has, lacks = dom
            if atom.kind == "known":
                unknown_ok = False
            elif atom.kind == "unknown":
                known_ok = False
            else:
                member, present = atom.arg
                unknown_ok = False
                has, lacks = (has | {member}, lacks) if present else (has, lacks | {member})
            limit = self.variables[atom.var].max_items
            fits = known_ok and not (has & lacks) and (limit is None or len(has) <= limit)
            if not unknown_ok and not fits:
                return None
            new_dom: tuple[Any, ...] = ("arr", unknown_ok, known_ok, has, lacks)
        else:
            _, unknown_ok, values = dom
            if atom.kind == "known":
                unknown_ok = False
            elif atom.kind == "unknown":
                values = () if tag == "num" else frozenset()
            else:
                unknown_ok = False
                values = meet(values, atom.arg) if tag == "num" else values & atom.arg
            if not unknown_ok and not values:
                return None
            new_dom = (tag, unknown_ok, values)
        if new_dom == dom and atom.var in store:
            return store
        new = dict(store)
        new[atom.var] = new_dom
        return new

    # -- witnesses --------------------------------------------------------------
    def witnesses(self, store: Store, *, typical: Mapping[str, Any] | None = None, valid: Any = None,
                  coupled: Iterable[str] = (), limit: int = 400) -> Iterator[dict[str, Any]]:
        """Concrete patient states (nested, as the schema has them) inside the region ``store``.

        ``typical`` gives preferred values per fact, best first (e.g. from the pack's examples);
        ``valid(state)`` is an oracle for what the schema cannot say (e.g. DBP < SBP), and
        ``coupled`` names the facts it relates (they are varied first). Products are
        realised through their first factor; fact-to-fact comparisons are checked.
        """
        typical = typical or {}
        fixed: dict[str, list[Any]] = {}
        for var, dom in store.items():
            if var == RELATIONS or var not in self.variables:
                continue
            v = self.variables[var]
            if v.factors is not None or v.estimate is not None or dom[1]:  # set through its inputs; unknown is allowed: leave absent
                continue
            fixed[var] = self._candidates(v, dom, typical.get(var))
            if not fixed[var]:
                return
        products = [(var, factors) for var, dom in store.items()
                    if var in self.variables and (factors := self.variables[var].factors) is not None and not dom[1]]
        computed = {factors[0] for _, factors in products}
        estimates = [(self.variables[var], estimate) for var, dom in store.items()
                     if var in self.variables and (estimate := self.variables[var].estimate) is not None and not dom[1]]
        vary = set(coupled) | {r[0] for r in store.get(RELATIONS, ())} | {r[2] for r in store.get(RELATIONS, ())}
        # itertools.product varies its last iterable fastest: put the coupled facts there.
        names = sorted((n for n in fixed if n not in computed), key=lambda n: (n in vary, n))
        tried = 0
        for combo in cartesian(*(fixed[n] for n in names)):
            tried += 1
            if tried > limit:
                return
            facts = dict(zip(names, combo))
            if not self._realise_products(products, store, facts, typical):
                continue
            if not all(self._realise_estimate(var, estimate, store, facts, typical) for var, estimate in estimates):
                continue
            if not all(self._relation_holds(r, facts) for r in store.get(RELATIONS, ())):
                continue
            state = _nest(facts)
            if valid is None or valid(state):
                yield state

    def _realise_products(self, products: list[tuple[str, tuple[str, str]]], store: Store, facts: dict[str, Any],
                          typical: Mapping[str, Any]) -> bool:
        """Give each known product (name, its two factors) a value its factors realise."""
        for name, (a, b) in products:
            target = self.domain(store, name)[2]
            if a in facts and b in facts:
                if not any(iv.contains(facts[a] * facts[b]) for iv in target):
                    return False
                continue
            free, given = (a, b) if b in facts else (b, a)
            if given not in facts:  # neither factor fixed yet: fix one first
                gv = self.variables[given]
                options = self._candidates(gv, self.domain(store, given), typical.get(given))
                if not options:
                    return False
                facts[given] = options[0]
            g = facts[given]
            if g == 0:
                return False
            scaled = tuple(Interval(iv.lo / g, iv.hi / g, iv.lo_in, iv.hi_in) for iv in target)
            span = meet(self.domain(store, free)[2], scaled)
            options = self._candidates(self.variables[free], ("num", False, span), typical.get(free))
            if not options:
                return False
            facts[free] = options[0]
        return True

    def _realise_estimate(self, var: Variable, estimate: tuple[str, str, str], store: Store, facts: dict[str, Any],
                          typical: Mapping[str, Any]) -> bool:
        """Give a known mean pressure (``var``, its ``estimate``: measured MAP, SBP, DBP) its value: through the
        measured MAP if it may be known, else SBP and DBP."""
        m, sbp, dbp = estimate
        target = self.domain(store, var.path)[2]
        if m in facts:
            return any(iv.contains(facts[m]) for iv in target)
        mdom = self.domain(store, m)
        options = self._candidates(self.variables[m], ("num", False, meet(mdom[2], target)), typical.get(m)) if mdom[2] else []
        if options:
            facts[m] = options[0]
            return True
        if sbp in facts and dbp in facts:
            from ..evaluation.logic import estimated_map

            return any(iv.contains(estimated_map(facts[sbp], facts[dbp])) for iv in target)
        for mv in self._candidates(var, ("num", False, target), ()):
            for dv in ([facts[dbp]] if dbp in facts else self._candidates(self.variables[dbp], self.domain(store, dbp), typical.get(dbp))):
                sv = round(3 * mv - 2 * dv, 6)
                if sbp in facts and facts[sbp] != sv:
                    continue
                if any(iv.contains(sv) for iv in meet(self.domain(store, sbp)[2], self.variables[sbp].span)):
                    facts[sbp], facts[dbp] = sv, dv
                    return True
        return False

    @staticmethod
    def _relation_holds(rel: tuple[str, str, str, bool], facts: Mapping[str, Any]) -> bool:
        left, op, right, positive = rel
        return left in facts and right in facts and _ORDER[op](facts[left], facts[right]) == positive

    def _candidates(self, var: Variable, dom: tuple[Any, ...], preferred: Iterable[Any] | None) -> list[Any]:
        if dom[0] == "arr":
            return [sorted(dom[3], key=var.values.index)] if dom[2] and not (dom[3] & dom[4]) else []
        if dom[0] == "set":
            liked = [x for x in preferred or () if x in dom[2]]
            return liked + sorted((x for x in dom[2] if x not in liked), key=var.values.index)
        span = meet(dom[2], var.span)
        liked = [x for x in preferred or () if any(iv.contains(x) for iv in span)][:2]
        # Where a rule set a bound, a value next to it shows the problem best; elsewhere a typical value reads best.
        near = [x for iv in span for x in _picks(iv, var.span[0])]
        out: list[Any] = []
        # "> 0" only says "present": a typical value reads better than a hair above zero.
        trivial = span == var.span or all(iv.lo == 0 and iv.hi == var.span[0].hi for iv in span)
        for x in (liked + near if trivial else near[:1] + liked + near[1:]):
            if x not in out:
                out.append(x)
        return out[:6]


def _picks(iv: Interval, outer: Interval) -> list[float]:
    """A few tidy numbers inside ``iv``: next to the bound that a rule set, then the middle."""
    lo_set, hi_set = (iv.lo, iv.lo_in) != (outer.lo, outer.lo_in), (iv.hi, iv.hi_in) != (outer.hi, outer.hi_in)
    lo = iv.lo if iv.lo != -INF else min(iv.hi, 0.0) - 1.0
    hi = iv.hi if iv.hi != INF else max(iv.lo, 0.0) + 1.0
    ref = iv.hi if hi_set and not lo_set else iv.lo if lo_set else max(abs(lo), abs(hi))
    step = 10.0 ** (math.floor(math.log10(abs(ref))) - 1) if ref not in (0, INF, -INF) else 0.01
    raw: list[float] = []
    if hi_set and not lo_set:
        raw += [hi, hi - step, hi - 5 * step]
    elif lo_set and not hi_set:
        raw += [lo, lo + step, lo + 5 * step]
    mid = (lo + hi) / 2
    raw += [round(mid / step) * step, mid, lo + (hi - lo) / 4, lo + 3 * (hi - lo) / 4, lo, hi]
    out: list[float] = []
    for x in raw:
        x = round(x, 10)
        x = int(x) if x == int(x) and abs(x) < 1e12 else x
        if iv.contains(x) and x not in out:
            out.append(x)
    return out


def _nest(facts: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for path in sorted(facts):
        if "." in path:
            section, key = path.split(".", 1)
            state.setdefault(section, {})[key] = facts[path]
        else:
            state[path] = facts[path]
    return state


def _leaves(cond: Condition) -> list[Compare]:
    from ..model import leaves

    return leaves(cond)
