"""``pressor recommend``: what to do for this patient now."""
from __future__ import annotations

from datetime import datetime, timezone

import click

from pressor.engine.evaluate import evaluate
from pressor.engine.load import load_document
from pressor.engine.pack import load_pack

from . import exit_codes
from .common import emit_json, handles_errors, json_option, rules_option, say
from .render import result_text


def parse_now(value: str | None) -> datetime:
    """``--now`` as an aware datetime (UTC when no offset is given); the current time if absent."""
    if value is None:
        return datetime.now(timezone.utc)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"'{value}' is not an ISO 8601 date-time (e.g. 2026-01-31T14:05:00Z)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@click.command(epilog=exit_codes.help_text())
@click.argument("state_file", metavar="FILE|-", type=str)
@json_option
@rules_option
@click.option("--include-draft", is_flag=True, help="Also evaluate draft and in-review rules (marked as such).")
@click.option("--now", "now_text", metavar="ISO-8601", default=None, help="Evaluation time (default: now, UTC).")
@handles_errors
def recommend(state_file: str, as_json: bool, rules_dir: str | None, include_draft: bool, now_text: str | None) -> None:
    """Every applicable recommendation for a patient state (YAML or JSON; - reads stdin).

    Absent facts are unknown, never false: rules that need them are listed as not
    evaluable with the missing fact paths. No weight, no weight-based dose.

    \b
    Example:
      pressor recommend examples/septic-shock-adult.yaml
      cat state.json | pressor recommend - --json
    """
    now = parse_now(now_text)
    pack = load_pack(rules_dir)
    document = load_document(state_file)
    result = evaluate(pack, document.data, now=now, include_draft=include_draft, document=document)
    if as_json:
        emit_json(result.to_dict())
    else:
        for line, style in result_text(result):
            say(line, **style)
