"""JSON Schema checks with located, best-first problems, and the fast path for patient states.

Detailed reports come from :mod:`jsonschema` (every problem, best first, with a
did-you-mean for unknown keys). The per-evaluation check of a patient state uses a
validator compiled by :mod:`fastjsonschema` (≈5 µs instead of ≈240 µs); only when
that fails is the detailed report built.
"""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from typing import Any, Iterator

from ..errors import PatientStateError, Problem, close_matches
from .load import Document, pointer_of


@lru_cache(maxsize=None)
def schema(name: str) -> dict[str, Any]:
    """A bundled JSON Schema by file name (``patient-state.schema.json`` …)."""
    from ... import schemas

    with open(os.path.join(schemas.DIR, name), encoding="utf-8") as fh:
        return json.load(fh)


@lru_cache(maxsize=None)
def _detailed_validator(name: str) -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(schema(name))


@lru_cache(maxsize=None)
def _fast_validator(name: str) -> Any:
    from .pack_cache import state_validator  # fastjsonschema's code, compiled once and cached on disk

    return state_validator(schema(name))


def schema_problems(doc: Document, name: str, *, base: tuple[Any, ...] = (), data: Any = None) -> list[Problem]:
    """Every problem of ``data`` (default: the whole document) against a bundled schema, best first."""
    from jsonschema.exceptions import relevance

    data = doc.data if data is None else data
    errors = sorted(_detailed_validator(name).iter_errors(data), key=relevance)
    return [_problem(doc, _deepest(e), base) for e in errors]


def _deepest(error: Any) -> Any:
    """For oneOf/anyOf, descend to the most relevant sub-error (as ``best_match`` does)."""
    from jsonschema.exceptions import best_match

    if error.context:
        return best_match(error.context) or error
    return error


def _problem(doc: Document, error: Any, base: tuple[Any, ...]) -> Problem:
    path = tuple(base) + tuple(error.absolute_path)
    pointer = pointer_of(path)
    message, suggestion = _explain(error)
    if error.validator == "additionalProperties":
        extra = _unexpected_keys(error)
        if extra:
            pointer = pointer_of(path + (extra[0],))
    fact_path = ".".join(str(p) for p in error.absolute_path) or None
    return Problem(message, suggestion=suggestion, fact_path=fact_path, **doc.where(pointer))


def _unexpected_keys(error: Any) -> list[str]:
    allowed = set(error.schema.get("properties", {}))
    return sorted(k for k in error.instance if k not in allowed) if isinstance(error.instance, dict) else []


def _explain(error: Any) -> tuple[str, str | None]:
    """Short lowercase message and a fix for one jsonschema error."""
    v, inst, sch = error.validator, error.instance, error.schema
    if v == "additionalProperties":
        allowed = sorted(sch.get("properties", {}))
        extra = _unexpected_keys(error)
        key = extra[0] if extra else "?"
        close = close_matches(key, allowed, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(allowed)}"
        return f"unknown key '{key}'", hint
    if v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"{_show(inst)} is not of type {want}", f"write {'an' if want[0] in 'aeiou' else 'a'} {want}"
    if v == "enum":
        return f"{_show(inst)} is not one of {', '.join(map(_show, error.validator_value))}", None
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        words = {
            "minimum": "less than the minimum of",
            "exclusiveMinimum": "not greater than",
            "maximum": "greater than the maximum of",
            "exclusiveMaximum": "not less than",
        }[v]
        return f"{_show(inst)} is {words} {error.validator_value}", "check the value and its unit"
    if v == "required":
        return error.message.replace("'", "'"), "add the missing key"
    if v == "maxLength":
        return f"text is {len(inst)} characters, longer than {error.validator_value}", "shorten it"
    if v == "pattern" and "Semantic version" in sch.get("description", ""):
        return (f"{_show(inst)} is not a semantic version (MAJOR.MINOR.PATCH in ASCII digits, no leading zeros)",
                "write it as 1.0.0, 2.10.3 ...")
    return error.message, None


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- patient states ---------------------------------------------------------

STATE_SCHEMA = "patient-state.schema.json"


@lru_cache(maxsize=None)
def _acceptor(name: str) -> Any:
    """The acceptor generated from the schema (state_check.py), or None when the schema uses what it does not check."""
    from .state_check import acceptor

    return acceptor(schema(name))


def check_state(state: Any, doc: Document | None = None) -> None:
    """Raise :class:`PatientStateError` (all problems, best first) unless ``state`` is a valid patient state.

    First the acceptor generated from the schema (a True is final; with every number bounded it also means
    every number is finite), then fastjsonschema, then, for the report, jsonschema."""
    accept = _acceptor(STATE_SCHEMA)
    if accept is not None and accept[0](state):
        if not accept[1]:
            problems = list(_semantic_problems(state, doc))
        else:
            problems = list(_pressure_problems(state, doc))
        if problems:
            raise PatientStateError(problems)
        return
    fast = _fast_validator(STATE_SCHEMA)
    problems = []
    try:
        fast(state)
    except Exception:  # fastjsonschema raises JsonSchemaValueException; the details come next
        doc = doc or Document(state, "<state>")
        problems = schema_problems(doc, STATE_SCHEMA, data=state)
        if not problems:  # the two validators disagree: trust the detailed one, but say so
            problems = [Problem("patient state rejected by the schema", file=doc.file)]
    if not problems:
        problems = list(_semantic_problems(state, doc))
    if problems:
        raise PatientStateError(problems)


def _semantic_problems(state: dict[str, Any], doc: Document | None) -> Iterator[Problem]:
    """What a schema cannot say: non-finite numbers, and blood pressures that contradict each other."""
    where = doc.where if doc is not None else (lambda p: {"pointer": p})
    for section, values in state.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, float) and not math.isfinite(value):
                    yield Problem(f"{value} is not a finite number", fact_path=f"{section}.{key}",
                                  suggestion="leave the fact out if it is unknown", **where(f"/{section}/{key}"))
    yield from _pressure_problems(state, doc)


def _pressure_problems(state: dict[str, Any], doc: Document | None) -> Iterator[Problem]:
    """Blood pressures that contradict each other as entered (a diastolic at or above the systolic: swapped)."""
    vitals = state.get("vitals") or {}
    if not vitals:
        return
    where = doc.where if doc is not None else (lambda p: {"pointer": p})
    sbp, dbp = vitals.get("sbp_mmhg"), vitals.get("dbp_mmhg")
    if sbp is not None and dbp is not None and dbp >= sbp:
        yield Problem(f"dbp_mmhg ({dbp}) is not below sbp_mmhg ({sbp})", fact_path="vitals.dbp_mmhg",
                      suggestion="check that the two pressures are not swapped", **where("/vitals/dbp_mmhg"))
    # A MAP outside DBP-SBP is not refused here: it is what an arterial-line artefact gives in real records, and
    # the pack treats such a MAP as unknown with a note (the mean_pressure envelope of derived.map_mmhg).
