"""``pressor recommend``: what to do for this patient now."""
from __future__ import annotations

from datetime import datetime, timezone

import click

from pressor.engine.errors import InputError
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
@click.option("--fhir", is_flag=True,
              help="FILE is a FHIR R4 Bundle (JSON): converted to a patient state first; "
                   "--json then prints {\"result\": ..., \"fhir\": {\"state\", \"notes\", ...}}.")
@handles_errors
def recommend(state_file: str, as_json: bool, rules_dir: str | None, include_draft: bool, now_text: str | None,
              fhir: bool) -> None:
    """Every applicable recommendation for a patient state (YAML or JSON; - reads stdin).

    Absent facts are unknown, never false: rules that need them are listed as not
    evaluable with the missing fact paths. No weight, no weight-based dose. With --fhir
    the file is the patient's FHIR R4 Bundle; what the conversion did (units converted,
    observations too old, facts inferred) is listed as notes.

    \b
    Example:
      pressor recommend examples/septic-shock-adult.yaml
      cat state.json | pressor recommend - --json
      pressor recommend --fhir examples/fhir/septic-adult.json
    """
    now = parse_now(now_text)
    pack = load_pack(rules_dir)
    document = load_document(state_file)
    conversion = None
    state = document.data
    if fhir:
        from pressor.engine.fhir import from_bundle

        conversion = from_bundle(document.data, now=now, file=document.file)
        states = conversion.states()
        if len(states) > 1:
            raise InputError.single(f"the bundle holds {len(states)} draft orders; one proposed order is evaluated at a time",
                                    file=document.file, suggestion="keep one draft MedicationRequest in the bundle")
        state, document = states[0], None
    result = evaluate(pack, state, now=now, include_draft=include_draft, document=document)
    if as_json:
        emit_json(result.to_dict() if conversion is None else {"result": result.to_dict(), "fhir": conversion.to_dict()})
        return
    if conversion is not None:
        for note in conversion.notes:
            say(f"fhir: {note}", dim=True)
    for line, style in result_text(result):
        say(line, **style)
