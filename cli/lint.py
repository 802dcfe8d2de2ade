"""``pressor lint``: contradictions, gaps, dead rules and wrong arithmetic in a rule pack."""
from __future__ import annotations

import json

import click

from pressor.engine.authoring.lint import lint_pack

from . import exit_codes
from .common import emit_json, handles_errors, json_option, profile_option, say

_COLOUR = {"error": "red", "warning": "yellow", "info": "cyan"}


@click.command(epilog=exit_codes.help_text())
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=str))
@json_option
@profile_option
@handles_errors
def lint(directory: str | None, as_json: bool, profile: str | None) -> None:
    """Static analysis of a rule pack (default: the bundled one), beyond the schema.

    Finds do/avoid and dose contradictions, two answers to one decision, gaps in
    declared decisions, rules that can never fire, near-duplicate thresholds, wrong
    unit arithmetic, citation and status problems. Each finding has a stable code,
    file:line, the rules involved and, where a patient can show it, a witness state
    (confirmed by evaluating it). Exits 1 if any finding is an error.

    \b
    Example:
      pressor lint
      pressor lint rules/ --json
      pressor lint --profile examples/profiles/teaching-hospital-icu.yaml

    With --profile, the profile's values are checked against the parameters' allowed ranges
    (profile-out-of-range) and every check then runs with them applied.
    """
    report = lint_pack(directory, profile=profile)
    if as_json:
        emit_json(report.to_dict())
        raise SystemExit(exit_codes.OK if report.ok else exit_codes.INVALID)
    reasons_shown: set[tuple[str, int]] = set()
    for f in report.findings:
        say(f"{f.location()}: {f.severity} {f.code}: {f.message}", fg=_COLOUR[f.severity])
        waived = f.details.get("waived")
        if waived and (waived["file"], waived["line"]) not in reasons_shown:  # each reason once
            reasons_shown.add((waived["file"], waived["line"]))
            say(f"    waived: {waived['reason']}", dim=True)
        if f.rules:
            say(f"    rules: {', '.join(f.rules)}")
        if f.witness is not None:
            say(f"    witness: {json.dumps(f.witness, separators=(', ', ': '))}")
        if f.suggestion:
            say(f"    fix: {f.suggestion}", dim=True)
    name = f"{report.pack['name']} {report.pack['version']}" if report.pack else report.directory
    counts = ", ".join(f"{report.count(s)} {s}{'s' if report.count(s) != 1 and s != 'info' else ''}"
                       for s in ("error", "warning", "info"))
    say(f"lint {name}: {counts}", fg="green" if report.ok else "red", bold=True)
    if not report.ok:
        raise SystemExit(exit_codes.INVALID)
