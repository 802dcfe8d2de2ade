"""Read YAML or JSON documents safely, keeping ``file:line:col`` for every JSON pointer.

YAML goes through PyYAML's safe composer; aliases and anchors are refused outright
(no rule file or patient state needs them, and refusing them stops alias bombs
before any expansion). JSON goes through :mod:`json` so that JSON numbers keep
JSON's meaning (PyYAML 1.1 would read ``1e5`` as a string); its positions are
taken from a best-effort YAML compose of the same text.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError

#: Largest document read, in bytes. Real states are ~2 KB, rule files ~30 KB.
MAX_DOCUMENT_BYTES = 1_048_576


@dataclass(frozen=True)
class Document:
    """A parsed document and the source position of every JSON pointer in it."""

    data: Any
    file: str
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)
    text: str = ""

    def where(self, pointer: str) -> dict[str, Any]:
        """Keyword arguments locating ``pointer`` for :class:`~pressor.engine.errors.Problem`.

        Falls back to the nearest enclosing pointer that has a position.
        """
        probe = pointer
        while True:
            if probe in self.positions:
                line, col = self.positions[probe]
                return {"file": self.file, "line": line, "column": col, "pointer": pointer}
            if not probe:
                return {"file": self.file, "pointer": pointer}
            probe = probe.rsplit("/", 1)[0]


def escape_pointer_token(token: Any) -> str:
    """RFC 6901 escaping of one reference token."""
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer_of(parts: Any) -> str:
    """JSON pointer for a sequence of keys/indices."""
    return "".join("/" + escape_pointer_token(p) for p in parts)


def read_text(path: str | Path, *, label: str | None = None, max_bytes: int = MAX_DOCUMENT_BYTES,
              what: str | None = None) -> str:
    """Read a file (or ``-`` for stdin) as UTF-8, refusing input over ``max_bytes``.

    ``what`` names the kind of document and its limit in the refusal (default: a patient state or rule file).
    """
    import sys

    label = label or str(path)
    try:
        if str(path) == "-":
            raw = sys.stdin.buffer.read(max_bytes + 1)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise InputError.single("file not found", file=label, suggestion="check the path") from exc
    except IsADirectoryError as exc:
        raise InputError.single("is a directory, expected a file", file=label) from exc
    except OSError as exc:
        raise InputError.single(f"cannot read: {exc.strerror}", file=label) from exc
    if len(raw) > max_bytes:
        raise _too_large(label, max_bytes, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError.single(f"not UTF-8 text (byte {exc.start})", file=label) from exc


def _too_large(label: str, max_bytes: int, what: str | None) -> InputError:
    if what is None:
        return InputError.single(f"document is larger than {max_bytes} bytes; refused", file=label,
                                 suggestion="a patient state or rule file is a few KB; check that this is the right file")
    return InputError.single(f"{what} is larger than the {what} limit of {max_bytes} bytes; refused", file=label)


def parse(text: str, *, file: str, fmt: str | None = None, max_bytes: int = MAX_DOCUMENT_BYTES,
          what: str | None = None, positions: bool = True) -> Document:
    """Parse ``text`` as JSON (if ``fmt == 'json'`` or it starts with ``{``/``[``) or YAML.

    ``positions=False`` skips the line/column map of a JSON document (large FHIR bundles).
    """
    if len(text) > max_bytes or len(text.encode("utf-8")) > max_bytes:
        raise _too_large(file, max_bytes, what)
    stripped = text.lstrip()
    if not stripped:
        raise InputError.single("empty document", file=file, suggestion="expected a mapping of facts or rules")
    if fmt == "json" or (fmt is None and stripped[:1] in "{["):
        return _parse_json(text, file, positions)
    return _parse_yaml(text, file)


def load_document(path: str | Path, *, label: str | None = None, max_bytes: int = MAX_DOCUMENT_BYTES,
                  what: str | None = None, positions: bool = True) -> Document:
    """Read and parse one file (``-`` is stdin); see :func:`read_text` and :func:`parse` for the keywords."""
    label = label or ("<stdin>" if str(path) == "-" else str(path))
    text = read_text(path, label=label, max_bytes=max_bytes, what=what)
    fmt = "json" if str(path).endswith(".json") else None
    return parse(text, file=label, fmt=fmt, max_bytes=max_bytes, what=what, positions=positions)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number pressor accepts")


def _parse_json(text: str, file: str, positions_wanted: bool = True) -> Document:
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError.single(
            f"malformed JSON: {exc.msg}", file=file, line=exc.lineno, column=exc.colno
        ) from exc
    except ValueError as exc:
        raise InputError.single(f"malformed JSON: {exc}", file=file, suggestion="NaN and Infinity are not allowed") from exc
    except RecursionError as exc:
        raise InputError.single("JSON nested too deeply", file=file) from exc
    positions: dict[str, tuple[int, int]] = {}
    if not positions_wanted:
        return Document(data, file, positions, text)
    try:
        node = _compose(text, file)
        if node is not None:
            _walk(node, [], positions)
    except InputError:
        positions = {}
    return Document(data, file, positions, text)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster


def _compose(text: str, file: str) -> yaml.Node | None:
    """Compose one YAML document (aliases are refused later, in :func:`_walk`)."""
    loader = _LOADER(text)
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise InputError.single(
            f"malformed YAML: {exc.problem or exc.context}",
            file=file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from exc
    except yaml.YAMLError as exc:
        raise InputError.single(f"malformed YAML: {exc}", file=file) from exc
    finally:
        loader.dispose()


def _parse_yaml(text: str, file: str) -> Document:
    node = _compose(text, file)
    if node is None:
        raise InputError.single("empty document", file=file, suggestion="expected a mapping of facts or rules")
    positions: dict[str, tuple[int, int]] = {}
    data = _walk(node, [], positions, file=file, seen=set())
    return Document(data, file, positions, text)


_SCALARS = yaml.SafeLoader("")  # only its scalar constructors are used


def _walk(node: yaml.Node, path: list[Any], positions: dict[str, tuple[int, int]], *,
          file: str | None = None, seen: set[int] | None = None, mark: Any = None) -> Any:
    """Build plain Python data from a node tree, recording each pointer's position.

    The composer resolves an alias to the very node it names, so a collection node met
    twice is an alias: it is refused before anything is expanded (no alias bombs).
    A mapping entry is located at its key (``mark``), where an editor would look.
    """
    mark = mark or node.start_mark
    positions[pointer_of(path)] = (mark.line + 1, mark.column + 1)
    if seen is not None and not isinstance(node, yaml.ScalarNode):
        if id(node) in seen:
            raise InputError.single(
                "YAML anchors and aliases are not allowed", file=file,
                line=node.start_mark.line + 1, column=node.start_mark.column + 1,
                pointer=pointer_of(path), suggestion="write the value out in full",
            )
        seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, file)
            if not isinstance(key, str):
                key = str(key).lower() if isinstance(key, bool) else str(key)
            if key in out and file is not None:
                raise InputError.single(
                    f"duplicate key '{key}'", file=file,
                    line=key_node.start_mark.line + 1, column=key_node.start_mark.column + 1,
                    pointer=pointer_of(path + [key]), suggestion="each key may appear once",
                )
            out[key] = _walk(value_node, path + [key], positions, file=file, seen=seen, mark=key_node.start_mark)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(child, path + [i], positions, file=file, seen=seen) for i, child in enumerate(node.value)]
    return _scalar(node, file)


def _scalar(node: yaml.Node, file: str | None) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        if file is None:
            return None
        raise InputError.single(
            "a mapping key must be a plain value", file=file,
            line=node.start_mark.line + 1, column=node.start_mark.column + 1,
        )
    try:
        value = _SCALARS.construct_object(node)
    except ValueError as exc:  # a date-shaped scalar that is not a date, e.g. 2026-02-30
        raise InputError.single(
            f"'{node.value}' is not a valid date or time ({exc})", file=file or "<input>",
            line=node.start_mark.line + 1, column=node.start_mark.column + 1,
            suggestion="write a real calendar date, YYYY-MM-DD",
        ) from exc
    if isinstance(value, float) and not math.isfinite(value) and file is not None:
        raise InputError.single(
            f"'{node.value}' is not a finite number", file=file,
            line=node.start_mark.line + 1, column=node.start_mark.column + 1,
            suggestion="NaN and infinity are not allowed; leave the fact out if it is unknown",
        )
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return node.value
    return value
