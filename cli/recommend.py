"""``pressor recommend``: what to do for this patient now."""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import click

from pressor.engine.errors import AuditError, InputError
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import load_document
from pressor.engine.model import Result, RulePack
from pressor.engine.evaluation.pack import load_pack

from . import exit_codes
from .batch import jobs_option, run_batch
from .common import audit_db_option, checked_user, emit_json, handles_errors, json_option, profile_option, report_error, rules_option, say
from pressor.engine.report import result_text

if TYPE_CHECKING:
    from pressor.engine.audit import AuditRecord


def parse_now(value: str | None) -> datetime:
    """``--now`` as an aware datetime (UTC when no offset is given); the current time if absent."""
    if value is None:
        return datetime.now(timezone.utc)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"'{value}' is not an ISO 8601 date-time (e.g. 2026-01-31T14:05:00Z)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def record(pack: RulePack, state: Any, result: Result, *, audit_db: str | None, input_mode: str,
           user: str | None) -> "AuditRecord":
    """Append the evaluation to the audit log (raises :class:`AuditError` if it cannot)."""
    from pressor.engine.audit import AuditLog, os_user, resolve_path

    with AuditLog.open(resolve_path(audit_db)) as log:
        # The time of recording is the wall clock, whatever --now says about the evaluation.
        return log.append(pack, state, result, now=datetime.now(timezone.utc), user=user or os_user(),
                          input_mode=input_mode)


def read_input(state_file: str, *, fhir: bool, load: Callable[[], RulePack], now: datetime,
               trust: tuple[str, ...] = ()) -> tuple[RulePack, Any, Any, Any]:
    """(pack, state, document for evaluate, conversion): a patient state, a FHIR bundle (``fhir``) or a
    timeline input. ``load`` gives the pack; it is called once the input has been read, so that an
    unreadable input is reported at once, without waiting for the pack."""
    if fhir:
        from pressor.engine.ehr.fhir import from_bundle, load_bundle, load_mapping

        mapping = load_mapping().with_trusted(trust)
        document = load_bundle(state_file, mapping=mapping)
        pack = load()
        conversion = from_bundle(document.data, now=now, file=document.file, pack=pack, mapping=mapping)
        states = conversion.states()
        if len(states) > 1:
            raise InputError.single(f"the bundle holds {len(states)} draft orders; one proposed order is evaluated at a time",
                                    file=document.file, suggestion="keep one draft MedicationRequest in the bundle")
        return pack, states[0], None, conversion
    document = load_document(state_file)
    pack = load()
    if isinstance(document.data, dict) and "timeline" in document.data:
        from pressor.engine.ehr.fhir import from_timeline

        conversion = from_timeline(document, now=now, pack=pack)
        return pack, conversion.state, None, conversion
    return pack, document.data, document, None


def with_facts(data: dict[str, Any], conversion: Any) -> dict[str, Any]:
    """A result (or explanation) dict with the conversion's per-fact provenance added (``facts``)."""
    return data if conversion is None else {**data, "facts": conversion.facts}


def show(result: Result, as_json: bool, conversion: Any = None, full: bool = False) -> None:
    """The result: JSON on stdout, or text on stderr (after the conversion's notes, if any): the plan, or with
    ``full`` every recommendation, conditional advice and question."""
    if as_json:
        if conversion is None:
            emit_json(result.to_dict())
        else:
            kind = "fhir" if conversion.mapping is not None else "timeline"
            emit_json({"result": with_facts(result.to_dict(), conversion), kind: conversion.to_dict()})
        return
    for note in conversion.notes if conversion is not None else ():
        say(f"{'fhir' if conversion.mapping is not None else 'timeline'}: {note}", dim=True)
    for line, style in result_text(result, full=full):
        say(line, **style)


@click.command(epilog=exit_codes.help_text())
@click.argument("state_file", metavar="FILE|-", type=str)
@json_option
@rules_option
@profile_option
@click.option("--include-draft", is_flag=True, help="Also evaluate draft and in-review rules (marked as such).")
@click.option("--now", "now_text", metavar="ISO-8601", default=None, help="Evaluation time (default: now, UTC).")
@click.option("--fhir", is_flag=True,
              help="FILE is a FHIR R4 Bundle (JSON, up to 32 MiB by default): converted to a patient state first; "
                   "--json then prints {\"result\": ..., \"fhir\": {\"state\", \"notes\", ...}}.")
@click.option("--trust-complete", "trust", metavar="LIST", multiple=True,
              help="With --fhir: the bundle's list is complete for this (medications, conditions, or a fact path; "
                   "repeatable): absence there is 0/false instead of unknown.")
@audit_db_option
@click.option("--audit-input", "audit_input", type=click.Choice(["full", "hash"]), default="full", show_default=True,
              help="Keep the input in the audit log, or only its SHA-256 (no patient data stored; no replay).")
@click.option("--user", metavar="NAME", default=None, callback=checked_user, help="Who asked, for the audit log (default: the OS user).")
@click.option("--no-audit", is_flag=True, help="Do not record this recommendation in the audit log.")
@click.option("--require-audit", is_flag=True, help="Show nothing (exit 1) unless the recommendation is recorded.")
@click.option("--batch", is_flag=True,
              help="Many states: FILE (or - for stdin) holds one JSON state per line, or FILE is a directory of state "
                   "files; one JSON line per state on stdout, in input order (see the README for their shape).")
@jobs_option
@click.option("--no-advice", is_flag=True,
              help="With --batch: decide the rules without the advice about unknown facts (no conditional advice, "
                   "questions, not-applicable list or missing facts; each line says advice: false). Faster.")
@click.option("--compact", is_flag=True,
              help="With --batch: each rule's texts and citations, and other repeated parts, written once as definitions "
                   "and referred to by key (see the README: Batches).")
@click.option("--all", "show_all", is_flag=True,
              help="Show every recommendation, conditional advice and question, not only the plan (text output; "
                   "the JSON always has everything, marked shown: true/false).")
@handles_errors
def recommend(state_file: str, as_json: bool, rules_dir: str | None, profile: str | None, include_draft: bool, now_text: str | None,
              fhir: bool, trust: tuple[str, ...], audit_db: str | None, audit_input: str, user: str | None, no_audit: bool,
              require_audit: bool, batch: bool, jobs: int, no_advice: bool, compact: bool,
              show_all: bool) -> None:
    """Every applicable recommendation for a patient state (YAML or JSON; - reads stdin).

    FILE may also be a timeline input (top-level `timeline:`; schemas/timeline.schema.json):
    timestamped vitals, labs, doses, rate changes and fluids, from which the pack's temporal
    facts are computed (a fact given directly wins). With --json, the result's `facts` says
    for every fact where its value came from, or why it is unknown.

    The text shows one PLAN: an answer per decision of the pack (MAP target,
    norepinephrine action with dose and pump rate, fluids, next agent, ...) in the
    order one acts on it, each with what supports it (bag, line, monitoring), then
    the bans that matter here, then at most three questions whose answers change
    the plan, then a count of what was left out; --all shows everything instead.
    Absent facts are unknown, never false; a fact decided for any value it could
    take is said to be. No weight, no weight-based dose. With --fhir
    the file is the patient's FHIR R4 Bundle; what the conversion did (units converted,
    observations too old, facts inferred) is listed as notes.

    Each recommendation is appended to the audit log (see `pressor audit`) before
    it is shown. If that fails (also when the log's chain is broken at its last
    record) it is still shown, with a warning, and the exit code is 3; with
    --require-audit nothing is shown and the exit code is 1.

    With --batch, every state of a JSON-lines file (or stdin, or a directory of
    state files) is evaluated by --jobs processes and answered with one JSON line,
    in input order; a bad state gets an error line of its own and the exit code
    is the worst of them (4, then 1, then 3). Each evaluation is recorded in the
    audit log unless --no-audit.

    \b
    Example:
      pressor recommend examples/septic-shock-adult.yaml
      cat state.json | pressor recommend - --json --audit-input hash --user dr.lee
      pressor recommend --fhir examples/fhir/septic-adult.json --now 2026-11-24T12:00:00Z --trust-complete medications
      pressor recommend examples/timeline/septic-persisting.yaml
      pressor recommend --batch states.jsonl --jobs 2 --no-audit > results.jsonl
    """
    if no_audit and require_audit:
        raise click.UsageError("--no-audit and --require-audit contradict each other; give one")
    now = parse_now(now_text)
    if batch:
        if fhir:
            raise click.UsageError("--batch reads patient states, not FHIR bundles; give one of --batch and --fhir")
        audit = None if no_audit else {"audit_db": audit_db, "input_mode": audit_input, "user": user}
        sys.exit(run_batch(state_file, rules_dir=rules_dir, profile=profile, now=now, include_draft=include_draft,
                           jobs=jobs, audit=audit, require_audit=require_audit, advice=not no_advice,
                           compact=compact))
    if jobs != 1:
        raise click.UsageError("--jobs applies to --batch only")
    if compact:
        raise click.UsageError("--compact applies to --batch only")
    if no_advice:
        raise click.UsageError("--no-advice applies to --batch only (a single recommendation always has its advice)")
    pack, state, document, conversion = read_input(state_file, fhir=fhir, now=now, trust=trust,
                                                   load=lambda: load_pack(rules_dir, profile=profile))
    result = evaluate(pack, state, now=now, include_draft=include_draft, document=document)
    if no_audit:
        show(result, as_json, conversion, show_all)
        return
    # With --fhir the patient state the bundle was converted to is recorded: it is what was evaluated.
    if require_audit:
        try:
            record(pack, state, result, audit_db=audit_db, input_mode=audit_input, user=user)
        except AuditError as exc:
            report_error(exc, as_json)
            say("error: the recommendation is withheld: --require-audit, and it could not be recorded", fg="red", bold=True)
            sys.exit(exit_codes.INVALID)
        show(result, as_json, conversion, show_all)
        return
    # Recorded first, then shown: nothing is shown that is not recorded, unless it says so. Success is silent.
    try:
        record(pack, state, result, audit_db=audit_db, input_mode=audit_input, user=user)
    except AuditError as exc:
        show(result, as_json, conversion, show_all)
        say(f"WARNING: this recommendation was NOT recorded in the audit log: {exc}", fg="red", bold=True)
        sys.exit(exit_codes.NOT_RECORDED)
    show(result, as_json, conversion, show_all)
