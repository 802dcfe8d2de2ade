"""Facts and conditions in clinical words: the question that asks for a fact, and a residual
condition as a clinician reads it ("norepinephrine is not already running and there is no
central line"). The words are data, ``schemas/fact-wording.json``; a fact it does not list
falls back to its description in the patient-state schema."""
from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any, Mapping

from ..model import All, Compare, Condition, Not
from .kleene import every_part

_OP_WORDS = {"<": "below", "<=": "at most", ">": "above", ">=": "at least", "==": "exactly", "!=": "not"}


@lru_cache(maxsize=1)
def wording() -> dict[str, dict[str, str]]:
    """The wording table, fact path -> {question, label, unit, true, false, zero, positive}."""
    from ... import schemas

    with open(os.path.join(schemas.DIR, "fact-wording.json"), encoding="utf-8") as fh:
        text = fh.read()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("$")}


@lru_cache(maxsize=1)
def _descriptions() -> dict[str, str]:
    from .validate import STATE_SCHEMA, schema

    out: dict[str, str] = {}
    for section, node in schema(STATE_SCHEMA)["properties"].items():
        if node.get("type") == "object":
            for key, child in node.get("properties", {}).items():
                out[f"{section}.{key}"] = child.get("description", "")
        else:
            out[section] = node.get("description", "")
    return out


def _entry(fact: str, descriptions: Mapping[str, str] | None = None) -> dict[str, str]:
    found = wording().get(fact)
    if found is not None:
        return found
    text = (descriptions or {}).get(fact) or _descriptions().get(fact) or fact
    text = text.rstrip(".")
    return {"question": f"{text}?", "label": text[:1].lower() + text[1:]}


def question(fact: str, descriptions: Mapping[str, str] | None = None) -> str:
    """How to ask for ``fact`` ("Is a norepinephrine infusion running, and at what rate (mcg/kg/min)?")."""
    return _entry(fact, descriptions)["question"]


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and v == int(v):
        return str(int(v))
    return str(v).replace("_", " ")


def _choices(values: tuple[Any, ...]) -> str:
    shown = [_value(v) for v in values]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _leaf(leaf: Compare, negated: bool, descriptions: Mapping[str, str] | None) -> str:
    e = _entry(leaf.fact, descriptions)
    label = e.get("label", leaf.fact)
    if leaf.op in ("known", "unknown"):
        recorded = (leaf.op == "known") != negated
        return f"the answer to \"{e['question']}\" is {'recorded (any answer)' if recorded else 'not recorded'}"
    if leaf.value_fact is not None:
        other = _entry(leaf.value_fact, descriptions).get("label", leaf.value_fact)
        text = f"{label} is {_OP_WORDS[leaf.op]} {other}"
        return f"not: {text}" if negated else text
    if isinstance(leaf.value, bool) and leaf.op in ("==", "!="):
        holds = (leaf.value == (leaf.op == "==")) != negated
        key = "true" if holds else "false"
        return e.get(key) or (label if holds else f"not: {label}")
    if leaf.op == "in":
        return f"{label} is {'not ' if negated else ''}{_choices(leaf.value)}"
    if leaf.op == "includes":
        verb = e.get("excludes" if negated else "includes") or f"{label} {'does not include' if negated else 'includes'}"
        return f"{verb} {_value(leaf.value)}"
    op = leaf.op if not negated else {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}[leaf.op]
    if isinstance(leaf.value, (int, float)) and "zero" in e and leaf.value == 0:
        if op in ("==", "<="):
            return e["zero"]
        if op in (">", "!="):
            return e["positive"]
    if isinstance(leaf.value, str):
        return f"{label} is {'not ' if op == '!=' else ''}{_value(leaf.value)}"
    unit = f" {e['unit']}" if e.get("unit") else ""
    return f"{label} is {_OP_WORDS[op]} {_value(leaf.value)}{unit}"


def words(cond: Condition, descriptions: Mapping[str, str] | None = None) -> str:
    """A condition in clinical words; ``descriptions`` adds the pack's derived facts' descriptions."""
    return _words(cond, False, descriptions, top=True)


def _words(cond: Condition, negated: bool, descriptions: Mapping[str, str] | None, top: bool = False) -> str:
    if isinstance(cond, Compare):
        return _leaf(cond, negated, descriptions)
    if isinstance(cond, Not):
        if isinstance(cond.child, Compare):
            return _leaf(cond.child, not negated, descriptions)
        return _words(cond.child, not negated, descriptions, top)
    conjunctive = every_part(isinstance(cond, All), not negated)  # not(all) reads as any of the negations
    children = list(cond.children)
    if not conjunctive and len(children) == 2:
        unrecorded = _not_recorded_unless(children, negated, descriptions)
        if unrecorded is not None:
            return unrecorded if top else f"({unrecorded})"
    parts: list[str] = []
    if conjunctive and not negated:
        children, parts = _running_below(children, descriptions)
    parts += [_words(c, negated, descriptions) for c in children]
    text = (" and " if conjunctive else " or ").join(parts)
    return text if top else f"({text})"


def _not_recorded_unless(children: list[Condition], negated: bool, descriptions: Mapping[str, str] | None) -> str | None:
    """``F is not recorded, or F says X`` reads "it is not recorded that <not X>" (the same, said once)."""
    def fact_unrecorded(c: Condition, neg: bool) -> str | None:
        if isinstance(c, Not):
            return fact_unrecorded(c.child, not neg)
        if isinstance(c, Compare) and c.op in ("known", "unknown") and (c.op == "unknown") != neg:
            return c.fact
        return None

    def plain_leaf(c: Condition) -> Compare | None:
        inner = c.child if isinstance(c, Not) else c
        return inner if isinstance(inner, Compare) and inner.op not in ("known", "unknown") and inner.value_fact is None else None

    for first, second in (children, children[::-1]):
        fact, leaf = fact_unrecorded(first, negated), plain_leaf(second)
        if fact is not None and leaf is not None and leaf.fact == fact:
            return f"it is not recorded that {_words(second, not negated, descriptions)}"
    return None


def _running_below(children: list[Condition], descriptions: Mapping[str, str] | None) -> tuple[list[Condition], list[str]]:
    """``rate > 0 and rate < 0.1`` reads "norepinephrine is running at below 0.1 mcg/kg/min"."""
    parts: list[str] = []
    rest = list(children)
    for c in children:
        if not (isinstance(c, Compare) and c.op == ">" and c.value == 0 and "positive" in _entry(c.fact, descriptions)):
            continue
        bound = next((b for b in rest if isinstance(b, Compare) and b.fact == c.fact and b.op in ("<", "<=")
                      and b.value_fact is None), None)
        if bound is None:
            continue
        e = _entry(c.fact, descriptions)
        parts.append(f"{e['positive']} at {_OP_WORDS[bound.op]} {_value(bound.value)} {e.get('unit', '')}".rstrip())
        rest = [x for x in rest if x is not c and x is not bound]
    return rest, parts
