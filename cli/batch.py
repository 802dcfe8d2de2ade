"""``pressor recommend --batch``: many states in, one JSON line out per state, in input order."""
from __future__ import annotations

import contextlib
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from pressor.engine.errors import AuditError, InputError

from . import exit_codes
from .common import say


def run_batch(source: str, *, rules_dir: str | None, profile: str | None = None, now: datetime, include_draft: bool, jobs: int,
              audit: dict[str, Any] | None, require_audit: bool, advice: bool = True, compact: bool = False) -> int:
    """Evaluate every state of ``source`` (``-`` or a file: JSON lines; a directory: state files); the exit code.

    ``audit``: the options of the audit log (None: --no-audit). Each evaluation is recorded, in input
    order, by this process; a state whose record fails is still answered (exit 3) unless
    ``require_audit``, when its line becomes an error line (exit 1).
    """
    from pressor.engine.evaluation.batch import default_jobs, evaluate_many, json_lines, state_files
    from pressor.engine.evaluation.evaluate import freeze_long_lived
    from pressor.engine.evaluation.pack import load_pack

    pack = load_pack(rules_dir, profile=profile)  # a bad pack fails here, once, before any state is read
    freeze_long_lived()  # this process does nothing else now
    path = Path(source)
    if source != "-" and not path.exists():
        raise InputError.single("file not found", file=source,
                                suggestion="give - (JSON lines on stdin), a file of JSON lines or a directory of state files")
    log = _open_log(audit) if audit is not None else None
    counts = {code: 0 for code in (0, 1, 3, 4)}
    not_recorded: AuditError | None = log if isinstance(log, AuditError) else None
    with contextlib.ExitStack() as stack:
        if source == "-":
            items = json_lines(sys.stdin)
        elif path.is_dir():
            items = state_files(path)
        else:
            items = json_lines(stack.enter_context(open(path, encoding="utf-8")), label=str(path))
        if log is not None and not_recorded is None:
            stack.callback(log.close)
        answers = evaluate_many(items, rules_dir=rules_dir, profile=profile, now=now, include_draft=include_draft,
                                jobs=default_jobs() if jobs == 0 else jobs, keep=audit is not None, advice=advice,
                                compact=compact, out=_direct_fd(audit))
        if compact:
            from pressor.engine.evaluation.compact import HEADER, dumps

            sys.stdout.write(dumps(HEADER) + "\n")
        sys.stdout.flush()  # the workers may write to the same descriptor from now on
        for answer in answers:
            line, code = answer.line, answer.exit_code
            if code == exit_codes.OK and audit is not None:
                line, code, error = _record(log, pack, answer, audit, require_audit)
                not_recorded = error or not_recorded
            counts[code] += 1
            if line is not None:  # None: a worker wrote it (see _direct_fd)
                sys.stdout.write(line + "\n")
    sys.stdout.flush()
    say(f"{sum(counts.values())} states: {counts[0]} answered, {counts[1]} invalid or withheld, "
        f"{counts[3]} answered but not recorded, {counts[4]} engine failures", dim=True)
    if not_recorded is not None:
        say(f"WARNING: {counts[3] or counts[1]} recommendations were NOT recorded in the audit log: {not_recorded}",
            fg="red", bold=True)
    for code in (exit_codes.ENGINE_FAILURE, exit_codes.INVALID, exit_codes.NOT_RECORDED):
        if counts[code]:
            return code
    return exit_codes.OK


def _direct_fd(audit: dict[str, Any] | None) -> int | None:
    """stdout's descriptor, for the workers to write their lines to themselves (in input order), when nothing is
    recorded (the audit log needs every result in this process) and stdout is a real file or pipe."""
    if audit is not None:
        return None
    try:
        return sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream (tests)
        return None


def _open_log(audit: dict[str, Any]) -> Any:
    """The open audit log, or the :class:`AuditError` saying why it cannot be used."""
    from pressor.engine.audit import AuditLog, resolve_path

    try:
        return AuditLog.open(resolve_path(audit["audit_db"]))
    except AuditError as exc:
        return exc


def _record(log: Any, pack: Any, answer: Any, audit: dict[str, Any],
            require_audit: bool) -> tuple[str, int, AuditError | None]:
    """Append one evaluation; the line to print, its exit code, and why it was not recorded (if not)."""
    import json

    from pressor.engine.audit import os_user

    error = log if isinstance(log, AuditError) else None
    if error is None:
        try:
            log.append(pack, answer.state, answer.result, now=datetime.now(timezone.utc),
                       user=audit["user"] or os_user(), input_mode=audit["input_mode"])
            return answer.line, exit_codes.OK, None
        except AuditError as exc:
            error = exc
    if not require_audit:
        return answer.line, exit_codes.NOT_RECORDED, error
    withheld = {"index": answer.index, "source": answer.source, "ok": False, "exit_code": exit_codes.INVALID,
                **error.to_dict()}
    return json.dumps(withheld, ensure_ascii=False, separators=(",", ":")), exit_codes.INVALID, error


def jobs_option(f: Any) -> Any:
    """``--jobs N`` for batches."""
    return click.option("--jobs", type=click.IntRange(min=0), default=1, show_default=True,
                        help="With --batch: worker processes (0: one per CPU).")(f)
