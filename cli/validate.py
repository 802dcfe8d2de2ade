"""``pressor validate``: check a rule pack, every problem located."""
from __future__ import annotations

import click

from pressor.engine.errors import RuleFileError
from pressor.engine.evaluation.pack import load_pack

from . import exit_codes
from .common import emit_json, handles_errors, json_option, say


@click.command(epilog=exit_codes.help_text())
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=str))
@json_option
@handles_errors
def validate(directory: str | None, as_json: bool) -> None:
    """Validate a rule pack (default: the bundled one): schema, facts, types, citations, examples.

    Prints every problem as file:line:column, JSON pointer, message and fix, best first.
    Warnings (such as citations of references the source does not list) do not fail.

    \b
    Example:
      pressor validate rules/
      pressor validate rules/ --json
    """
    try:
        pack = load_pack(directory, check_examples=True)
    except RuleFileError as exc:
        if as_json:
            emit_json({"valid": False, "errors": [p.to_dict() for p in exc.problems], "warnings": []})
        for problem in exc.problems:
            say(f"error: {problem}", fg="red")
        say(f"{len(exc.problems)} error(s)", fg="red", bold=True)
        raise SystemExit(exit_codes.INVALID) from None
    warnings = [w.to_dict() for w in pack.warnings]
    if as_json:
        emit_json({"valid": True, "errors": [], "warnings": warnings,
                   "pack": {"name": pack.name, "version": pack.version, "sha256": pack.sha256, "rules": len(pack.rules)}})
    for w in pack.warnings:
        say(f"warning: {w}", fg="yellow")
    say(f"ok: {pack.name} {pack.version}, {len(pack.rules)} rules, {len(pack.files)} files, "
        f"{len(pack.warnings)} warning(s); sha256 {pack.sha256}", fg="green")
