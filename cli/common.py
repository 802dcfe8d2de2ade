"""What every command shares: the ``--json``, ``--rules``, ``--profile`` and ``--audit-db`` options, ``--user``'s check,
error reporting, output."""
from __future__ import annotations

import functools
import json
import re
import sys
from typing import Any, Callable

import click
import orjson

from pressor.engine.errors import EvaluationError, PressorError

from . import exit_codes

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout (human text goes to stderr).")
rules_option = click.option(
    "--rules", "rules_dir", type=click.Path(file_okay=False, path_type=str), default=None,
    help="Rule pack directory (default: the bundled pack).",
)


profile_option = click.option(
    "--profile", "profile", type=click.Path(dir_okay=False, path_type=str), default=None,
    help="Site profile (YAML): parameter values within the pack's allowed ranges; shown with every result.",
)

audit_db_option = click.option(
    "--audit-db", "audit_db", metavar="PATH", default=None,
    help="Audit database file (default: $PRESSOR_AUDIT_DB, else audit.db in the user data directory).",
)


#: C0 and C1 control characters, DEL, and the bidirectional overrides that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: Any) -> str:
    """``text`` safe for a terminal and a line-per-record listing: every control character is
    shown escaped (``\\n``, ``\\x1b``, ``\\u202e``), so a recorded string can neither forge a line
    nor send an escape sequence. Backslashes are doubled, so the escaping cannot be faked."""
    text = str(text).replace("\\", "\\\\")
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def checked_user(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--user``: refused if empty or holding control characters (it is printed in every listing)."""
    if value is not None and (not value.strip() or _CONTROL.search(value)):
        raise click.BadParameter(f"'{printable(value)}' is empty or holds control characters (newline, escape, ...); "
                                 "give a plain name", param_hint="--user")
    return value


def emit_json(data: Any) -> None:
    """Write one JSON document to stdout."""
    click.echo(pretty_json(data))


#: The classes :func:`pretty_json` hands to orjson (exactly these: a subclass, an enum, goes to :mod:`json`).
_PLAIN = frozenset({dict, list, tuple, str, int, bool, type(None)})


def pretty_json(data: Any) -> str:
    """``json.dumps(data, indent=2, ensure_ascii=False)``, written by orjson where the text is certainly the same.

    :mod:`json` writes indented output in pure Python (1.5 ms for a recommendation's 70 KB, the largest part of
    a warm worker's answer); orjson writes it in 0.03 ms. The two agree on the plain types' text (key order,
    indentation, escapes with ``ensure_ascii=False``; floats from 1e-4 up to 1e16, where both print the
    shortest round-trip digits in fixed notation: outside that range Python writes ``1e-05``, orjson
    ``0.00001``). So one walk checks the value holds only plain types and such floats; anything else (NaN,
    a float outside the range, a subclass, a set) and anything orjson refuses (an integer beyond 64 bits, a
    non-str key, a lone surrogate, nesting deeper than 254) is written by :mod:`json`, which gives the text or
    raises as it always did. ``tests/test_pretty_json.py`` compares the two on generated values."""
    stack = [data]
    pop, push = stack.pop, stack.extend
    while stack:
        value = pop()
        kind = value.__class__
        if kind is dict:
            push(value.values())
        elif kind is list or kind is tuple:
            push(value)
        elif kind is float:
            if value != 0.0 and not 1e-4 <= abs(value) < 1e16:  # NaN fails the comparison too
                break
        elif kind not in _PLAIN:
            break
    else:
        try:
            return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
        except (orjson.JSONEncodeError, RecursionError):
            pass
    return json.dumps(data, indent=2, ensure_ascii=False)


def say(text: str = "", **style: Any) -> None:
    """Human text, to stderr."""
    click.secho(text, err=True, **style)


def report_error(exc: PressorError, as_json: bool, *, limit: int = 10) -> None:
    """Print an error: every problem with ``--json`` (stdout), the first ``limit`` otherwise (stderr)."""
    if as_json:
        emit_json(exc.to_dict())
    problems = exc.problems or []
    for problem in problems[:limit]:
        say(f"error: {problem}", fg="red")
    if len(problems) > limit:
        say(f"... and {len(problems) - limit} more problems (use --json to see all)", fg="red")


def handles_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`PressorError` into a clear message and its exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EvaluationError as exc:
            report_error(exc, kwargs.get("as_json", False))
            sys.exit(exit_codes.ENGINE_FAILURE)
        except PressorError as exc:
            report_error(exc, kwargs.get("as_json", False))
            sys.exit(exit_codes.INVALID)

    return wrapper
