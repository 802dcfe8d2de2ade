"""Conditions compiled into Python once per pack: the hot path of :func:`evaluate`.

:mod:`.logic` walks the condition tree on every call; it stays the reference semantics and
the oracle of the differential tests (``tests/test_compiled.py``). This module turns each
condition, once, into

* ``truth(facts)``: Kleene truth (True / False / None = unknown), generated Python source
  (straight-line code, one function per all/any group, constants bound by name), compiled
  with :func:`compile`; conditions are data (fact names, operators from a closed set,
  constants), never code, so nothing authored is ever executed;
* ``missing(facts, missing_of)``: for a condition whose truth is unknown, the input facts
  whose absence made it so (what :func:`.logic.unknowns` returns), a closure;
* ``verdict(facts)``: truth and the deciding evidence (what :func:`.logic.verdict` returns),
  a closure, called only for rules that fired (and for the derived facts their evidence names).

Each rule also gets the parts of its recommendation that do not depend on the patient,
built once (:class:`CompiledRule`). The compiled form lives in ``pack.cache`` and is
rebuilt (in a few milliseconds) whenever a pack is loaded, also from the pack cache.
"""
from __future__ import annotations

import operator
from dataclasses import MISSING, fields
from typing import Any, Callable, Mapping, Sequence, TypeGuard

from .doses import compute_dose
from .logic import Derivation, derive_mean_pressure, derive_per_dosing_kg, per_dosing_kg_evidence
from .kleene import gather, not3
from .memo import BUILD_LOCK
from .pack_cache import compiled_codes
from ..model import (SEVERITY_ORDER, All, Any_, Compare, Condition, Conditional, Derived, Evidence, NotEvaluable, Not,
                     Recommendation, Rule, RulePack, leaves)

Truth = Callable[[Mapping[str, Any]], "bool | None"]
Missing = Callable[[Mapping[str, Any], Mapping[str, frozenset]], frozenset]
VerdictFn = Callable[[Mapping[str, Any]], "tuple[bool | None, tuple[Evidence, ...]]"]

_EMPTY: frozenset[str] = frozenset()
_ABSENT = object()
_PY_OPS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "==", "!=": "!="}


# --- truth: generated source -------------------------------------------------

class _TruthSource:
    """Python source for the Kleene truth of many conditions, with their constants."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {"_A": _ABSENT}
        self._count = 0
        self._emitted: dict[int, str] = {}

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def const(self, value: Any) -> str:
        name = self._name("c")
        self.constants[name] = value
        return name

    def function(self, cond: Condition) -> str:
        """Emit ``def tN(f)`` returning the truth of ``cond`` (once per node); return its name."""
        if id(cond) in self._emitted:
            return self._emitted[id(cond)]
        name = self._emitted[id(cond)] = self._name("t")
        body = self._group(cond) if isinstance(cond, All) or _is_any(cond) else [f"    return {self._expr(cond)}"]
        self.lines.append(f"def {name}(f):")
        self.lines.append("    g = f.get")
        self.lines.extend(body)
        return name

    def _expr(self, cond: Condition) -> str:
        """An expression for ``cond`` reading ``f``/``g`` (groups become calls of their own function)."""
        if isinstance(cond, Compare):
            return self._leaf(cond)
        if isinstance(cond, Not):
            return f"(None if (n := {self._expr(cond.child)}) is None else not n)"
        return f"{self.function(cond)}(f)"

    def _leaf(self, leaf: Compare) -> str:
        key = self.const(leaf.fact)
        if leaf.op == "known":
            return f"({key} in f)"
        if leaf.op == "unknown":
            return f"({key} not in f)"
        if leaf.value_fact is not None:
            other = self.const(leaf.value_fact)
            return (f"(None if (a := g({key}, _A)) is _A or (b := g({other}, _A)) is _A "
                    f"else a {_PY_OPS[leaf.op]} b)")
        value = self.const(leaf.value)
        if leaf.op == "in":
            test = f"v in {value}"
        elif leaf.op == "includes":
            test = f"{value} in v"
        else:
            test = f"v {_PY_OPS[leaf.op]} {value}"
        return f"(None if (v := g({key}, _A)) is _A else {test})"

    def _group(self, cond: All | Any_) -> list[str]:
        """:func:`.kleene.junction` written out: stop at the first part that decides, else unknown if one was."""
        conj = isinstance(cond, All)
        decisive = repr(not conj)  # the part's truth that decides the whole (kleene.decides)
        out = ["    u = False"]
        for child in cond.children:
            out.append(f"    r = {self._expr(child)}")
            out.append(f"    if r is {decisive}: return {decisive}")
            out.append("    if r is None: u = True")
        out.append(f"    return None if u else {conj!r}")
        return out


def _is_any(cond: Condition) -> TypeGuard[Any_]:
    return not isinstance(cond, (All, Compare, Not))


#: Lines of generated source compiled at a time: a whole 3,000-rule pack at once peaked ~140 MB above
#: the pack (the compiler holds the module's syntax tree and symbol tables until it is done).
CHUNK_LINES = 1000


def compile_truths(conditions: Sequence[Condition]) -> list[Truth]:
    """One compiled truth function per condition, all in one namespace, compiled in parts of whole functions."""
    source = _TruthSource()
    names = [source.function(c) for c in conditions]
    namespace = dict(source.constants)
    for code in compiled_codes(_parts(source.lines, CHUNK_LINES), "<pressor compiled conditions>"):
        exec(code, namespace)  # noqa: S102 - our own generated source: names, operators, constants bound by name
    return [namespace[n] for n in names]


def _parts(lines: list[str], size: int) -> list[str]:
    """The source in parts of about ``size`` lines, each cut before a ``def`` (a function is never split)."""
    parts: list[str] = []
    start = 0
    for i, line in enumerate(lines):
        if i - start >= size and line.startswith("def "):
            parts.append("\n".join(lines[start:i]) + "\n")
            start = i
    parts.append("\n".join(lines[start:]) + "\n")
    return parts


# --- missing facts and evidence: closures (cold path) ---------------------------

#: The comparison operators as C functions (``in``: the value is one of the constants; ``includes``: the list holds it).
_OPERATOR = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
             "!=": operator.ne, "in": lambda a, b: a in b, "includes": operator.contains}
_new_evidence = tuple.__new__  # Evidence(...) without the named tuple's Python-level __new__


def _leaf_truth(leaf: Compare) -> Truth:
    """Truth of one comparison as a closure (leaves are many; only groups get generated code)."""
    fact, other, value = leaf.fact, leaf.value_fact, leaf.value
    if leaf.op == "known":
        return lambda facts: fact in facts
    if leaf.op == "unknown":
        return lambda facts: fact not in facts
    op = _OPERATOR[leaf.op]
    if other is not None:
        return lambda facts: op(facts[fact], facts[other]) if fact in facts and other in facts else None
    return lambda facts: op(facts[fact], value) if fact in facts else None


def compile_missing(cond: Condition, truth_of: Callable[[Condition], Truth]) -> Missing:
    """``missing(facts, missing_of)``: the input facts behind an unknown ``cond`` (as :func:`.logic.unknowns`)."""
    if isinstance(cond, Compare):
        paths = cond.facts()

        def leaf_missing(facts: Mapping[str, Any], missing_of: Mapping[str, frozenset]) -> frozenset:
            out = _EMPTY
            for path in paths:
                if path not in facts:
                    out = out | missing_of.get(path, frozenset((path,)))
            return out

        return leaf_missing
    if isinstance(cond, Not):
        return compile_missing(cond.child, truth_of)
    kids = tuple((truth_of(c), compile_missing(c, truth_of)) for c in cond.children)

    def group_missing(facts: Mapping[str, Any], missing_of: Mapping[str, frozenset]) -> frozenset:
        out = _EMPTY
        for truth, missing in kids:
            if truth(facts) is None:
                out = out | missing(facts, missing_of)
        return out

    return group_missing


def compile_verdict(cond: Condition) -> VerdictFn:
    """``verdict(facts)``: truth and deciding evidence, as :func:`.logic.verdict` (missing facts not kept)."""
    if isinstance(cond, Compare):
        fact, text, other = cond.fact, cond.text, cond.value_fact
        if cond.op in ("known", "unknown"):
            wanted = cond.op == "known"

            def presence_verdict(facts: Mapping[str, Any]) -> tuple[bool | None, tuple[Evidence, ...]]:
                present = fact in facts
                t = present is wanted
                return t, (_new_evidence(Evidence, (fact, text, present, t)),)

            return presence_verdict
        op, value = _OPERATOR[cond.op], cond.value
        if other is None:
            def leaf_verdict(facts: Mapping[str, Any]) -> tuple[bool | None, tuple[Evidence, ...]]:
                if fact not in facts:
                    return None, ()
                shown = facts[fact]
                t = op(shown, value)
                return t, (_new_evidence(Evidence, (fact, text, shown, t)),)

            return leaf_verdict

        def pair_verdict(facts: Mapping[str, Any]) -> tuple[bool | None, tuple[Evidence, ...]]:
            if fact not in facts or other not in facts:
                return None, ()
            shown, against = facts[fact], facts[other]
            t = op(shown, against)
            return t, (_new_evidence(Evidence, (fact, text, shown, t)), _new_evidence(Evidence, (other, text, against, t)))

        return pair_verdict
    if isinstance(cond, Not):
        inner = compile_verdict(cond.child)

        def not_verdict(facts: Mapping[str, Any]) -> tuple[bool | None, tuple[Evidence, ...]]:
            t, evidence = inner(facts)
            return not3(t), evidence  # unknown carries no evidence

        return not_verdict
    conj = isinstance(cond, All)
    if isinstance(cond, All) and all(_constant_leaf(c) for c in cond.children):
        return _all_constants_verdict(cond)
    kids = tuple(compile_verdict(c) for c in cond.children)

    def group_verdict(facts: Mapping[str, Any]) -> tuple[bool | None, tuple[Evidence, ...]]:
        t, deciding = gather(conj, (kid(facts) for kid in kids))
        return t, (() if t is None else tuple(e for evidence in deciding for e in evidence))

    return group_verdict


def _constant_leaf(cond: Condition) -> bool:
    return isinstance(cond, Compare) and cond.value_fact is None and cond.op not in ("known", "unknown")


def _all_constants_verdict(cond: All) -> VerdictFn:
    """The verdict of an ``all`` of comparisons with constants (most rules) in one loop, as
    :func:`.kleene.gather` decides it from its leaves' verdicts: false with the first false leaf's evidence,
    else unknown (no evidence) if a fact is missing, else true with every leaf's evidence, in order."""
    spec = tuple((c.fact, c.text, _OPERATOR[c.op], c.value) for c in cond.children if isinstance(c, Compare))

    def all_constants_verdict(facts: Mapping[str, Any]) -> tuple[bool | None, tuple[Evidence, ...]]:
        held = []
        unknown = False
        for fact, text, op, value in spec:
            if fact in facts:
                shown = facts[fact]
                t = op(shown, value)
                if not t:
                    return False, (_new_evidence(Evidence, (fact, text, shown, t)),)
                held.append(_new_evidence(Evidence, (fact, text, shown, t)))
            else:
                unknown = True
        return (None, ()) if unknown else (True, tuple(held))

    return all_constants_verdict


class _Conditions:
    """Truth functions for every sub-condition: generated code for groups and negations, closures for leaves."""

    def __init__(self, roots: list[Condition]) -> None:
        nodes: list[Condition] = []
        seen: set[int] = set()

        def visit(c: Condition) -> None:
            if id(c) in seen:
                return
            seen.add(id(c))
            nodes.append(c)
            for child in (c.child,) if isinstance(c, Not) else () if isinstance(c, Compare) else c.children:
                visit(child)

        for root in roots:
            visit(root)
        inner = [n for n in nodes if not isinstance(n, Compare)]
        self._by_id = dict(zip((id(n) for n in inner), compile_truths(inner)))
        self._by_id.update((id(n), _leaf_truth(n)) for n in nodes if isinstance(n, Compare))
        self._keep = nodes  # ids stay valid while the nodes live

    def truth(self, cond: Condition) -> Truth:
        return self._by_id[id(cond)]


# --- rules ---------------------------------------------------------------------

_new_tuple = tuple.__new__  # a named tuple from its values, without its generated __new__'s keyword handling

_SET_PER_RULE = {"rule_id", "rule_version", "status", "kind", "severity", "title", "summary", "detail", "citations",
                 "source_section", "drug", "evidence", "dose"}
#: Fields a later Recommendation may add beyond those set here: their defaults (a field without one fails at import).
_OTHER_RECOMMENDATION_FIELDS = {f.name: f.default for f in fields(Recommendation) if f.name not in _SET_PER_RULE}
if MISSING in _OTHER_RECOMMENDATION_FIELDS.values():
    raise TypeError(f"CompiledRule does not set Recommendation fields {sorted(_OTHER_RECOMMENDATION_FIELDS)}")

#: Conditional fields a CompiledRule takes from its recommendation's static part (the rest: per analysis).
_CONDITIONAL_STATIC = ("rule_id", "rule_version", "status", "kind", "severity", "title", "summary", "detail", "citations",
                       "source_section", "drug")
if {f.name for f in fields(Conditional)} != {*_CONDITIONAL_STATIC, "condition", "text", "facts", "dose"}:
    raise TypeError("CompiledRule.conditional does not set every Conditional field")

#: How advice is ordered: most severe first, then acting before watching (then the rule's place in the pack).
KIND_ORDER = {"do": 0, "avoid": 1, "consider": 2, "monitor": 3}


class CompiledRule:
    """One rule ready to evaluate: compiled condition and the patient-independent part of its recommendation."""

    __slots__ = ("rule", "id", "reads", "truth", "missing", "verdict", "static", "dose", "advice_static", "rank",
                 "named", "plain_evidence")

    def __init__(self, rule: Rule, conditions: _Conditions, citations: tuple, position: int,
                 derived_names: frozenset[str]) -> None:
        self.rule = rule
        self.id = rule.id
        self.reads = frozenset(p for leaf in leaves(rule.when) for p in leaf.facts())
        tested = [(p, leaf.text) for leaf in leaves(rule.when) for p in leaf.facts()]
        #: Its evidence needs no expansion: it reads no derived fact and no two of its items can coincide.
        self.plain_evidence = not (self.reads & derived_names) and len(set(tested)) == len(tested)
        self.truth = conditions.truth(rule.when)
        self.missing = compile_missing(rule.when, conditions.truth)
        self.verdict = compile_verdict(rule.when)
        self.dose = rule.dose
        self.static = {
            "rule_id": rule.id, "rule_version": rule.version, "status": rule.status, "kind": rule.kind,
            "severity": rule.severity, "title": rule.title, "summary": rule.summary, "detail": rule.detail,
            "citations": citations, "source_section": rule.section,
            "drug": rule.drug or (rule.dose.drug if rule.dose else None),
            **_OTHER_RECOMMENDATION_FIELDS,
        }
        self.advice_static = {k: self.static[k] for k in _CONDITIONAL_STATIC}
        #: Where its advice sorts (severity, kind, place in the pack) and how a question names it.
        self.rank = (SEVERITY_ORDER[rule.severity], KIND_ORDER[rule.kind], position)
        self.named = (rule.id, rule.severity, rule.title)

    def recommendation(self, evidence: tuple[Evidence, ...], facts: Mapping[str, Any], pack: RulePack) -> Recommendation:
        """The rule's recommendation for this patient: the static part plus evidence and dose."""
        rec = object.__new__(Recommendation)  # frozen dataclass: fill its __dict__ as __init__ would, minus 13 setattr calls
        d = rec.__dict__
        d.update(self.static)
        d["evidence"] = evidence
        d["dose"] = compute_dose(self.dose, facts, pack.preparations, pack.dosing) if self.dose is not None else None
        return rec

    def conditional(self, condition: Condition, text: str, facts: tuple[str, ...]) -> Conditional:
        """The rule's conditional advice: it applies if ``condition`` (its residual, in words ``text``) holds."""
        advice = object.__new__(Conditional)  # frozen dataclass: its __dict__ filled at once, as recommendation() does
        d = advice.__dict__
        d.update(self.advice_static)
        d["condition"] = condition
        d["text"] = text
        d["facts"] = facts
        d["dose"] = None
        return advice

    def not_evaluable(self, missing: frozenset[str]) -> NotEvaluable:
        """The entry listing this rule as undecidable for want of ``missing``."""
        return _new_tuple(NotEvaluable, (self.rule.id, self.rule.version, self.rule.title, tuple(sorted(missing))))



class CompiledPack:
    """Every rule and derived fact of a pack compiled; rules grouped by the statuses evaluated."""

    def __init__(self, pack: RulePack) -> None:
        roots = [r.when for r in pack.rules] + [c for d in pack.derived for c in _derived_conditions(d)]
        conditions = _Conditions(roots)
        #: Each rule's citations resolved against the pack's references.
        self.citations = {r.id: tuple(pack.references[c.ref] for c in r.citations) for r in pack.rules}
        derived_names = frozenset(d.name for d in pack.derived)
        self.rules = tuple(CompiledRule(r, conditions, self.citations[r.id], i, derived_names)
                           for i, r in enumerate(pack.rules))
        self.by_id = {c.id: c for c in self.rules}
        #: Rule id -> its dose, for the rules that have one.
        self.dose_specs = {r.id: r.dose for r in pack.rules if r.dose is not None}
        self._active: dict[frozenset[str], ActiveRules] = {}
        self.derived = tuple(_CompiledDerived(d, conditions) for d in pack.derived)
        self._derived_model = pack.derived
        self._derived_by_name = {d.name: d for d in self.derived}

    def active(self, statuses: frozenset[str]) -> "ActiveRules":
        """The rules whose status is in ``statuses``, indexed (computed once per set of statuses)."""
        found = self._active.get(statuses)
        if found is None:
            found = self._active[statuses] = ActiveRules(tuple(c for c in self.rules if c.rule.status in statuses))
        return found

    def derive(self, facts: dict[str, Any]) -> Derivation:
        """:func:`.logic.derive`, compiled: add the derived facts to ``facts`` in place."""
        missing_of: dict[str, frozenset[str]] = {}
        for d in self.derived:
            d.apply(facts, missing_of)
        return _CompiledDerivation(self._derived_model, facts, missing_of, self._derived_by_name)


class ActiveRules:
    """The rules evaluated, in pack order, indexed so that an evaluation touches only the rules that
    fired or that read a fact the patient lacks (the others are false: no fact unknown, not fired)."""

    __slots__ = ("rules", "position", "readers", "facts")

    def __init__(self, rules: tuple[CompiledRule, ...]) -> None:
        self.rules = rules
        self.position = {r.id: i for i, r in enumerate(rules)}
        readers: dict[str, list[int]] = {}
        for i, rule in enumerate(rules):
            for fact in rule.reads:
                readers.setdefault(fact, []).append(i)
        self.readers = {fact: tuple(at) for fact, at in readers.items()}
        self.facts = frozenset(readers)

    def fired(self, keys: set[str]) -> list[CompiledRule]:
        """The rules among ``keys`` (what the engine fired), in pack order."""
        position = self.position
        return [self.rules[i] for i in sorted(position[k] for k in keys if k in position)]

    def reading_absent(self, known: Any) -> list[CompiledRule]:
        """The rules that read a fact not in ``known``, in pack order."""
        absent = self.facts.difference(known)
        if not absent:
            return []
        readers = self.readers
        at: set[int] = set()
        for fact in absent:
            at.update(readers[fact])
        return [self.rules[i] for i in sorted(at)]


def _derived_conditions(d: Derived) -> list[Condition]:
    return ([d.when] if d.when is not None else []) + [c for c, _ in d.cases]


class _CompiledDerived:
    """One derived fact: the mean pressure (measured, else estimated), a product, a boolean ``when``, or
    ``cases`` with a default; as :func:`.logic.derive` computes them (the differential tests compare)."""

    __slots__ = ("name", "product", "mean_pressure", "per_dosing_kg", "when", "cases", "default", "verdicts", "source")

    def __init__(self, d: Derived, conditions: _Conditions) -> None:
        self.name = d.name
        self.source = d
        self.per_dosing_kg = d.per_dosing_kg
        self.product = d.product
        self.mean_pressure = d.mean_pressure
        self.default = d.default

        def compiled(c: Condition) -> tuple[Truth, Missing]:
            return conditions.truth(c), compile_missing(c, conditions.truth)

        self.when = compiled(d.when) if d.when is not None else None
        self.cases = tuple((*compiled(c), v) for c, v in d.cases)
        self.verdicts = tuple(compile_verdict(c) for c in _derived_conditions(d))

    def apply(self, facts: dict[str, Any], missing_of: dict[str, frozenset[str]]) -> None:
        name = self.name
        if self.mean_pressure is not None:
            derive_mean_pressure(self.source, facts, missing_of)
            return
        if self.per_dosing_kg is not None:
            derive_per_dosing_kg(self.source, facts, missing_of)
            return
        if self.product is not None:
            a, b = self.product
            if a in facts and b in facts:
                facts[name] = facts[a] * facts[b]
            else:
                missing_of[name] = frozenset().union(
                    *(missing_of.get(p, frozenset((p,))) for p in (a, b) if p not in facts))
            return
        if self.when is not None:
            truth, missing = self.when
            t = truth(facts)
            if t is None:
                missing_of[name] = missing(facts, missing_of)
            else:
                facts[name] = t
            return
        value = self.default
        for truth, missing, case_value in self.cases:
            t = truth(facts)
            if t is True:
                value = case_value
                break
            if t is None:
                missing_of[name] = missing(facts, missing_of)
                value = None
                break
        if value is not None:
            facts[name] = value


class _CompiledDerivation(Derivation):
    """:class:`.logic.Derivation` with compiled verdicts, and expansion that skips input facts at once."""

    def __init__(self, derived: tuple[Derived, ...], facts: Mapping[str, Any], missing_of: dict[str, frozenset[str]],
                 compiled: Mapping[str, _CompiledDerived]) -> None:
        super().__init__(derived, facts, missing_of)
        self._compiled = compiled

    def why(self, name: str) -> tuple[Evidence, ...]:
        d = self._compiled.get(name)
        if d is None or name not in self._facts:
            return ()
        found = self._why.get(name)
        if found is None:
            facts = self._facts
            if d.product is not None:
                found = tuple(Evidence(p, f"{p} is a factor of {name}", facts[p]) for p in d.product)
            elif d.per_dosing_kg is not None:
                found = per_dosing_kg_evidence(d.source, facts)
            elif d.mean_pressure is not None:
                m, sbp, dbp = d.mean_pressure
                if m in facts:
                    found = (Evidence(m, f"{name} is the measured MAP", facts[m]),)
                else:
                    test = f"{name} ESTIMATED as DBP + (SBP - DBP) / 3 (no measured MAP)"
                    found = (Evidence(sbp, test, facts[sbp]), Evidence(dbp, test, facts[dbp]))
            elif d.when is not None:
                found = d.verdicts[0](facts)[1]
            else:
                found = ()
                for verdict in d.verdicts:
                    t, evidence = verdict(facts)
                    found += evidence
                    if t:
                        break
            self._why[name] = found
        return found

    def expand(self, evidence: tuple[Evidence, ...]) -> tuple[Evidence, ...]:
        out: list[Evidence] = []
        seen: set[tuple[str, str]] = set()
        derived = self._compiled
        for e in evidence:
            key = (e.fact, e.test)
            if key not in seen:
                seen.add(key)
                out.append(e)
            if e.fact in derived:
                for item in self._chain(e.fact):
                    key = (item.fact, item.test)
                    if key not in seen:
                        seen.add(key)
                        out.append(item)
        return tuple(out)


def compiled_pack(pack: RulePack) -> CompiledPack:
    """The pack's compiled form, built on first use and kept in ``pack.cache``."""
    found = pack.cache.compiled
    if found is None:
        with BUILD_LOCK:
            found = pack.cache.compiled
            if found is None:
                found = pack.cache.compiled = CompiledPack(pack)
    return found
