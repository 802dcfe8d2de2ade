"""Read YAML or JSON documents strictly, keeping ``file:line:col`` for every JSON pointer.

Everything pressor reads from outside (patient states, FHIR bundles, CDS Hooks request
bodies, service configs, rule, scenario and mapping files) comes through here, and gets
the same refusals, each located: duplicate keys, NaN and infinity, nesting deeper than
:data:`MAX_DEPTH` (checked before anything recursive sees the data), documents over
:data:`MAX_DOCUMENT_BYTES`.

JSON goes through :mod:`json`, so JSON numbers keep JSON's meaning. YAML is read from
PyYAML's event stream (libyaml when present; :mod:`.yaml_reading`, imported only for YAML), iteratively, as YAML 1.2 core-schema
data: mappings, sequences, text, decimal numbers, ``true``/``false``, ``null``. The
spellings that YAML 1.1 reads differently (``yes``/``no``/``on``/``off``/``y``/``n``,
``0x48``, ``0o17``, ``060``, ``7_2``, ``1:30``) are refused with what they would have
meant, as are tags (``!foo``, ``!!timestamp``), anchors and aliases (no alias bombs,
no value that silently stands for another), and more than one document.
"""
from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from orjson import loads as _orjson_loads  # batch input: see loads_json

from ..errors import InputError
from .document import (  # noqa: F401 (re-exported: the names every reader of documents has imported from here)
    DEPTH_FIX as _DEPTH_FIX,
    MAX_DEPTH,
    MAX_DIGITS as _MAX_DIGITS,
    Document,
    escape_pointer_token,
    line_col as _line_col,
    pointer_of,
)

#: Largest document read, in bytes. Real states are ~2 KB, rule files ~30 KB.
MAX_DOCUMENT_BYTES = 1_048_576



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

    A JSON document's line/column map is built on first use; ``positions=False`` goes without
    it altogether (large FHIR bundles).
    """
    if len(text) > max_bytes or len(text.encode("utf-8")) > max_bytes:
        raise _too_large(file, max_bytes, what)
    stripped = text.lstrip()
    if not stripped:
        raise InputError.single("empty document", file=file, suggestion="expected a mapping of facts or rules")
    if fmt == "json" or (fmt is None and stripped[:1] in "{["):
        return Document(loads_json(text, file=file), file, _JsonPositions(text) if positions else {}, text)
    from .yaml_reading import parse_yaml  # PyYAML is imported only when a document is YAML

    document = parse_yaml(text, file)
    check_encodable(document.data, text, file)
    return document


def load_document(path: str | Path, *, label: str | None = None, max_bytes: int = MAX_DOCUMENT_BYTES,
                  what: str | None = None, positions: bool = True) -> Document:
    """Read and parse one file (``-`` is stdin); see :func:`read_text` and :func:`parse` for the keywords."""
    label = label or ("<stdin>" if str(path) == "-" else str(path))
    text = read_text(path, label=label, max_bytes=max_bytes, what=what)
    fmt = "json" if str(path).endswith(".json") else None
    return parse(text, file=label, fmt=fmt, max_bytes=max_bytes, what=what, positions=positions)


# --- JSON ------------------------------------------------------------------------------

#: A JSON string (escapes included) or one bracket: what the depth check needs to see.
_JSON_NESTING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)
#: Every JSON token, for locating pointers in text that :mod:`json` has already accepted.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', re.S)


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out





def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def _int(text: str) -> int:
    if len(text) > _MAX_DIGITS:
        raise ValueError(f"a number of {len(text)} digits is not a number pressor reads")
    return int(text)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number pressor accepts")


def loads_json(text: str, *, file: str) -> Any:
    """Strict JSON: duplicate keys, NaN, infinity and nesting deeper than :data:`MAX_DEPTH` are
    refused as a located :class:`InputError` (no positions kept: see :func:`parse` for those).

    :mod:`json` reads first: it stops at Python's recursion limit with RecursionError, and
    once it has accepted the text every later scan of it runs in linear time.

    orjson reads first (a batch reads tens of thousands of states): what it accepts is taken only when
    nothing that :mod:`json` would judge differently can be in it (see :func:`_orjson_fast`); anything else
    (an error, a possible duplicate key, a large number) is read again by :mod:`json`, which gives the error."""
    data = _orjson_fast(text)
    if data is None:
        data = _json_strict(text, file)
    if text.count("[") + text.count("{") > MAX_DEPTH and _deeper_than(text, MAX_DEPTH):
        _check_json_depth(text, file)
        raise InputError.single(f"nested deeper than {MAX_DEPTH} levels; refused", file=file, suggestion=_DEPTH_FIX)
    check_encodable(data, text, file)
    return data


def _orjson_fast(text: str) -> Any:
    """``text`` parsed by orjson, or None where :mod:`json` must read it (it alone says what is wrong).

    orjson keeps the last of duplicate keys: the object members it found must be as many as the text's
    colons outside strings (a colon is a member separator or in a string; the strings' colons are counted
    from the parsed strings, so an escaped colon only sends the text to json). It reads an integer beyond
    64 bits as a float: every float of that size goes to json too."""
    try:
        data = _orjson_loads(text)
    except ValueError:  # orjson.JSONDecodeError
        return None
    members = colons = 0
    stack = [data]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        value = pop()
        kind = value.__class__
        if kind is dict:
            members += len(value)
            for key, item in value.items():
                if ":" in key:
                    colons += key.count(":")
                push(item)
        elif kind is list:
            extend(value)
        elif kind is str:
            if ":" in value:
                colons += value.count(":")
        elif kind is float and not -9.2e18 < value < 9.2e18:
            return None
    if text.count(":") - colons != members:
        return None
    return data


def _json_strict(text: str, file: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_finite, parse_int=_int,
                          parse_constant=_reject_constant)
    except _DuplicateKey:
        key, pointer, (line, col), first = _first_duplicate(text)
        raise InputError.single(
            f"duplicate key '{key}'", file=file, line=line, column=col, pointer=pointer,
            suggestion=f"each key may appear once; the first is at line {first}",
        ) from None
    except RecursionError:
        _check_json_depth(text, file)  # the prefix json read is valid: this finds where, and raises
        raise InputError.single(f"nested deeper than {MAX_DEPTH} levels; refused", file=file, suggestion=_DEPTH_FIX) from None
    except json.JSONDecodeError as exc:
        raise InputError.single(f"malformed JSON: {exc.msg}", file=file, line=exc.lineno, column=exc.colno) from exc
    except ValueError as exc:  # NaN, Infinity, 1e999, a number of more than _MAX_DIGITS digits
        raise InputError.single(f"malformed JSON: {exc}", file=file,
                                suggestion="NaN and Infinity are not allowed; write numbers in plain decimal") from exc


#: An escape that can write half a character (a UTF-16 surrogate): JSON's ``\ud800``, YAML's ``\U0000d800``.
_SURROGATE_ESCAPE = re.compile(r"\\(?:u|U0000)[dD][89a-fA-F]")


def check_encodable(data: Any, text: str, file: str) -> None:
    """Refuse a string that no UTF-8 can carry (a lone UTF-16 surrogate, ``"\\ud800"``: half a character) where
    it enters, naming its pointer: it would otherwise be accepted here and crash JSON output, the audit
    record or a batch later. Only a text holding such an escape is walked."""
    if "\\" not in text or not _SURROGATE_ESCAPE.search(text):
        return
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        pointer, value = stack.pop()
        bad: Any = None
        if isinstance(value, str):
            bad = value if _unencodable(value) else None
        elif isinstance(value, dict):
            bad = next((k for k in value if isinstance(k, str) and _unencodable(k)), None)
            if bad is not None:
                pointer = f"{pointer}/{escape_pointer_token(bad.encode('utf-8', 'backslashreplace').decode())}"
            stack.extend((f"{pointer}/{escape_pointer_token(k)}", v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{pointer}/{i}", v) for i, v in enumerate(value))
        if bad is not None:
            raise InputError.single("a text holds half a character (a lone UTF-16 surrogate such as \\ud800), which no "
                                    "UTF-8 can carry; refused", file=file, pointer=pointer or "/",
                                    suggestion="send whole characters: a character above U+FFFF is written as a pair of "
                                               "escapes (\\ud83d\\ude00), or as itself in UTF-8")


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


#: Deletes every ASCII character but quotes and brackets; turns braces into square brackets.
_STRUCTURE_ONLY = str.maketrans("{}", "[]", "".join(chr(i) for i in range(128) if chr(i) not in '"[]{}'))
_ESCAPE_FREE_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]]+")


def _deeper_than(text: str, limit: int) -> bool:
    """Whether JSON text that has parsed nests more than ``limit`` levels, in C-speed string passes:
    escaped backslashes and quotes go first (left to right, as a JSON reader pairs them), then every
    character but quotes and brackets; strings (now free of escapes) go next, with any brackets inside
    them. What is left are the containers' brackets, one kind; each ``replace`` of ``[]`` removes exactly
    the innermost level (pairs it creates are not rescanned), so they are gone after as many passes as
    the deepest nesting."""
    reduced = text.replace("\\\\", "").replace('\\"', "").translate(_STRUCTURE_ONLY)
    brackets = _NOT_BRACKET.sub("", _ESCAPE_FREE_STRING.sub("", reduced))  # also any non-ASCII text left
    for _ in range(limit + 1):
        if not brackets:
            return False
        brackets = brackets.replace("[]", "")
    return True


def _check_json_depth(text: str, file: str) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH`, located (a scan of the text: strings skipped, no recursion)."""
    depth = 0
    for match in _JSON_NESTING.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line, col = _line_col(text, match.start())
                raise InputError.single(
                    f"nested deeper than {MAX_DEPTH} levels; refused", file=file, line=line, column=col,
                    pointer=_pointer_at(text, match.start()), suggestion=_DEPTH_FIX,
                )
        elif char in "]}":
            depth -= 1





def _pointer_at(text: str, offset: int) -> str:
    """The pointer of the value starting at ``offset`` (the text up to there is read, not parsed)."""
    pointer = ""
    for pointer, start, _ in _json_values(text, stop=offset):
        if start == offset:
            break
    return pointer


def _json_values(text: str, stop: int | None = None) -> Iterator[tuple[str, int, int]]:
    """``(pointer, offset, key_offset)`` of every value in a JSON text, in order, iteratively.

    ``offset`` is where the value starts; ``key_offset`` where its key does (the value's own
    offset in arrays and at the root). Meant for text :mod:`json` has read (up to ``stop``);
    on anything else it yields what it can and never raises.
    """
    stack: list[list[Any]] = []  # [is_object, pointer, key offset or item index, key or None]
    for match in _JSON_TOKEN.finditer(text):
        start = match.start()
        if stop is not None and start > stop:
            return
        tok = match.group()
        frame = stack[-1] if stack else None
        if frame is not None and frame[0] and frame[3] is None and tok[0] == '"':
            frame[2], frame[3] = start, _json_key(tok)
        elif tok == ",":
            if frame is not None and frame[0]:
                frame[3] = None
            elif frame is not None:
                frame[2] += 1
        elif tok in "]}":
            if stack:
                stack.pop()
        elif tok != ":":
            if frame is None:
                pointer, key_at = "", start
            elif frame[0]:
                pointer, key_at = f"{frame[1]}/{escape_pointer_token(frame[3])}", frame[2]
            else:
                pointer, key_at = f"{frame[1]}/{frame[2]}", start
            yield pointer, start, key_at
            if tok in "{[":
                stack.append([tok == "{", pointer, 0, None])


def _json_key(token: str) -> str:
    if "\\" not in token:
        return token[1:-1]
    try:
        return json.loads(token)
    except ValueError:
        return token[1:-1]


def _first_duplicate(text: str) -> tuple[str, str, tuple[int, int], int]:
    """The first repeated key of a JSON text: key, pointer, its position, and the line of its first use.

    A pointer met twice can only be a repeated key (items are numbered), and the repeated key
    itself comes before anything under it."""
    seen: dict[str, int] = {}
    for pointer, _, key_at in _json_values(text):
        if pointer in seen:
            key = pointer.rpartition("/")[2].replace("~1", "/").replace("~0", "~")
            return key, pointer, _line_col(text, key_at), _line_col(text, seen[pointer])[0]
        seen[pointer] = key_at
    raise AssertionError("json reported a duplicate key that the scan cannot find")


class _JsonPositions(Mapping[str, tuple[int, int]]):
    """Positions of a JSON document's pointers, computed on first use (most documents never need them)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._map: dict[str, tuple[int, int]] | None = None

    def _positions(self) -> dict[str, tuple[int, int]]:
        if self._map is None:
            starts = [0] + [m.end() for m in re.finditer("\n", self._text)]
            out = {}
            for pointer, _, key_at in _json_values(self._text):
                row = bisect_right(starts, key_at) - 1
                out[pointer] = (row + 1, key_at - starts[row] + 1)
            self._map = out
        return self._map

    def __getitem__(self, pointer: str) -> tuple[int, int]:
        return self._positions()[pointer]

    def __iter__(self) -> Iterator[str]:
        return iter(self._positions())

    def __len__(self) -> int:
        return len(self._positions())
