"""Pack parameters and site profiles, resolved to constants when the pack loads.

A pack declares ``parameters:`` (name, value, unit, allowed range, the reference for the
default). Rule conditions and doses use one by writing ``{param: NAME}`` where a number
goes. A site profile (a small YAML file) overrides values within their allowed ranges.
Every reference is replaced by its number before the rule files are validated, so the
compiled conditions stay plain comparisons with constants.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError, Problem, close_matches
from .load import Document, load_document
from .validate import schema_problems

PROFILE_SCHEMA = "profile.schema.json"


@dataclass(frozen=True)
class Parameter:
    """One declared parameter: its default, the value in force (after any profile), unit and range."""

    name: str
    default: float
    value: float
    unit: str
    minimum: float
    maximum: float
    description: str
    file: str = ""
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "value": self.value, "default": self.default, "unit": self.unit,
                "allowed": {"min": self.minimum, "max": self.maximum}, "description": self.description}


@dataclass(frozen=True)
class Profile:
    """A site profile as applied: its name, the SHA-256 of its file, and the parameters it changed;
    ``text`` is the file's text (the audit log stores it, so that replay applies the same profile)."""

    name: str
    sha256: str
    file: str
    changed: tuple[Parameter, ...]
    text: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        """What results, audit records, explanations and cards show."""
        return {"name": self.name, "sha256": self.sha256,
                "changed": [{"name": p.name, "value": p.value, "default": p.default, "unit": p.unit} for p in self.changed]}


def declared(docs: list[Document], problems: list[Problem]) -> dict[str, Parameter]:
    """The pack's parameters (every file's ``parameters:`` section); problems go into ``problems``."""
    out: dict[str, Parameter] = {}
    for doc in docs:
        items = doc.data.get("parameters") if isinstance(doc.data, dict) else None
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            ptr = f"/parameters/{i}"
            if not isinstance(item, dict) or not {"name", "value", "unit", "range", "description"} <= item.keys():
                continue  # the rule-file schema reports the shape
            rng: dict[str, Any] = item["range"] if isinstance(item["range"], dict) else {}
            lo, hi, value = rng.get("min"), rng.get("max"), item["value"]
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (lo, hi, value)):
                continue
            assert lo is not None and hi is not None  # numbers, just checked (for the type checker)
            if item["name"] in out:
                problems.append(Problem(f"parameter '{item['name']}' is declared twice", **doc.where(f"{ptr}/name")))
                continue
            if not lo <= value <= hi:
                problems.append(Problem(f"default {value} of '{item['name']}' is outside its allowed range {lo}-{hi}",
                                        suggestion="widen the range or correct the default", **doc.where(f"{ptr}/value")))
            out[item["name"]] = Parameter(item["name"], float(value), float(value), item["unit"], float(lo), float(hi),
                                          str(item["description"]).strip(), doc.file, doc.where(ptr).get("line"))
    return out


def load_profile(path: str | Path, params: dict[str, Parameter]) -> tuple[dict[str, Parameter], Profile]:
    """Apply the profile at ``path`` to ``params``; raise :class:`InputError` with file:line for every problem."""
    doc = load_document(path)
    found = schema_problems(doc, PROFILE_SCHEMA)
    if found:
        raise InputError(found)
    problems: list[Problem] = []
    out = dict(params)
    changed: list[Parameter] = []
    for name, value in doc.data["parameters"].items():
        where = doc.where(f"/parameters/{name}")
        p = params.get(name)
        if p is None:
            close = close_matches(name, list(params), n=1)
            problems.append(Problem(f"the pack has no parameter '{name}'",
                                    suggestion=f"did you mean '{close[0]}'?" if close else "see the pack's parameters.yaml", **where))
            continue
        if not p.minimum <= value <= p.maximum:
            problems.append(Problem(f"{name} = {value} {p.unit} is outside its allowed range {p.minimum:g}-{p.maximum:g} {p.unit}",
                                    suggestion="choose a value within the range the pack allows", code="profile-out-of-range", **where))
            continue
        out[name] = Parameter(**{**p.__dict__, "value": float(value)})
        if out[name].value != p.default:
            changed.append(out[name])
    if problems:
        raise InputError(problems)
    sha = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
    return out, Profile(doc.data["profile"]["name"], sha, doc.file, tuple(sorted(changed, key=lambda p: p.name)), doc.text)


def _unit_slug(unit: str) -> str:
    """How a unit appears in a fact name (``mcg/kg/min`` -> ``mcg_kg_min``, ``h`` -> ``hours``)."""
    return {"h": "hours", "min": "minutes"}.get(unit, unit.replace("/", "_").lower())


def _named_in(fact: str, unit: str) -> bool:
    """Does the fact's name say it is in ``unit``: at its end, or as a word of its last part (``hours_since_x``)?"""
    slug = _unit_slug(unit)
    return fact.endswith(slug) or f"_{fact.rsplit('.', 1)[-1]}_".find(f"_{slug}_") >= 0


def resolve(doc: Document, params: dict[str, Parameter], problems: list[Problem]) -> None:
    """Replace every ``{param: NAME}`` in ``doc`` (rules, derived facts, waivers) by the value in force."""
    if not isinstance(doc.data, dict):
        return
    for key in ("rules", "derived", "preparations", "decisions", "waivers"):
        if key in doc.data:
            for parent, slot, ref, ptr in _references(doc.data[key], f"/{key}"):
                p = params.get(ref["param"]) if isinstance(ref.get("param"), str) else None
                if p is None:
                    close = close_matches(str(ref.get("param")), list(params), n=1)
                    problems.append(Problem(f"unknown parameter '{ref.get('param')}'",
                                            suggestion=f"did you mean '{close[0]}'?" if close else "declare it under parameters:",
                                            **doc.where(ptr)))
                    continue
                unit = parent.get("unit") if isinstance(parent, dict) else None
                fact = parent.get("fact") if isinstance(parent, dict) else None
                if isinstance(unit, str) and unit != p.unit:
                    problems.append(Problem(f"parameter '{p.name}' is in {p.unit}, but this quantity is in {unit}",
                                            suggestion="use a parameter in the same unit", **doc.where(ptr)))
                    continue
                if isinstance(fact, str) and not fact.startswith("derived.") and not _named_in(fact, p.unit):
                    problems.append(Problem(f"parameter '{p.name}' is in {p.unit}, but fact '{fact}' is not",
                                            suggestion="compare the fact with a parameter in its own unit", **doc.where(ptr)))
                    continue
                parent[slot] = int(p.value) if p.value == int(p.value) else p.value
            for parent, slot, text, ptr in _texts(doc.data[key], f"/{key}"):
                def value(m: re.Match[str], ptr: str = ptr) -> str:
                    p = params.get(m[1])
                    if p is None:
                        problems.append(Problem(f"unknown parameter '{m[1]}' in text", **doc.where(ptr)))
                        return m[0]
                    return f"{p.value:g}"
                parent[slot] = _IN_TEXT.sub(value, text)


_IN_TEXT = re.compile(r"\{param:([a-z][a-z0-9_]*)\}")


def _texts(node: Any, ptr: str) -> Iterator[tuple[Any, Any, str, str]]:
    """(parent, key, text, pointer) for every string under ``node`` that names a parameter."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in list(items):
        if isinstance(child, str):
            if "{param:" in child:
                yield node, key, child, f"{ptr}/{key}"
        else:
            yield from _texts(child, f"{ptr}/{key}")


def _references(node: Any, ptr: str) -> Iterator[tuple[Any, Any, dict[str, Any], str]]:
    """(parent, key, reference, pointer) for every ``{param: ...}`` mapping under ``node``."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in list(items):
        here = f"{ptr}/{key}"
        if isinstance(child, dict) and set(child) == {"param"}:
            yield node, key, child, here
        else:
            yield from _references(child, here)
