"""One result as one compact JSON line, fast: what does not depend on the patient is serialised once.

A result is mostly text that depends only on the rule (title, summary, detail, citations); a
batch writes it tens of thousands of times. :class:`ResultWriter` keeps, per rule, the JSON of
those parts and of each evidence item's fact and test, and joins them with the patient's own
values. Its output is exactly ``json.dumps(result.to_dict(), ensure_ascii=False,
separators=(",", ":"))``: the first time it meets a rule it checks that, and it stands aside
(every later result goes through ``to_dict``) if it ever differs or if ``Result`` or
``Recommendation`` gain fields it does not know.
"""
from __future__ import annotations

import json
from dataclasses import fields
from typing import Any, TypeVar

from ..model import Conditional, Evidence, NotEvaluable, Recommendation, Result, condition_data

_KNOWN = {
    Result: {"pack", "evaluated_at", "engine_version", "recommendations", "not_evaluable", "derived", "warnings",
             "include_draft", "conditional", "ask_next", "not_applicable", "decided_for_any_value", "plan",
             "advice"},
    Recommendation: {"rule_id", "rule_version", "status", "kind", "severity", "title", "summary", "detail",
                     "citations", "evidence", "source_section", "dose", "drug"},
    Conditional: {"rule_id", "rule_version", "status", "kind", "severity", "title", "summary", "detail",
                  "citations", "source_section", "condition", "text", "facts", "dose", "drug"},
}
_STATIC = ("rule_id", "rule_version", "status", "kind", "severity", "title", "summary", "detail", "citations",
           "source_section")


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # one encoder, not one per call
#: Entries kept per memo (distinct missing-fact lists, result headers): bounded, so memory stays flat.
K = TypeVar("K")
V = TypeVar("V")

_MEMO_LIMIT = 4096


def compact_json(result: Result) -> str:
    """The reference serialisation (what :class:`ResultWriter` must reproduce)."""
    return _dumps(result.to_dict())


def _value(v: Any) -> str:
    """JSON of an evidence value; numbers and booleans without a trip through the encoder (same text)."""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v.__class__ is int:
        return int.__repr__(v)
    if v.__class__ is float:
        return float.__repr__(v)  # what json.dumps writes for a finite float (states never hold NaN)
    return _dumps(v)


class ResultWriter:
    """Serialises results as :func:`compact_json` does, reusing each rule's patient-independent JSON."""

    def __init__(self) -> None:
        self.fast = all({f.name for f in fields(cls)} == names for cls, names in _KNOWN.items())
        self._heads: dict[str, tuple[str, str]] = {}  # rule id -> (JSON up to the evidence, after it up to the dose)
        self._missing_heads: dict[str, str] = {}
        self._tests: dict[tuple[str, str], str] = {}
        self._missing_lists: dict[tuple[str, ...], str] = {}
        self._headers: dict[tuple, str] = {}
        self._conditional_heads: dict[str, str] = {}
        #: id(condition) -> (condition, its JSON): the residual conditions are shared between calls (the
        #: residual analysis keeps them), so most are met again; the object is held so its id stays its own.
        self._conditions: dict[int, tuple[Any, str]] = {}
        self._fact_lists: dict[tuple[str, ...], str] = {}

    def __call__(self, result: Result) -> str:
        if not self.fast or not result.advice:
            return compact_json(result)
        fresh = (any(r.rule_id not in self._heads for r in result.recommendations)
                 or any(n.rule_id not in self._missing_heads for n in result.not_evaluable)
                 or any(c.rule_id not in self._conditional_heads for c in result.conditional))
        text = self._write(result)
        if fresh:  # a rule met for the first time: check the whole result against the reference
            reference = compact_json(result)
            if text != reference:
                self.fast = False
                return reference
        return text

    def _write(self, result: Result) -> str:
        plan = result.plan
        shown = plan.shown_rules if plan is not None else None
        recs = ",".join(self._recommendation(r, shown) for r in result.recommendations)
        missing = ",".join(self._not_evaluable(n) for n in result.not_evaluable)
        pack = _dumps(result.pack)  # the pack's identity, with the site profile when there is one
        key = (pack, result.evaluated_at, result.engine_version, result.include_draft)
        header = self._headers.get(key)
        if header is None:
            header = (f'{{"pack":{pack},"evaluated_at":{_dumps(result.evaluated_at)},'
                      f'"engine_version":{_dumps(result.engine_version)},"include_draft":{_dumps(result.include_draft)},')
            _remember(self._headers, key, header)
        warnings = _dumps(list(result.warnings)) if result.warnings else "[]"
        shown_if = plan.shown_conditional if plan is not None else None
        conditional = f'[{",".join(self._conditional(c, shown_if) for c in result.conditional)}]'
        if plan is None:
            ask_next = _items(result.ask_next)
        else:
            ask_next = _dumps([{**q.to_dict(), "shown": q.fact in plan.questions} for q in result.ask_next])
        not_applicable = _items(result.not_applicable)
        tail = "" if plan is None else f',"plan":{_dumps(plan.to_dict())}'
        return (f'{header}"recommendations":[{recs}],"not_evaluable":[{missing}],'
                f'"derived":{_dumps(result.derived)},"warnings":{warnings},"conditional":{conditional},'
                f'"ask_next":{ask_next},"not_applicable":{not_applicable},'
                f'"decided_for_any_value":{_dumps({k: list(v) for k, v in result.decided_for_any_value.items()})}'
                f'{tail}}}')

    def _recommendation(self, rec: Recommendation, shown: frozenset[str] | None) -> str:
        heads = self._heads.get(rec.rule_id)
        if heads is None:
            static = _dumps({k: v for k, v in rec.to_dict().items() if k in _STATIC})
            tail = f',"drug":{_dumps(rec.drug)}' if rec.drug else ""
            heads = self._heads[rec.rule_id] = (static[:-1] + ',"evidence":[', "]" + tail)
        evidence = ",".join(self._evidence(e) for e in rec.evidence)
        dose = "" if rec.dose is None else f',"dose":{_dumps(rec.dose)}'
        flag = "" if shown is None else (',"shown":true' if rec.rule_id in shown else ',"shown":false')
        return f"{heads[0]}{evidence}{heads[1]}{dose}{flag}}}"

    def _evidence(self, e: Evidence) -> str:
        head = self._tests.get((e.fact, e.test))
        if head is None:
            head = self._tests[(e.fact, e.test)] = f'{{"fact":{_dumps(e.fact)},"test":{_dumps(e.test)},"value":'
        return f'{head}{_value(e.value)},"holds":{"true" if e.holds else "false"}}}'

    def _conditional(self, c: Conditional, shown: frozenset[str] | None) -> str:
        head = self._conditional_heads.get(c.rule_id)
        if head is None:
            static = _dumps({k: v for k, v in c.to_dict().items() if k in _STATIC})
            head = self._conditional_heads[c.rule_id] = static[:-1] + ',"if":{"condition":'
        known = self._conditions.get(id(c.condition))
        if known is None or known[0] is not c.condition:
            known = (c.condition, _dumps(condition_data(c.condition)))
            _remember(self._conditions, id(c.condition), known)
        facts = self._fact_lists.get(c.facts)
        if facts is None:
            facts = _dumps(list(c.facts))
            _remember(self._fact_lists, c.facts, facts)
        tail = f',"drug":{_dumps(c.drug)}' if c.drug else ""
        dose = "" if c.dose is None else f',"dose":{_dumps(c.dose)}'
        flag = "" if shown is None else (',"shown":true' if c.rule_id in shown else ',"shown":false')
        return f'{head}{known[1]},"text":{_dumps(c.text)},"facts":{facts}}}{tail}{dose}{flag}}}'

    def _not_evaluable(self, n: NotEvaluable) -> str:
        head = self._missing_heads.get(n.rule_id)
        if head is None:
            head = self._missing_heads[n.rule_id] = _dumps(n.to_dict())[:-1].rsplit(',"missing":', 1)[0] + ',"missing":'
        missing = self._missing_lists.get(n.missing)
        if missing is None:
            missing = _dumps(list(n.missing))
            _remember(self._missing_lists, n.missing, missing)
        return f"{head}{missing}}}"


def _items(items: tuple) -> str:
    return _dumps([i.to_dict() for i in items]) if items else "[]"


def _remember(memo: dict[K, V], key: K, value: V) -> None:
    if len(memo) < _MEMO_LIMIT:
        memo[key] = value
