"""A parsed document, JSON pointers into it, and the limits every reader keeps (:mod:`.load` for JSON,
:mod:`.yaml_reading` for YAML: both read these, neither reads the other)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Deepest nesting of mappings and sequences read, in any document. A patient state is
#: 2 deep, a FHIR bundle about 8, a hook request with its prefetch about 11, a rule file
#: about 12; a deeper document is refused before anything recursive sees it.
MAX_DEPTH = 64


@dataclass(frozen=True)
class Document:
    """A parsed document and the source position of every JSON pointer in it."""

    data: Any
    file: str
    positions: Mapping[str, tuple[int, int]] = field(default_factory=dict)
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


#: Longest number text read (JSON and YAML): Python refuses integers of more than 4,300 digits anyway.
MAX_DIGITS = 100

#: What to do about a document nested deeper than :data:`MAX_DEPTH`.
DEPTH_FIX = "a patient state, bundle, hook request or rule file is never nearly this deep; check the input"


def line_col(text: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column of ``offset`` in ``text``."""
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)
