"""Decide by every completion: a derived fact that three-valued logic leaves unknown is decided
when every value its absent inputs can take gives it the same value.

Kleene logic is the lower bound: it never says true or false wrongly, but it says unknown too
often. ``MAP 55 < target`` is unknown while chronic hypertension is (the target is 65 or 70), yet
true for either answer. Here each such derived fact is tried with every *completion* of the input
facts it is missing: booleans both ways, enumerations each value, numbers one value from each
region between the pack's thresholds on that fact (and the schema's ends). If all completions
agree, the fact is decided, and the result says for which facts it holds whatever their value.

Only facts missing at most :data:`MAX_INPUTS` inputs are tried, with at most :data:`MAX_COMPLETIONS`
completions; past that the fact stays unknown, as Kleene logic left it (never a guess).
"""
from __future__ import annotations

from itertools import product
from typing import Any, Mapping

from ..model import RulePack, leaves

#: At most this many absent inputs are completed for one derived fact.
MAX_INPUTS = 3
#: At most this many completions are tried for one derived fact.
MAX_COMPLETIONS = 64
_NO_VALUE = object()


class Completion:
    """Per pack, built once: each input fact's representative values, and the derived facts in order."""

    def __init__(self, pack: RulePack, compiled_derived: tuple[Any, ...]) -> None:
        from .residual import domains_of
        from .validate import STATE_SCHEMA, schema

        self.derived = compiled_derived
        self.values = _representatives(pack, domains_of(schema(STATE_SCHEMA)))

    def decide(self, facts: dict[str, Any], missing_of: dict[str, frozenset[str]]) -> dict[str, tuple[str, ...]]:
        """Add to ``facts`` every unknown derived fact that all completions of its missing inputs decide the
        same way; return each such fact with the inputs it holds for, whatever their values."""
        decided: dict[str, tuple[str, ...]] = {}
        for d in self.derived:
            name = d.name
            if name in facts:
                continue
            if decided:  # what was decided above may decide this one by plain three-valued logic
                d.apply(facts, missing_of)
                if name in facts:
                    continue
            inputs = tuple(sorted(missing_of.get(name, ())))
            if not inputs or len(inputs) > MAX_INPUTS or any(f not in self.values for f in inputs):
                continue
            domains = [self.values[f] for f in inputs]
            count = 1
            for values in domains:
                count *= len(values)
            if count > MAX_COMPLETIONS:
                continue
            seen: Any = _NO_VALUE
            for combo in product(*domains):
                trial = dict(facts)
                trial.update(zip(inputs, combo))
                scratch: dict[str, frozenset[str]] = {}
                for other in self.derived:
                    if other.name not in facts:
                        other.apply(trial, scratch)
                    if other is d:
                        break
                value = trial.get(name, _NO_VALUE)
                if value is _NO_VALUE or (seen is not _NO_VALUE and value != seen):
                    seen = _NO_VALUE
                    break
                seen = value
            if seen is not _NO_VALUE:
                facts[name] = seen
                decided[name] = inputs
        return decided


def _representatives(pack: RulePack, domains: Mapping[str, tuple[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """One value of each input fact from every region in which the pack's comparisons of it answer alike."""
    cuts: dict[str, set[float]] = {}
    conditions = [r.when for r in pack.rules]
    for d in pack.derived:
        conditions += ([d.when] if d.when is not None else []) + [c for c, _ in d.cases]
    case_values = {d.name: [v for _, v in d.cases] + ([d.default] if d.default is not None else []) for d in pack.derived}
    for cond in conditions:
        for leaf in leaves(cond):
            others = case_values.get(leaf.value_fact, []) if leaf.value_fact else (
                leaf.value if isinstance(leaf.value, (list, tuple)) else [leaf.value])
            for v in others:
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    cuts.setdefault(leaf.fact, set()).add(float(v))
    # A factor of a derived number (a product, the mean pressure, a dosing-weight rescale) is compared only through that number, at
    # thresholds that depend on the other factor: it is never completed here.
    factors = {p for d in pack.derived for p in (d.product or d.mean_pressure or ())}
    factors |= {p for d in pack.derived if d.per_dosing_kg is not None for p in d.reads()
                if not p.startswith("derived.") and p != d.per_dosing_kg[2].facts.sex}  # the numbers it rescales with
    out: dict[str, tuple[Any, ...]] = {}
    for fact, (kind, domain) in domains.items():
        if fact in factors:
            continue
        if kind == "boolean":
            out[fact] = (True, False)
        elif kind == "enum":
            out[fact] = tuple(domain)
        elif kind == "number":
            lo, _, hi, _ = domain
            points = {lo, hi}
            for c in cuts.get(fact, ()):
                for p in (c - 1e-3, c, c + 1e-3):
                    if lo <= p <= hi:
                        points.add(p)
            out[fact] = tuple(sorted(points))
    return out
