"""``pressor audit list|show|feedback|verify|replay|export``: the audit log of recommendations and card feedback.

The audit library (and sqlite3) is imported inside each command, so that commands
which never touch the log do not pay for it at start-up.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

import click

from . import exit_codes
from .common import audit_db_option, checked_user, emit_json, handles_errors, json_option, printable, say  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from pressor.engine.audit import AuditLog, AuditRecord

@contextmanager
def progress_reporter(label: str, as_json: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` that redraws one line on stderr, or None: only on a terminal
    (stdout and stderr both TTYs) and never with --json."""
    if as_json or not (sys.stdout.isatty() and sys.stderr.isatty()):
        yield None
        return
    shown = False

    def progress(done: int, total: int) -> None:
        nonlocal shown
        shown = True
        pct = f" ({100 * done // total}%)" if total else ""
        sys.stderr.write(f"\r{label}: {done:,}/{total:,}{pct}")
        sys.stderr.flush()

    try:
        yield progress
    finally:
        if shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def open_log(audit_db: str | None, *, create: bool = False) -> "AuditLog":
    """The audit log named by ``--audit-db``, ``$PRESSOR_AUDIT_DB`` or the default; read-only unless ``create``."""
    from pressor.engine.audit import AuditLog, resolve_path

    log = AuditLog.open(resolve_path(audit_db), create=create)
    for note in log.notes:
        say(f"warning: {printable(log.where)}: {printable(note)}", fg="yellow")
    return log


@click.group(epilog=exit_codes.help_text())
def audit() -> None:
    """The audit log: every recommendation, append-only and hash-chained.

    Each record keeps the input (or its SHA-256), the rule pack and engine versions,
    the full result, who asked and when. Feedback on CDS Hooks cards (accepted or
    overridden) has its own chain in the same file: see `feedback`. `verify` proves both
    chains are unaltered and prints the head hash to publish elsewhere; `replay`
    evaluates a record again.

    \b
    Example:
      pressor audit list --since 2026-11-01
      pressor audit feedback --json
      pressor audit verify --json
    """


def summary(record: "AuditRecord") -> dict[str, Any]:
    """One line of ``audit list --json``."""
    from pressor.engine.audit.records import fired_rules

    result = record.result  # parsed once: the costliest step of a listing
    return {"seq": record.seq, "id": record.id, "recorded_at": record.recorded_at, "user": record.user,
            "evaluated_at": result.get("evaluated_at"), "input_mode": record.input_mode,
            "pack": {"name": record.pack_name, "version": record.pack_version, "sha256": record.pack_sha256},
            "recommendations": fired_rules(result), "record_hash": record.record_hash,
            **({"patient": record.patient} if record.patient else {}),
            **({"hook_instance": record.hook_instance} if record.hook_instance else {})}


def patient_forms(patient: str | None) -> tuple[str, ...]:
    """``--patient``: the stored forms that name this patient (with the site's key in ``$PRESSOR_AUDIT_PATIENT_KEY``,
    its keyed hash too)."""
    import os

    from pressor.engine.audit.records import PATIENT_KEY_ENV, patient_forms as forms

    return forms(patient, os.environ.get(PATIENT_KEY_ENV, "").encode() or None)


@audit.command("list", epilog=exit_codes.help_text())
@click.option("--since", metavar="ISO-8601", default=None, help="Only records made at or after this time (UTC if no offset).")
@click.option("--until", metavar="ISO-8601", default=None, help="Only records made at or before this time (UTC if no offset).")
@click.option("--rule", "rule_id", metavar="ID", default=None, help="Only records in which this rule fired.")
@click.option("--user", metavar="TEXT", default=None, help="Only records whose user contains this text (any case).")
@click.option("--pack-version", metavar="VERSION", default=None, help="Only records made with this pack version.")
@click.option("--patient", metavar="ID", default=None,
              help="Only records about this patient (Patient/ID or ID; with $PRESSOR_AUDIT_PATIENT_KEY also its keyed hash).")
@audit_db_option
@json_option
@handles_errors
def list_records(since: str | None, until: str | None, rule_id: str | None, user: str | None, pack_version: str | None,
                 patient: str | None, audit_db: str | None, as_json: bool) -> None:
    """One line per record: sequence, id, time, user, pack version, rules that fired.

    CDS Hooks records name the clinician (``context.userId``, then "via" the calling
    EHR) as user, and the patient, so --user and --patient together list what was shown
    to one clinician about one patient.

    \b
    Example:
      pressor audit list --rule escalation.add-vasopressin --since 2026-11-01 --until 2026-11-30T23:59
      pressor audit list --user Practitioner/dr-ito --patient old-76
    """
    from .recommend import parse_now

    count = 0
    with open_log(audit_db) as log:
        # Streamed: one record in memory at a time, whatever the size of the log; the filters run in the database,
        # and a format-6 record is listed from its columns (its texts are not read).
        for r in log.summaries(since=parse_now(since) if since else None, until=parse_now(until) if until else None,
                               rule=rule_id, user=user, version=pack_version, patient=patient_forms(patient)):
            if as_json:  # one record a line (the C encoder: indenting would take the slow pure-Python one)
                sys.stdout.write(("[\n" if count == 0 else ",\n") + json.dumps(r, ensure_ascii=False))
            else:
                fired = ", ".join(f.split("@")[0] for f in r["recommendations"]) or "-"
                fired = fired if len(fired) <= 60 else fired[:57] + "..."
                say(f"#{r['seq']:<6} {printable(r['id'][:8])}  {printable(r['recorded_at'][:19])}Z  {printable(r['user']):<12} "
                    f"v{printable(r['pack']['version']):<7} {len(r['recommendations']):>2} rec: {printable(fired)}")
            count += 1
    if as_json:
        sys.stdout.write("\n]\n" if count else "[]\n")
        return
    say(f"{count} record(s)", dim=True)


@audit.command("show", epilog=exit_codes.help_text())
@click.argument("record_id", metavar="ID")
@audit_db_option
@json_option
@handles_errors
def show_record(record_id: str, audit_db: str | None, as_json: bool) -> None:
    """One record in full: input, result, pack, user, hashes (ID or a unique prefix of it).

    \b
    Example:
      pressor audit show 3f2a9c1e --json
    """
    from pressor.engine.report import result_text

    with open_log(audit_db) as log:
        record = log.record(record_id)
        database_id = log.database_id
        chain = vouching(log, record.seq, as_json)
    if as_json:
        emit_json({"database_id": database_id, **record.to_dict(), "chain": chain_summary(chain)})
        warn_broken(chain, record.seq)
        return
    p = printable
    say(f"record #{record.seq} {p(record.id)}", bold=True)
    say(f"  recorded {p(record.recorded_at)} for {p(record.user)}; engine {p(record.engine_version)}")
    if record.hook_instance is not None:
        say(f"  CDS Hooks call {p(record.hook_instance)}")
    say(f"  pack {p(record.pack_name)} {p(record.pack_version)} sha256 {p(record.pack_sha256)}")
    kept = "kept in full" if record.input_mode == "full" else "NOT kept (hash only)"
    say(f"  input sha256 {p(record.input_sha256)} ({kept})")
    say(f"  prev_hash   {p(record.prev_hash)}")
    say(f"  record_hash {p(record.record_hash)}")
    say()
    for line, style in result_text(record.result):
        say(p(line), **style)
    warn_broken(chain, record.seq)


def vouching(log: "AuditLog", seq: int, as_json: bool) -> Any:
    """The chain walked up to record ``seq``: what says whether the record can be trusted."""
    with progress_reporter("checking the chain up to this record", as_json) as progress:
        return log.verify(upto=seq, progress=progress)


def chain_summary(chain: Any) -> dict[str, Any]:
    """``chain`` in --json output: intact up to the record, or the first bad record."""
    bad = chain.first_bad
    return {"ok": bad is None, "checked_up_to": chain.head_seq, "first_bad": None if bad is None else bad.to_dict(),
            "problems": [p.to_dict() for p in chain.problems]}


def warn_broken(chain: Any, seq: int) -> None:
    """A broken chain at or before the record: say so, and exit 1 (the record cannot be vouched for). Problems
    of the database as a whole (removed triggers) are `verify`'s to report: they do not make this record wrong."""
    bad = chain.first_bad
    if bad is None:
        return
    where = f"at #{bad.seq} ({bad.id}): {'; '.join(bad.reasons)}"
    say(f"WARNING: the audit chain is broken at or before this record (#{seq}); it cannot be trusted as shown. "
        f"First problem {printable(where)}", fg="red", bold=True)
    say("Run `pressor audit verify`, keep the log unchanged, and see docs/audit.md ('When the chain is broken').", fg="red")
    sys.exit(exit_codes.INVALID)


def issuing_records(log: "AuditLog") -> dict[str, list[dict[str, Any]]]:
    """Card uuid -> the records of CDS Hooks calls that issued that card (recomputed from each
    record's hook_instance, the fired rule and version, and the pack's SHA-256)."""
    from pressor.engine.audit.card_ids import card_uuid

    issued: dict[str, list[dict[str, Any]]] = {}
    for record in log.summaries(hooked=True):
        for fired in record["recommendations"]:
            rule, _, version = fired.partition("@")
            uid = card_uuid(record.get("hook_instance") or "", rule, version, record["pack"]["sha256"])
            issued.setdefault(uid, []).append({"id": record["id"], "seq": record["seq"], "rule": fired})
    return issued


@audit.command("feedback", epilog=exit_codes.help_text())
@click.option("--since", metavar="ISO-8601", default=None, help="Only entries recorded at or after this time (UTC if no offset).")
@click.option("--card", "card", metavar="UUID", default=None, help="Only feedback on this card.")
@audit_db_option
@json_option
@handles_errors
def feedback(since: str | None, card: str | None, audit_db: str | None, as_json: bool) -> None:
    """Feedback on CDS Hooks cards: outcome, override reason, who, and the record that issued the card.

    `pressor serve` records every item of POST /cds-services/{id}/feedback here, in a
    hash chain of its own (checked by `verify`; exported by `export --kind feedback`).
    A card is linked to the audit records of the call that issued it by its uuid,
    derived from hookInstance + rule + version + pack. --json gives every entry in full.

    \b
    Example:
      pressor audit feedback --since 2026-11-01
      pressor audit feedback --card 0b1c2d3e-... --json
    """
    from .recommend import parse_now

    moment = parse_now(since) if since else None
    with open_log(audit_db) as log:
        entries = list(log.feedback(since=moment, card=card))
        issued = issuing_records(log) if entries else {}
    rows = [{**e.to_dict(), "records": issued.get(e.card_uuid, [])} for e in entries]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        reason = (row["override_reason"] or {}).get("reason", {}).get("code", "")
        linked = ", ".join(f"#{r['seq']} {r['rule'].split('@')[0]}" for r in row["records"]) or "no record found"
        say(f"#{row['seq']:<6} {printable(row['id'][:8])}  {printable(row['recorded_at'][:19])}Z  {printable(row['user']):<12} "
            f"{printable(row['outcome']):<10} {printable(reason):<18} card {printable(row['card_uuid'][:8])} -> {printable(linked)}")
    say(f"{len(rows)} feedback entr{'y' if len(rows) == 1 else 'ies'}", dim=True)


def parse_anchor(value: str | None) -> tuple[int, str] | None:
    """``--anchor SEQ:HASH`` as a pair."""
    if value is None:
        return None
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise click.BadParameter(f"'{value}' is not SEQ:HASH (e.g. 1200:3f2a...; 64 hex digits)", param_hint="--anchor")
    return int(seq), digest.lower()


@audit.command("verify", epilog=exit_codes.help_text())
@click.option("--anchor", metavar="SEQ:HASH", default=None,
              help="A head published earlier (from verify): that record must still have that hash.")
@click.option("--deep", is_flag=True, default=False,
              help="Also decompress every format-6 record's texts and check them against their SHA-256 (slower; "
                   "without it they are checked by the SHA-256 of their stored bytes, which the chain covers).")
@audit_db_option
@json_option
@handles_errors
def verify(anchor: str | None, deep: bool, audit_db: str | None, as_json: bool) -> None:
    """Recompute every record's and feedback entry's hash and link; exit 1 naming the first bad one.

    Prints the head (last sequence number and hash): publish it somewhere the log's
    writers cannot change, and pass it back with --anchor to detect a rebuilt chain.
    The feedback chain is checked the same way (its head is printed too).

    \b
    Example:
      pressor audit verify
      pressor audit verify --anchor 1200:3f2a...e9 --json
    """
    pinned = parse_anchor(anchor)
    with open_log(audit_db) as log, progress_reporter("verify", as_json) as progress:
        outcome = log.verify(anchor=pinned, progress=progress, deep=deep)
        path = str(log.path)
    if as_json:
        emit_json({"path": path, **outcome.to_dict()})
    head = f"head #{outcome.head_seq} {outcome.head_hash}"
    if outcome.ok:
        say(f"ok: {outcome.records} record(s) and {outcome.feedback} feedback entr{'y' if outcome.feedback == 1 else 'ies'}, "
            f"chains intact; {head}", fg="green")
        say(f"database {outcome.database_id}; anchor with --anchor {outcome.head_seq}:{outcome.head_hash}", dim=True)
        return
    bad = outcome.first_bad
    if bad is not None:
        say(f"BROKEN: first bad {bad.kind} #{bad.seq} ({printable(bad.id)}): {'; '.join(bad.reasons)}", fg="red", bold=True)
    for problem in outcome.problems:
        if problem is not bad:
            say(f"  also: {printable(problem)}", fg="red")
    say(f"{len(outcome.problems)} problem(s) in {outcome.records} record(s); {head}", fg="red")
    sys.exit(exit_codes.INVALID)


@audit.command("replay", epilog=exit_codes.help_text())
@click.argument("record_id", metavar="ID")
@click.option("--input", "input_file", metavar="FILE", default=None,
              help="The original input, for a record kept with --audit-input hash (its SHA-256 must match).")
@click.option("--profile", "profile_file", metavar="FILE", default=None,
              help="The site profile, for a record made under one before the log stored profiles (its SHA-256 must match).")
@audit_db_option
@json_option
@handles_errors
def replay(record_id: str, input_file: str | None, profile_file: str | None, audit_db: str | None, as_json: bool) -> None:
    """Evaluate a record again with its stored pack, site profile, input and time; exit 1 if the result differs.

    \b
    Example:
      pressor audit replay 3f2a9c1e
    """
    from pressor.engine.evaluation.load import load_document

    state = load_document(input_file).data if input_file else None
    profile_text = load_document(profile_file).text if profile_file else None
    with open_log(audit_db) as log:
        outcome = log.replay(record_id, state=state, profile_text=profile_text)
        chain = vouching(log, outcome.record.seq, as_json)
    if as_json:
        emit_json({**outcome.to_dict(), "chain": chain_summary(chain)})
    record = outcome.record
    if outcome.identical:
        say(f"identical: record #{record.seq} ({printable(record.id)}) replays to the same result with "
            f"{printable(record.pack_name)} {printable(record.pack_version)}", fg="green")
        warn_broken(chain, record.seq)
        return
    say(f"DIFFERENT: record #{record.seq} ({printable(record.id)}) replays to a different result "
        f"({len(outcome.differences)} difference(s)):", fg="red", bold=True)
    for diff in outcome.differences:
        d = diff.to_dict()
        say(f"  {printable(d['pointer'])}: stored {printable(_shown(d, 'stored'))}, replayed {printable(_shown(d, 'replayed'))}")
    warn_broken(chain, record.seq)
    sys.exit(exit_codes.INVALID)


def _shown(diff: dict[str, Any], side: str, width: int = 70) -> str:
    """One side of a difference as short JSON text."""
    text = json.dumps(diff[side], ensure_ascii=False) if side in diff else "(absent)"
    return text if len(text) <= width else text[: width - 3] + "..."


@audit.command("export", epilog=exit_codes.help_text())
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "fhir-auditevent"]), default="jsonl", show_default=True,
              help="Output format (fhir-auditevent: one FHIR R4 AuditEvent per record, NDJSON, for an audit repository).")
@click.option("--kind", type=click.Choice(["records", "feedback", "packs"]), default="records", show_default=True,
              help="Which chain: the recommendation records, or the feedback entries; or the stored rule packs (whose "
                   "files are the dictionaries of the stored texts).")
@click.option("--texts", type=click.Choice(["clear", "stored"]), default="clear", show_default=True,
              help="Records' input and result: as text, or (stored; JSON lines) as their stored zstd frames in base64, "
                   "not decompressed: much faster, and checked against stored_sha256 (records from format 6 on).")
@click.option("--output", metavar="FILE", default=None,
              help="Write here (through a temporary file renamed into place); default stdout.")
@audit_db_option
@json_option
@handles_errors
def export(fmt: str, kind: str, texts: str, output: str | None, audit_db: str | None, as_json: bool) -> None:
    """Every record (or, with --kind feedback, every feedback entry), with the exact stored
    texts and hashes, as JSON lines or CSV.

    Each row carries database_id, so record_hash can be recomputed from the export
    alone (see docs/audit.md). With --json (needs --output), a summary goes to stdout.

    \b
    Example:
      pressor audit export --format csv --output audit.csv
      pressor audit export --kind feedback --output feedback.jsonl
      pressor audit export --format fhir-auditevent --output auditevents.ndjson
    """
    if fmt == "fhir-auditevent" and kind != "records":
        raise click.UsageError("--format fhir-auditevent exports records (--kind records)")
    if texts == "stored" and (fmt != "jsonl" or kind != "records"):
        raise click.UsageError("--texts stored exports records as JSON lines (--format jsonl --kind records)")
    if kind == "packs" and fmt != "jsonl":
        raise click.UsageError("--kind packs exports JSON lines (--format jsonl)")
    from pressor.engine.audit import output_target, write_atomically

    if as_json and output is None:
        raise click.UsageError("--json needs --output: without it the export itself is written to stdout")
    if output is not None:
        output_target(output)  # refuse a device, FIFO or directory before reading a single record
    with open_log(audit_db) as log:
        if output is None:
            log.export(fmt, sys.stdout, kind=kind, texts=texts)
            return
        total = log.head()[0] if kind == "records" else 0
        with progress_reporter("export", as_json) as progress:
            step = (lambda done: progress(done, total)) if progress else None
            count = write_atomically(output, lambda fh: log.export(fmt, fh, kind=kind, progress=step, texts=texts))
    if as_json:
        emit_json({"output": output, "format": fmt, "kind": kind, "records": count})
    noun = {"records": "record(s)", "feedback": "feedback entries", "packs": "stored pack(s)"}[kind]
    say(f"exported {count} {noun} to {printable(output)}", fg="green")


@audit.command("init", epilog=exit_codes.help_text())
@audit_db_option
@click.option("--replay-cache/--no-replay-cache", default=True, show_default=True,
              help="PostgreSQL: also create the token replay cache's table in the same database (pressor serve's replay_cache).")
@click.option("--grant-to", "grant_to", metavar="ROLE", default=None,
              help="PostgreSQL: grant ROLE (the service's) SELECT and INSERT on the log's tables, and the replay cache's table.")
@json_option
@handles_errors
def init(audit_db: str | None, replay_cache: bool, grant_to: str | None, as_json: bool) -> None:
    """Create the audit log's tables and triggers (or migrate an older log), and the token
    replay cache's table, then stop.

    Run it as the role that owns the tables (the migration role of docs/deploy.md), before
    the service starts, and again after an upgrade: the service's own role may then hold
    SELECT and INSERT only, and can never drop the append-only triggers.

    \b
    Example:
      pressor audit init --audit-db postgresql://pressor_owner@db.hospital.example/pressor --grant-to pressor
    """
    from pressor.engine.audit import is_url, resolve_path
    from pressor.engine.audit.replay_cache import open_replay_cache
    from pressor.engine.audit.store_postgres import redacted

    target = resolve_path(audit_db)
    with open_log(audit_db, create=True) as log:
        fmt, head = log.format, log.head()[0]
    replay_cache = replay_cache and is_url(str(target))
    if replay_cache:
        from pressor.engine.audit.store_postgres import create_shown_cards

        open_replay_cache(str(target)).close()
        create_shown_cards(str(target))  # the CDS service's repeat window keeps its cards there
    granted: list[str] = []
    if grant_to is not None:
        if not is_url(str(target)):
            raise click.UsageError("--grant-to is for a postgresql:// audit log")
        from pressor.engine.audit.store_postgres import grant_service_role

        granted = grant_service_role(str(target), grant_to)
    summary = {"audit_db": redacted(str(target)), "format": fmt, "records": head, "replay_cache": replay_cache,
               "granted": granted}
    if as_json:
        emit_json(summary)
    say(f"audit log ready at {printable(summary['audit_db'])} (format {fmt}, {head} record(s))"
        + ("; token replay cache table ready" if replay_cache else ""), fg="green")
