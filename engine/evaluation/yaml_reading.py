"""Reading YAML documents for :mod:`.load`: YAML 1.2 plain data only, every pointer located.

Imported only when a document is YAML (PyYAML's import is ~14 ms of a start), so a JSON input never pays for it.
"""
from __future__ import annotations

import math
import re
from datetime import date
from typing import Any

import yaml

from ..errors import InputError
from .document import DEPTH_FIX, MAX_DEPTH, MAX_DIGITS, Document, escape_pointer_token, line_col

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster

_NULL = {"", "~", "null", "Null", "NULL"}
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_YAML11_BOOL = {word: value for value, words in ((True, "y Y yes Yes YES on On ON"), (False, "n N no No NO off Off OFF"))
                for word in words.split()}
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_NON_FINITE = re.compile(r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
_LEADING_ZERO = re.compile(r"[-+]?0[0-9]+")
_RADIX = re.compile(r"[-+]?0(?:x[0-9a-fA-F_]+|o[0-7_]+|b[01_]+)")
_SEPARATED = re.compile(r"[-+]?[0-9][0-9_]*_[0-9_]*(?:\.[0-9_]*)?|[-+]?[0-9][0-9_]*\.[0-9_]*_[0-9_]*")
_BASE60 = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_RADIX_NAMES = {"x": "a hexadecimal", "o": "an octal", "b": "a binary"}


def parse_yaml(text: str, file: str) -> Document:
    """Parse YAML ``text`` into a :class:`Document` (plain data and the position of every pointer)."""
    loader = _LOADER(text)
    try:
        data, positions = _YamlReader(loader, file).read()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        deep = "maximum nesting depth" in str(exc.problem)  # libyaml's own limit (1,000), met scanning ahead
        raise InputError.single(
            f"nested deeper than {MAX_DEPTH} levels; refused" if deep else f"malformed YAML: {exc.problem or exc.context}",
            suggestion=DEPTH_FIX if deep else None,
            file=file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, e.g. a control character
        line, col = line_col(text, exc.position) if isinstance(exc.position, int) else (None, None)
        char = exc.character if isinstance(exc.character, int) else ord(exc.character or "\0")
        raise InputError.single(f"malformed YAML: {exc.reason} (found #x{char:04x})", file=file,
                                line=line, column=col, suggestion="remove it, or quote and escape it") from exc
    except yaml.YAMLError as exc:
        raise InputError.single(f"malformed YAML: {' '.join(str(exc).split())}", file=file) from exc
    finally:
        loader.dispose()
    return Document(data, file, positions, text)


class _YamlReader:
    """Builds plain data from PyYAML events, one at a time (no recursion), refusing what
    pressor does not read; records the position of every pointer (a mapping entry is
    located at its key, where an editor would look)."""

    def __init__(self, loader: Any, file: str) -> None:
        self.loader = loader
        self.file = file
        self.positions: dict[str, tuple[int, int]] = {}

    def refuse(self, message: str, mark: Any, pointer: str | None, suggestion: str | None = None) -> InputError:
        return InputError.single(message, file=self.file, line=mark.line + 1, column=mark.column + 1,
                                 pointer=pointer, suggestion=suggestion)

    def read(self) -> tuple[Any, dict[str, tuple[int, int]]]:
        get = self.loader.get_event
        get()  # StreamStart
        if isinstance(self.loader.peek_event(), yaml.StreamEndEvent):
            raise InputError.single("empty document", file=self.file, suggestion="expected a mapping of facts or rules")
        get()  # DocumentStart
        # Each open collection: [container, pointer, key (None while one is awaited), key mark].
        stack: list[list[Any]] = []
        root: Any = None
        while True:
            event = get()
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                done = stack.pop()[0]
                if not stack:
                    root = done
                    break
                continue
            frame = stack[-1] if stack else None
            if frame is not None and isinstance(frame[0], dict) and frame[2] is None:
                self.key(event, frame)
                continue
            if frame is None:
                pointer, mark = "", event.start_mark
            elif isinstance(frame[0], dict):
                pointer, mark = f"{frame[1]}/{escape_pointer_token(frame[2])}", frame[3]
            else:
                pointer, mark = f"{frame[1]}/{len(frame[0])}", event.start_mark
            self.positions[pointer] = (mark.line + 1, mark.column + 1)
            self.check_plain(event, pointer)
            if isinstance(event, yaml.ScalarEvent):
                value = self.scalar(event, pointer)
            else:
                if len(stack) >= MAX_DEPTH:
                    raise self.refuse(f"nested deeper than {MAX_DEPTH} levels; refused", event.start_mark, pointer, DEPTH_FIX)
                value = {} if isinstance(event, yaml.MappingStartEvent) else []
                stack.append([value, pointer, None, None])
            if frame is None:
                root = value
                if isinstance(event, yaml.ScalarEvent):
                    break
            elif isinstance(frame[0], dict):
                frame[0][frame[2]] = value
                frame[2] = None
            else:
                frame[0].append(value)
        get()  # DocumentEnd
        extra = get()
        if not isinstance(extra, yaml.StreamEndEvent):
            raise self.refuse("malformed YAML: more than one document in the stream", extra.start_mark, None,
                              "a file holds one document; remove the '---' line")
        return root, self.positions

    def check_plain(self, event: Any, pointer: str) -> None:
        """No alias, anchor or tag: each value is written out where it is used, as itself."""
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise self.refuse("YAML anchors and aliases are not allowed", event.start_mark, pointer,
                              "write the value out in full")
        if getattr(event, "tag", None) is not None:
            tag = event.tag.replace("tag:yaml.org,2002:", "!!")
            raise self.refuse(f"YAML tags are not allowed (found '{tag}')", event.start_mark, pointer,
                              "remove the tag; pressor reads plain values only")

    def key(self, event: Any, frame: list[Any]) -> None:
        parent = frame[1]
        if not isinstance(event, yaml.ScalarEvent):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                raise self.refuse("a mapping key must be a plain value", event.start_mark, parent or None)
        self.check_plain(event, parent)
        key = event.value
        if key in frame[0]:
            first = self.positions[f"{parent}/{escape_pointer_token(key)}"][0]
            raise self.refuse(f"duplicate key '{key}'", event.start_mark, f"{parent}/{escape_pointer_token(key)}",
                              f"each key may appear once; the first is at line {first}")
        frame[2], frame[3] = key, event.start_mark

    def scalar(self, event: Any, pointer: str) -> Any:
        """A scalar as YAML 1.2's core schema reads it; the YAML 1.1 spellings are refused."""
        text = event.value
        if not event.implicit[0]:  # quoted or block: always text
            return text
        if text in _NULL:
            return None
        if text in _BOOL:
            return _BOOL[text]
        refusal = _yaml11_reading(text)  # first: '060' would pass for a YAML 1.2 number
        if refusal:
            raise self.refuse(refusal[0], event.start_mark, pointer, refusal[1])
        if _INT.fullmatch(text) or _FLOAT.fullmatch(text):
            if len(text) > MAX_DIGITS:
                raise self.refuse(f"a number of {len(text)} characters is not a number pressor reads", event.start_mark, pointer)
            value = int(text) if _INT.fullmatch(text) else float(text)
            if isinstance(value, float) and not math.isfinite(value):
                raise self.refuse(f"'{text}' is too large for a number", event.start_mark, pointer)
            return value
        if _NON_FINITE.fullmatch(text):
            raise self.refuse(f"'{text}' is not a finite number", event.start_mark, pointer,
                              "NaN and infinity are not allowed; leave the fact out if it is unknown")
        if _DATE.fullmatch(text):
            try:
                date.fromisoformat(text)
            except ValueError as exc:
                raise self.refuse(f"'{text}' is not a valid date ({exc})", event.start_mark, pointer,
                                  "write a real calendar date, YYYY-MM-DD") from exc
        return text


def _yaml11_reading(text: str) -> tuple[str, str] | None:
    """(message, fix) for a plain scalar that YAML 1.1 reads as something else than YAML 1.2 does."""
    if text in _YAML11_BOOL:
        return (f"'{text}' is not a boolean in YAML 1.2 (YAML 1.1 reads it as {'true' if _YAML11_BOOL[text] else 'false'})",
                "write true or false, or quote it if you mean the text")
    if _RADIX.fullmatch(text):
        number = int(text.replace("_", ""), 0)
        return (f"'{text}' is {_RADIX_NAMES[text.lstrip('+-')[1]]} number ({number}); pressor reads decimal numbers only",
                f"write {number} if you mean it")
    if _LEADING_ZERO.fullmatch(text):
        digits = text.lstrip("+-")
        reading = f"octal ({int(text, 8)})" if set(digits) <= set("01234567") else "text"
        return (f"'{text}' has a leading zero, which YAML 1.1 reads as {reading}",
                f"write {int(text, 10)} without the leading zero")
    if _SEPARATED.fullmatch(text):
        joined = text.replace("_", "")
        return (f"'{text}' has a digit separator, which YAML 1.1 reads as {joined} and YAML 1.2 as text", f"write {joined}")
    if _BASE60.fullmatch(text):
        sign = -1 if text.startswith("-") else 1
        value = 0.0
        for part in text.lstrip("+-").replace("_", "").split(":"):
            value = value * 60 + float(part)
        value *= sign
        shown = int(value) if value == int(value) else value
        return (f"'{text}' is a YAML 1.1 base-60 number ({shown})",
                "write a decimal number; quote it if it is a time of day")
    return None
