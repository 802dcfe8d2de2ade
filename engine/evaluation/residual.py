"""When facts are missing: what each undecided rule still needs, and which question decides most.

For every rule that is not evaluable, the *residual* of its condition is computed: the
condition partially evaluated over the known facts (three-valued, exactly as
:mod:`pressor.engine.evaluation.logic`), with derived facts expanded into their
definitions, so that what is left reads only input facts that are absent. It is
built per polarity, as the lint solver does: ``residual(cond, True)`` holds, for any
facts supplied later, exactly when the rule would fire, and ``residual(cond, False)``
exactly when it would be false. Negation therefore never meets an unknown (an
unknown derived number compared under ``not`` stays unknown, as in the engine).

The outcome of each undecided rule is then one of:

* **conditional**: the residual can be true for a plausible patient (asked of the lint
  solver once per distinct residual, cached per pack; residuals hold only absent facts,
  so they repeat across patients);
* **not applicable**: the residual is false, either because no value of the missing
  facts can make the rule fire, or because the pack declares what the absence of a
  fact means (``absent_means:``, e.g. no ``order`` section = no order proposed);
* undecided: the solver ran out of its budget (rare; the rule stays "could not decide").

A missing fact *decides* a conditional rule when its possible values do not all leave
the rule in the same state; the questions are ranked by the most severe rule they
decide, then by how many.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Iterable, Mapping, NamedTuple

from ..model import SEVERITY_ORDER, AbsentMeans, Compare, Condition, Rule, RulePack, leaves
from .logic import _ORDER as _ORDER_OF, compare, derive, truth
from .partial import Residual, Partial, inputs_of
from .memo import BUILD_LOCK, superseded_by


class Undecided(NamedTuple):
    """An undecided rule: its residual (fires exactly when this holds) and what became of it."""

    rule: Rule
    residual: Residual
    outcome: str  # conditional | not_applicable | superseded (a rule that fired refines it) | undecided
    because: tuple[AbsentMeans, ...] = ()
    deciding: tuple[str, ...] = ()  # conditional: the missing facts whose answer changes it
    text: str = ""  # conditional: the residual in clinical words
    needs: tuple[str, ...] = ()  # conditional: the facts the residual reads
    #: conditional: the advice it becomes (built with the outcome, so that analyses sharing it share it too)
    advice: Any = None
    #: conditional: its residual only asks whether facts are recorded (advice that holds whatever the answer)
    whatever: bool = False


_new_tuple = tuple.__new__  # a named tuple from its values, without its generated __new__


class Question(NamedTuple):
    """A missing fact and the conditional rules its answer decides (most severe first)."""

    fact: str
    decides: tuple[Rule, ...]


class Analysis(NamedTuple):
    """What :func:`analyse` found for one patient."""

    undecided: tuple[Undecided, ...]
    questions: tuple[Question, ...]
    #: Everything the analysis depends on: each rule's outcome key, and the rules shown (equal keys, equal analyses).
    key: tuple[Any, ...] = ()


_UNSEEN = object()


class _Observed(NamedTuple):
    """Per call: what the known facts say to each probe comparison (filled on demand), and what every key shares."""

    parts: list[Any]
    common: tuple[Any, ...]  # the absent facts declared not applicable
    facts: Mapping[str, Any]


class ResidualContext:
    """Per-pack data for residuals, built once: derived facts, the facts each rule reads through
    them, fact domains, and a bounded cache of the solver's answers."""

    #: Solver steps allowed per question; past it the rule is left "could not decide".
    BUDGET = 20_000
    CACHE_SIZE = 4096
    #: The solver's translated formulas kept before it starts afresh: about 4 KB each, and new residuals keep
    #: coming (varied states: 20,000 formulas and +65 MB by 200,000 states at the former 50,000; the satisfiable
    #: answers in front of it keep their own cache, so starting afresh costs little).
    SOLVER_FORMULAS = 1024
    #: Whole analyses (and their advice lists) kept: the same patient asked about again, or alike ones.
    ANALYSES = 4096

    def __init__(self, pack: RulePack) -> None:
        from .validate import STATE_SCHEMA, schema

        self.pack = pack
        self.derived = {d.name: d for d in pack.derived}
        #: Derived numbers of their own (products, the mean pressure), recomputed when a fact is supplied.
        self.numbers = tuple(d for d in pack.derived if d.product is not None or d.mean_pressure is not None)
        #: Each derived number's name and the facts it is computed from (a product's factors, the pressures).
        self.number_inputs: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
            (d.name, inputs) for d in pack.derived if (inputs := d.product or d.mean_pressure) is not None)
        self._schema = schema(STATE_SCHEMA)
        self.domains = domains_of(self._schema)
        self._space: Any = None
        self._lock = threading.Lock()
        self._sat: OrderedDict[Any, bool | None] = OrderedDict()
        self._deciding: OrderedDict[Any, tuple[str, ...]] = OrderedDict()
        self.order = {r.id: i for i, r in enumerate(pack.rules)}
        # a derived fact's own short label when it has one ("MAP"), else its description
        self.descriptions = {d.name: d.raw.get("label") or d.description for d in pack.derived}
        #: Outcome per (rule, what its known facts say, declarations in force): residuals depend on nothing else
        #: (the deciding facts, which may also depend on known factors of products, are filled in per call).
        self.outcomes: OrderedDict[Any, tuple[Any, Undecided]] = OrderedDict()  # key -> (the key, outcome)
        #: Whole analyses, and what the caller assembles from one (the advice lists), by :attr:`Analysis.key`.
        self.analyses: OrderedDict[Any, Analysis] = OrderedDict()
        self.assembled: OrderedDict[Any, Any] = OrderedDict()
        #: The comparisons residuals can depend on, and per rule (probe, the derived facts whose definitions hold
        #: it, or None if the rule's own condition does). Plain data, kept in the pack cache with the pack.
        self._probe_list: list[tuple[Compare, tuple[Any, ...] | None]]
        self._probe_index: dict[str, tuple[tuple[int, frozenset[str] | None], ...]]
        kept = pack.cache.residual_probes
        if kept is None:
            kept = pack.cache.residual_probes = self._probes(pack)
        self._probe_list, self._probe_index = kept
        #: Per probe, (fact, operator, constant) when it is a plain comparison with a constant (most are): its
        #: answer is then the comparison's, or unknown without the fact, with no call (see :meth:`_probe`).
        self._plain: list[tuple[str, Any, Any] | None] = [
            (leaf.fact, _ORDER_OF[leaf.op], leaf.value)
            if cases is None and leaf.value_fact is None and leaf.op in _ORDER_OF else None
            for leaf, cases in self._probe_list]
        self._number_names = frozenset(d.name for d in self.numbers)

    def _probes(self, pack: RulePack) -> tuple[list[tuple[Compare, tuple[Any, ...] | None]], dict[str, Any]]:
        probes: dict[Compare, int] = {}
        probe_list: list[tuple[Compare, tuple[Any, ...] | None]] = []
        probe_index: dict[str, tuple[tuple[int, frozenset[str] | None], ...]] = {}
        for r in pack.rules:
            index = []
            for leaf, cases, via in self._probes_of(r.when):
                if leaf not in probes:
                    probes[leaf] = len(probe_list)
                    probe_list.append((leaf, cases))
                index.append((probes[leaf], via))
            probe_index[r.id] = tuple(index)
        return probe_list, probe_index

    def _probes_of(self, cond: Condition) -> list[tuple[Compare, tuple[Any, ...] | None, frozenset[str] | None]]:
        """Every comparison the rule's residual can depend on, derived facts followed down to input facts;
        a comparison with a derived number carries that number's possible values. Each comes with the derived
        facts whose definitions hold it (None: the rule's own condition does): once those are all known they
        are constants of the residual, and the comparison cannot matter."""
        cases_of: dict[Compare, tuple[Any, ...] | None] = {}
        via: dict[Compare, set[str] | None] = {}
        todo: list[tuple[Compare, str | None]] = [(leaf, None) for leaf in leaves(cond)]
        seen: set[str] = set()
        while todo:
            leaf, holder = todo.pop()
            if leaf in via:
                held = via[leaf]
                if held is not None:
                    if holder is None:
                        via[leaf] = None
                    else:
                        held.add(holder)
                continue
            via[leaf] = None if holder is None else {holder}
            cases = None
            for path in leaf.facts():
                d = self.derived.get(path)
                if d is None:
                    continue
                if d.cases:
                    cases = tuple(v for _, v in d.cases) + ((d.default,) if d.default is not None else ())
                if path not in seen:
                    seen.add(path)
                    conds = ([d.when] if d.when is not None else []) + [c for c, _ in d.cases]
                    todo.extend((x, path) for c in conds for x in leaves(c))
            cases_of[leaf] = cases
        return [(leaf, cases_of[leaf], None if held is None else frozenset(held)) for leaf, held in via.items()]

    def observe(self, facts: Mapping[str, Any], absent: frozenset[str]) -> "_Observed":
        """What every key of this call shares; the probe comparisons are evaluated on demand, once each."""
        return _Observed([_UNSEEN] * len(self._probe_list), (absent,), facts)

    def factors(self, outcomes: Iterable[Undecided], facts: Mapping[str, Any]) -> tuple[Any, ...]:
        """The known factors of each unknown derived number (a product, the mean pressure) that a conditional
        residual reads: which missing facts decide such a residual depends on them (see :meth:`deciding`)."""
        read = {p for o in outcomes if o.outcome == "conditional" for p in o.needs if p in self._number_names}
        if not read:
            return ()
        return tuple((name, tuple(facts.get(p) for p in inputs)) for name, inputs in self.number_inputs if name in read)

    def _probe(self, i: int, facts: Mapping[str, Any]) -> Any:
        leaf, cases = self._probe_list[i]
        t = compare(leaf, facts)
        if t is None and cases is not None:
            # a comparison with an unknown derived number: the known side against each value it can take
            extra = []
            for side, other in ((leaf.fact, leaf.value_fact), (leaf.value_fact, leaf.fact)):
                if side is not None and side in facts and other is not None and other not in facts:
                    v = facts[side]
                    extra.append(tuple(_ORDER_OF[leaf.op](v, c) if side == leaf.fact else _ORDER_OF[leaf.op](c, v)
                                       for c in cases))
            return tuple(extra)
        if t is None and leaf.value_fact is not None:
            return (facts.get(leaf.fact), facts.get(leaf.value_fact))
        return t

    def key(self, rule: Rule, seen: "_Observed") -> tuple[Any, ...]:
        """What a rule's residual depends on: what the known facts say to each comparison it can reach,
        and which absent facts the pack declares not applicable."""
        parts, facts, plain = seen.parts, seen.facts, self._plain
        out = [rule.id, seen.common]
        for i, held in self._probe_index[rule.id]:
            part = parts[i]
            if part is _UNSEEN:
                quick = plain[i]
                if quick is None:
                    part = self._probe(i, facts)
                else:
                    fact, op, value = quick
                    part = op(facts[fact], value) if fact in facts else None
                parts[i] = part
            out.append(part)
        return tuple(out)

    def remember(self, key: tuple[Any, ...], outcome: Any, memo: OrderedDict[Any, Any] | None = None) -> Any:
        """Keep ``outcome`` for ``key`` in ``memo`` (default: the rule outcomes); bounded, oldest dropped first
        (whole analyses are about 10 KB each with their advice lists: fewer of them are kept)."""
        limit = 4 * self.CACHE_SIZE if memo is None else self.ANALYSES
        memo = self.outcomes if memo is None else memo
        with self._lock:
            memo[key] = outcome
            if len(memo) > limit:
                memo.popitem(last=False)
        return outcome

    def satisfiable(self, res: Residual) -> bool | None:
        """Can ``res`` be true for a plausible patient (schema ranges)? None if the solver gave up."""
        if res is True or res is False:
            return res
        with self._lock:
            if res in self._sat:
                self._sat.move_to_end(res)
                return self._sat[res]
            from ..authoring.solver import SolverLimit, Space

            if self._space is None or len(self._space._memo) > self.SOLVER_FORMULAS:
                self._space = Space(self.pack, self._schema, budget=self.BUDGET)
            try:
                answer: bool | None = self._space.satisfiable(self._space.formula(res, "T"))
            except SolverLimit:
                answer = None
            self._sat[res] = answer
            if len(self._sat) > self.CACHE_SIZE:
                self._sat.popitem(last=False)
            return answer

    def deciding(self, res: Residual, facts: Mapping[str, Any]) -> tuple[str, ...]:
        """The missing facts whose values do not all leave ``res`` in the same state (cached per residual;
        a residual over a product also depends on its known factor, which joins the key)."""
        factors = tuple(sorted((p, facts[p]) for name, inputs in self.number_inputs if name in inputs_of(res)
                               for p in inputs if p in facts)) if self.number_inputs else ()
        key = (res, factors)
        found = self._deciding.get(key)
        if found is not None:
            return found
        out = []
        for fact in _askable(self, res):
            seen = set()
            values = _values(self, fact, res, facts)
            # the two ends first: most residuals compare against thresholds, which the ends fall either side of
            for value in (values[:1] + values[-1:] + values[1:-1]) if len(values) > 2 else values:
                seen.add(truth(res, _with(self, facts, fact, value)))
                if len(seen) > 1:
                    out.append(fact)
                    break
        with self._lock:
            self._deciding[key] = found = tuple(out)
            if len(self._deciding) > self.CACHE_SIZE:
                self._deciding.popitem(last=False)
        return found

    def absent_declared(self, facts: Mapping[str, Any]) -> tuple[frozenset[str], dict[str, AbsentMeans]]:
        """Absent facts that the pack's ``absent_means`` declarations make not applicable here."""
        out: dict[str, AbsentMeans] = {}
        for decl in self.pack.absent_means:
            if decl.when is not None and truth(decl.when, facts) is not True:
                continue
            for path in decl.facts:
                if path not in facts:
                    out.setdefault(path, decl)
        return frozenset(out), out


def context(pack: RulePack) -> ResidualContext:
    """The pack's residual context (built on first use, then kept with the pack)."""
    ctx = pack.cache.residual
    if ctx is None:
        with BUILD_LOCK:
            ctx = pack.cache.residual
            if ctx is None:
                ctx = pack.cache.residual = ResidualContext(pack)
    return ctx


def analyse(pack: RulePack, rules: Iterable[Rule], facts: Mapping[str, Any], shown: frozenset[str] = frozenset()) -> Analysis:
    """Residuals, outcomes and ranked questions for the undecided ``rules`` (``facts`` already derived).

    ``shown`` holds the rules that fired: a conditional rule one of them supersedes is left out.
    """
    ctx = context(pack)
    absent, declared = ctx.absent_declared(facts)
    seen = ctx.observe(facts, absent)
    superseded = superseded_by(pack)
    keys = []
    outcomes: list[Undecided] = []
    partials: list[Partial] = []  # built on the first cache miss only
    for rule in rules:
        key = ctx.key(rule, seen)
        entry = ctx.outcomes.get(key)
        if entry is None:
            if not partials:
                plain = Partial(ctx.derived, facts, frozenset())
                partials = [plain, Partial(ctx.derived, facts, absent) if absent else plain]
            entry = ctx.remember(key, (key, _outcome(ctx, rule, facts, absent, declared, *partials)))
        key, found = entry  # the stored key itself: whole-analysis keys share it instead of holding copies
        keys.append(key)
        outcomes.append(found)
    whole = (tuple(keys), shown, ctx.factors(outcomes, facts))
    known = ctx.analyses.get(whole)
    if known is not None:
        return known
    undecided: list[Undecided] = []
    for found in outcomes:
        if found.outcome == "conditional":
            # Undecided(*found[:4], deciding, *found[5:]), without _replace's keyword handling
            found = _new_tuple(Undecided, (*found[:4], ctx.deciding(found.residual, facts), *found[5:]))
            if superseded.get(found.rule.id, frozenset()) & shown:
                found = found._replace(outcome="superseded")
        undecided.append(found)
    return ctx.remember(whole, Analysis(tuple(undecided), _questions(ctx, undecided), whole), ctx.analyses)


def _outcome(ctx: "ResidualContext", rule: Rule, facts: Mapping[str, Any], absent: frozenset[str],
             declared: Mapping[str, AbsentMeans], plain: Partial, partial: Partial) -> Undecided:
    """What becomes of one undecided rule: its residual, and conditional / not applicable / undecided."""
    res = partial.of(rule.when, True)
    if res is False:
        unmasked = plain.of(rule.when, True)
        if absent and unmasked is not False:
            reads = set(inputs_of(unmasked)) & absent
            return Undecided(rule, False, "not_applicable", tuple(dict.fromkeys(declared[p] for p in sorted(reads))))
        return Undecided(rule, False, "not_applicable")
    sat = ctx.satisfiable(res)
    if sat is None:
        return Undecided(rule, res, "undecided")
    if not sat:
        return Undecided(rule, False, "not_applicable")
    from .wording import words

    # which missing facts decide it is asked per patient (it may depend on the known factor of a product)
    from .compiled import compiled_pack

    text, needs = words(res, ctx.descriptions), inputs_of(res)
    advice = compiled_pack(ctx.pack).by_id[rule.id].conditional(res, text, needs)
    return Undecided(rule, res, "conditional", text=text, needs=needs, advice=advice,
                     whatever=all(leaf.op == "known" for leaf in leaves(res)))


def _with(ctx: ResidualContext, facts: Mapping[str, Any], fact: str, value: Any) -> dict[str, Any]:
    """``facts`` with ``fact`` supplied as ``value``, and the derived numbers it completes."""
    known = dict(facts)
    known[fact] = value
    stale = [d for d in ctx.numbers if fact in (d.product or d.mean_pressure or ())]
    for d in stale:
        known.pop(d.name, None)
    derive(tuple(stale), known)
    return known


def _questions(ctx: "ResidualContext", undecided: list[Undecided]) -> tuple[Question, ...]:
    """Missing facts by the most severe conditional rule their answer decides, then by how many."""
    decides: dict[str, list[Rule]] = {}
    for item in undecided:
        if item.outcome == "conditional":
            for fact in item.deciding:
                decides.setdefault(fact, []).append(item.rule)
    order = ctx.order
    questions = [
        Question(fact, tuple(sorted(rules, key=lambda r: (SEVERITY_ORDER[r.severity], order[r.id]))))
        for fact, rules in decides.items()
    ]
    questions.sort(key=lambda q: (min(SEVERITY_ORDER[r.severity] for r in q.decides), -len(q.decides), q.fact))
    return tuple(questions)


def _askable(ctx: ResidualContext, res: Residual) -> list[str]:
    """The input facts a clinician can be asked for (a product is asked through its missing factors)."""
    out: list[str] = []
    for path in inputs_of(res):
        d = ctx.derived.get(path)
        for p in ((d.product or d.mean_pressure or (path,)) if d is not None else (path,)):
            if p in ctx.domains and p not in out:
                out.append(p)
    return out


def _values(ctx: ResidualContext, fact: str, res: Residual, facts: Mapping[str, Any]) -> list[Any]:
    """One value of ``fact`` from each region where the residual's comparisons of it could answer differently."""
    kind, domain = ctx.domains[fact]
    if kind == "boolean":
        return [True, False]
    if kind == "enum":
        return list(domain)
    if kind == "array":
        members = sorted({leaf.value for leaf in leaves(res) if leaf.fact == fact and leaf.op == "includes"})
        return [[]] + [[m] for m in members] + ([members] if len(members) > 1 else [])
    lo, lo_in, hi, hi_in = domain
    cuts: set[float] = set()
    for leaf in leaves(res):
        values = leaf.value if leaf.op == "in" else (leaf.value,)
        scale = 1.0
        if leaf.fact != fact:  # a product: its threshold divided by the known factor
            d = ctx.derived.get(leaf.fact)
            if d is not None and d.mean_pressure is not None and fact == d.mean_pressure[0]:
                scale = 1.0  # the measured MAP is the mean pressure itself
            elif d is None or d.product is None or fact not in d.product:
                continue
            else:
                other = d.product[1] if d.product[0] == fact else d.product[0]
                if not facts.get(other):
                    continue
                scale = float(facts[other])
        for v in values:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                cuts.add(v / scale)
    points = sorted(cuts)
    candidates = [lo, hi] + points
    candidates += [(a + b) / 2 for a, b in zip(points, points[1:])]
    if points:
        candidates += [points[0] - 1, points[-1] + 1, (lo + points[0]) / 2, (points[-1] + hi) / 2]
    if not lo_in:
        candidates += [lo + min(1.0, (points[0] - lo) / 2 if points and points[0] > lo else 1.0)]
    return sorted({c for c in candidates if (lo < c or (lo_in and c == lo)) and (c < hi or (hi_in and c == hi))})


def domains_of(state_schema: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """Each input fact's kind and domain: values for booleans/enums/arrays, (min, max) for numbers."""
    out: dict[str, tuple[str, Any]] = {}

    def add(path: str, node: Mapping[str, Any]) -> None:
        t = node.get("type")
        if t == "object":
            for key, child in node.get("properties", {}).items():
                add(f"{path}.{key}" if path else key, child)
        elif t == "array":
            out[path] = ("array", tuple(node["items"].get("enum", ())))
        elif "enum" in node:
            out[path] = ("enum", tuple(node["enum"]))
        elif t == "boolean":
            out[path] = ("boolean", (True, False))
        elif t in ("number", "integer"):
            lo, lo_in = (node["minimum"], True) if "minimum" in node else (node.get("exclusiveMinimum", 0), False)
            hi, hi_in = (node["maximum"], True) if "maximum" in node else (node.get("exclusiveMaximum", 1e6), False)
            out[path] = ("number", (float(lo), lo_in, float(hi), hi_in))

    add("", state_schema)
    return out
