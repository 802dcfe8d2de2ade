"""A patient-state acceptor generated from the state's JSON Schema: the per-evaluation fast path.

:func:`acceptor` writes one Python function for the schema (a dispatch per section, one comparison per
fact) that answers True only for a state the schema accepts; anything it is not sure of (a type it does
not check, an int subclass, a NaN) answers False, and the caller then asks fastjsonschema and, when that
fails too, jsonschema for the located problems. So it may only ever be wrong in the safe direction, and
tests/test_state_check.py compares it with fastjsonschema on generated and mutated states.

It understands only what the bundled state schema uses (objects with ``properties`` and
``additionalProperties: false``; ``number``, ``integer``, ``boolean``, ``string``; ``enum`` of strings;
``minimum``/``maximum``; arrays of enum strings with ``maxItems``/``uniqueItems``); a schema with any other
keyword gets no acceptor (None). When every number has both bounds, an accepted state holds only finite
numbers (``lo <= x <= hi`` is false for NaN and the infinities): ``bounded`` says so.
"""
from __future__ import annotations

from typing import Any, Callable

_ANNOTATIONS = {"description", "title", "$schema", "$id", "$comment", "examples", "default"}


class _Unsupported(Exception):
    pass


def acceptor(schema: dict[str, Any]) -> tuple[Callable[[Any], bool], bool] | None:
    """(the acceptor, every number bounded) for ``schema``, or None if it uses what this does not check."""
    try:
        lines: list[str] = []
        consts: dict[str, Any] = {}
        bounded = [True]
        root = _object(schema, "state", lines, consts, bounded)
    except _Unsupported:
        return None
    source = "\n".join(lines) + f"\nACCEPT = {root}\n"
    from .pack_cache import compiled_code

    namespace: dict[str, Any] = dict(consts)
    exec(compiled_code(source, "<pressor state acceptor>"), namespace)  # noqa: S102 - generated from our own schema
    return namespace["ACCEPT"], bounded[0]


def _keys(node: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(node) - allowed - _ANNOTATIONS
    if unknown:
        raise _Unsupported(sorted(unknown))


def _object(node: dict[str, Any], name: str, lines: list[str], consts: dict[str, Any], bounded: list[bool]) -> str:
    _keys(node, {"type", "properties", "additionalProperties"})
    if node.get("type") != "object" or node.get("additionalProperties") is not False:
        raise _Unsupported(name)
    fn = f"_obj_{sum(1 for k in consts if k.startswith('_obj_'))}"
    consts[fn] = None  # reserves the name (the function itself is defined by the generated code)
    body = [f"def {fn}(d):", "    if d.__class__ is not dict:", "        return False", "    for k, v in d.items():"]
    first = True
    for key, sub in (node.get("properties") or {}).items():
        test = _value(sub, f"{name}.{key}", lines, consts, bounded)
        body.append(f"        {'if' if first else 'elif'} k == {key!r}:")
        body.append(f"            if not ({test}):")
        body.append("                return False")
        first = False
    if first:
        body.append("        return False")
    else:
        body += ["        else:", "            return False"]
    body.append("    return True")
    lines.extend(body)
    return fn


def _value(node: dict[str, Any], name: str, lines: list[str], consts: dict[str, Any], bounded: list[bool]) -> str:
    kind = node.get("type")
    if kind == "object":
        return f"{_object(node, name, lines, consts, bounded)}(v)"
    if kind == "array":
        _keys(node, {"type", "items", "maxItems", "uniqueItems"})
        items = node.get("items") or {}
        _keys(items, {"type", "enum"})
        if items.get("type") != "string" or not isinstance(items.get("enum"), list):
            raise _Unsupported(name)
        const = f"_E{len(consts)}"
        consts[const] = frozenset(_strings(items["enum"], name))
        tests = ["v.__class__ is list", f"all(x.__class__ is str and x in {const} for x in v)"]
        if "maxItems" in node:
            tests.insert(1, f"len(v) <= {int(node['maxItems'])}")
        if node.get("uniqueItems") is True:
            tests.append("len(set(v)) == len(v)")
        elif node.get("uniqueItems") not in (None, False):
            raise _Unsupported(name)
        return " and ".join(tests)
    if kind == "string":
        _keys(node, {"type", "enum"})
        if "enum" not in node:
            return "v.__class__ is str"
        const = f"_E{len(consts)}"
        consts[const] = frozenset(_strings(node["enum"], name))
        return f"v.__class__ is str and v in {const}"
    if kind == "boolean":
        _keys(node, {"type"})
        return "v.__class__ is bool"
    if kind in ("number", "integer"):
        _keys(node, {"type", "minimum", "maximum"})
        test = "v.__class__ is int" if kind == "integer" else "(v.__class__ is float or v.__class__ is int)"
        lo, hi = node.get("minimum"), node.get("maximum")
        for bound in (lo, hi):
            if bound is not None and (bound.__class__ not in (int, float) or bound != bound):
                raise _Unsupported(name)
        if lo is None or hi is None:
            bounded[0] = bounded[0] and kind == "integer"
        if lo is not None:
            test += f" and {lo!r} <= v"
        if hi is not None:
            test += f" and v <= {hi!r}"
        return test
    raise _Unsupported(name)


def _strings(values: list[Any], name: str) -> list[str]:
    if not all(isinstance(v, str) for v in values):
        raise _Unsupported(name)
    return values
