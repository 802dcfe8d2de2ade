"""The patient form, built from ``schemas/patient-state.schema.json``, and back.

Nothing clinical here: the schema says which facts exist, their types, units (in the
names, or ``x-unit``) and plausible ranges; a field left empty is *unknown* and is left
out of the state (never sent as 0 or false). New facts in the schema appear in the form
without a change here; a shape the form cannot edit (an array of objects, say) gets a
JSON box of its own.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from pressor.engine.evaluation.validate import STATE_SCHEMA, schema

#: Name endings that carry a unit, longest first (the schema puts units in the names).
UNIT_SUFFIXES = (
    ("_mcg_kg_min", "mcg/kg/min"), ("_units_min", "units/min"), ("_mcg_ml", "mcg/mL"), ("_ml_kg_h", "mL/kg/h"),
    ("_ml_kg", "mL/kg"), ("_mmol_l", "mmol/L"), ("_mg_dl", "mg/dL"), ("_mmhg", "mmHg"), ("_bpm", "beats/min"),
    ("_kg", "kg"), ("_years", "years"), ("_hours", "h"), ("_minutes", "min"), ("_ml_h", "mL/h"), ("_ml", "mL"),
    ("_min", "min"), ("_h", "h"), ("_s", "s"), ("_percent", "%"), ("_celsius", "°C"),
)
#: Endings that stay in the label as words (a duration is not the thing it measures).
KEEP_WORD_SUFFIXES = ("_hours", "_minutes")
#: Name beginnings that carry a unit (``hours_since_recognition``).
UNIT_PREFIXES = (("hours_", "h"), ("minutes_", "min"), ("days_", "days"))
#: Words written in capitals in labels.
ACRONYMS = {"map": "MAP", "sbp": "SBP", "dbp": "DBP", "ecg": "ECG", "iv": "IV", "icu": "ICU", "spo2": "SpO2"}
#: The value of the "nothing" box of a list of choices ([] is known-empty, not unknown).
NONE_OF_THESE = "__none__"
#: The form-field prefix of the JSON box used for shapes the form cannot edit.
JSON_PREFIX = "json:"


@dataclass(frozen=True)
class Field:
    """One fact in the form."""

    path: str  # dotted fact path, also the form field name
    kind: str  # number | integer | boolean | choice | choices | json
    label: str
    unit: str | None
    description: str
    minimum: float | None = None
    maximum: float | None = None
    options: tuple[str, ...] = ()

    @property
    def dom_id(self) -> str:
        """An HTML id for the input."""
        return "f-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.path)

    @property
    def name(self) -> str:
        """The form field name."""
        return JSON_PREFIX + self.path if self.kind == "json" else self.path

    @property
    def range_text(self) -> str:
        """``plausible 10–250 mmHg`` (as much as the schema states)."""
        unit = f" {self.unit}" if self.unit else ""
        if self.minimum is not None and self.maximum is not None:
            return f"plausible {_num(self.minimum)}–{_num(self.maximum)}{unit}"
        if self.minimum is not None:
            return f"at least {_num(self.minimum)}{unit}"
        if self.maximum is not None:
            return f"at most {_num(self.maximum)}{unit}"
        return ""


@dataclass(frozen=True)
class Group:
    """A fieldset: one top-level section of the patient state."""

    key: str
    title: str
    description: str
    fields: tuple[Field, ...]


def _num(x: float) -> str:
    return f"{x:g}"


def unit_and_stem(name: str, spec: Mapping[str, Any]) -> tuple[str | None, str]:
    """The unit of a fact (``x-unit`` if the schema gives one, else from its name) and the name without it."""
    unit = spec.get("x-unit")
    stem = name
    for suffix, text in UNIT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            # "vasopressor_hours" reads "Vasopressor hours (h)": a duration keeps its word
            stem = name if suffix in KEEP_WORD_SUFFIXES else name[: -len(suffix)]
            unit = unit or text
            break
    else:
        for prefix, text in UNIT_PREFIXES:
            if name.startswith(prefix):
                unit = unit or text
                break
    return unit, stem


def humanize(stem: str) -> str:
    """``heart_rate`` -> ``Heart rate``; ``map`` -> ``MAP``."""
    words = [ACRONYMS.get(w, w) for w in stem.split("_") if w]
    if not words:
        return stem
    first = words[0]
    words[0] = first if first.isupper() else first[:1].upper() + first[1:]
    return " ".join(words)


class FormSpec:
    """The form for one patient-state schema (built once)."""

    def __init__(self, state_schema: Mapping[str, Any] | None = None) -> None:
        self.schema = state_schema if state_schema is not None else schema(STATE_SCHEMA)
        self.groups: tuple[Group, ...] = tuple(self._groups())
        self.fields: dict[str, Field] = {f.path: f for g in self.groups for f in g.fields}

    # -- building -------------------------------------------------------------
    def _resolve(self, spec: Mapping[str, Any]) -> Mapping[str, Any]:
        seen = 0
        while "$ref" in spec and seen < 20:
            ref = spec["$ref"]
            if not ref.startswith("#/"):
                return spec
            target: Any = self.schema
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            merged = {**target, **{k: v for k, v in spec.items() if k != "$ref"}}
            spec, seen = merged, seen + 1
        return spec

    def _groups(self) -> Iterable[Group]:
        for key, raw in self.schema.get("properties", {}).items():
            spec = self._resolve(raw)
            if spec.get("type") == "object" and "properties" in spec:
                fields = tuple(self._fields(key, spec))
            else:
                fields = (self._field(key, key, spec),)
            yield Group(key, humanize(key), spec.get("description", ""), fields)

    def _fields(self, prefix: str, spec: Mapping[str, Any]) -> Iterable[Field]:
        for name, raw in spec.get("properties", {}).items():
            child = self._resolve(raw)
            path = f"{prefix}.{name}"
            if child.get("type") == "object" and "properties" in child:
                yield from self._fields(path, child)
            else:
                yield self._field(path, name, child)

    def _field(self, path: str, name: str, spec: Mapping[str, Any]) -> Field:
        unit, stem = unit_and_stem(name, spec)
        label = spec.get("title") or humanize(stem)
        description = spec.get("description", "")
        kind = spec.get("type")
        items = self._resolve(spec.get("items", {})) if kind == "array" else {}
        if kind in ("number", "integer"):
            return Field(path, kind, label, unit, description, spec.get("minimum", spec.get("exclusiveMinimum")),
                         spec.get("maximum", spec.get("exclusiveMaximum")))
        if kind == "boolean":
            return Field(path, "boolean", label, unit, description)
        if kind == "string" and "enum" in spec:
            return Field(path, "choice", label, unit, description, options=tuple(spec["enum"]))
        if kind == "array" and items.get("type") == "string" and "enum" in items:
            return Field(path, "choices", label, unit, description, options=tuple(items["enum"]))
        return Field(path, "json", label, unit, description)

    # -- form data -> state ---------------------------------------------------
    def parse(self, pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, Any], dict[str, str]]:
        """The patient state from submitted form pairs, and per-field errors (fact path -> message).

        Empty fields are left out: unknown. Other form fields (csrf_token, buttons) are ignored.
        """
        values: dict[str, list[str]] = {}
        for key, value in pairs:
            values.setdefault(key, []).append(value)
        state: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for f in self.fields.values():
            raw = values.get(f.name, [])
            text = raw[0].strip() if raw else ""
            try:
                value = self._value(f, text, raw)
            except ValueError as exc:
                errors[f.path] = str(exc)
                continue
            if value is not None:
                _put(state, f.path, value)
        return state, errors

    @staticmethod
    def _value(f: Field, text: str, raw: list[str]) -> Any:
        if f.kind == "choices":
            chosen = [v for v in raw if v and v != NONE_OF_THESE]
            if chosen:
                unknown = [v for v in chosen if v not in f.options]
                if unknown:
                    raise ValueError(f"not one of the choices: {', '.join(unknown)}")
                return chosen
            return [] if NONE_OF_THESE in raw else None
        if text == "":
            return None
        if f.kind in ("number", "integer"):
            if re.fullmatch(r"[+-]?\d+", text):
                return int(text)
            if f.kind == "number" and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)", text):
                return float(text)
            raise ValueError(f"'{text}' is not a {'whole ' if f.kind == 'integer' else ''}number")
        if f.kind == "boolean":
            if text in ("true", "false"):
                return text == "true"
            raise ValueError("choose yes, no or unknown")
        if f.kind == "choice":
            if text not in f.options:
                raise ValueError(f"'{text}' is not one of the choices")
            return text
        from pressor.engine.errors import InputError
        from pressor.engine.evaluation.load import parse

        try:  # the strict loader, as for every JSON text from outside
            return parse(text, file=f.path, fmt="json").data
        except InputError as exc:
            raise ValueError(f"not valid JSON: {exc.problems[0].message}") from None

    # -- state -> form values -------------------------------------------------
    def values(self, state: Mapping[str, Any] | None) -> dict[str, Any]:
        """Field path -> value to show (absent: unknown)."""
        out: dict[str, Any] = {}
        if not state:
            return out
        for f in self.fields.values():
            value = _get(state, f.path)
            if value is _MISSING:
                continue
            out[f.path] = json.dumps(value) if f.kind == "json" else value
        return out

    def unplaced(self, state: Mapping[str, Any] | None) -> list[str]:
        """Facts of ``state`` that no field holds (a schema the form has not caught up with)."""
        placed = set(self.fields)
        out: list[str] = []

        def walk(value: Any, path: str) -> None:
            if path in placed:
                return
            if isinstance(value, Mapping) and not any(p.startswith(path + ".") for p in placed) and path:
                out.append(path)
                return
            if isinstance(value, Mapping):
                for k, v in value.items():
                    walk(v, f"{path}.{k}" if path else k)
            elif path:
                out.append(path)

        walk(state or {}, "")
        return out


_MISSING = object()


def _put(state: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    target = state
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _get(state: Mapping[str, Any], path: str) -> Any:
    target: Any = state
    for part in path.split("."):
        if not isinstance(target, Mapping) or part not in target:
            return _MISSING
        target = target[part]
    return target
