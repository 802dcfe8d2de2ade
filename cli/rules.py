"""``pressor rules list|show|history|manifest``: what the pack holds, and where each rule comes from."""
from __future__ import annotations

from typing import Any

import click

from pressor.engine.model import Rule, render_condition
from pressor.engine.evaluation.pack import find_rule, load_pack

from . import exit_codes
from .common import emit_json, handles_errors, json_option, rules_option, say
from pressor.engine.report import citations as cite_text
from pressor.engine.report import quantity, rule_detail


@click.group(epilog=exit_codes.help_text())
def rules() -> None:
    """List the rules of a pack, show one with its provenance, its status history, or the pack's manifest.

    \b
    Example:
      pressor rules list
      pressor rules show escalation.add-vasopressin
      pressor rules history titration.every-4h-0.5mg-h
      pressor rules manifest --json
    """


def rule_summary(rule: Rule) -> dict[str, Any]:
    """One line of ``rules list --json``."""
    return {"id": rule.id, "version": rule.version, "status": rule.status, "kind": rule.kind,
            "severity": rule.severity, "title": rule.title, "file": rule.file, "line": rule.line}



@rules.command("list", epilog=exit_codes.help_text())
@json_option
@rules_option
@click.option("--status", type=click.Choice(["draft", "in-review", "approved", "retired"]), help="Only rules with this status.")
@handles_errors
def list_rules(as_json: bool, rules_dir: str | None, status: str | None) -> None:
    """One line per rule: id, version, status, severity, title.

    \b
    Example:
      pressor rules list --status draft
    """
    pack = load_pack(rules_dir)
    chosen = [r for r in pack.rules if status is None or r.status == status]
    if as_json:
        emit_json([rule_summary(r) for r in chosen])
        return
    width = max((len(r.id) for r in chosen), default=10)
    for r in chosen:
        say(f"{r.id:<{width}}  {r.version:<7} {r.status:<9} {r.severity:<8} {r.title}")
    say(f"{len(chosen)} rule(s)", dim=True)


@rules.command("show", epilog=exit_codes.help_text())
@click.argument("rule_id")
@json_option
@rules_option
@handles_errors
def show_rule(rule_id: str, as_json: bool, rules_dir: str | None) -> None:
    """A rule in full: provenance, condition, recommendation, dose, citations with evidence, notes.

    \b
    Example:
      pressor rules show norepinephrine.dose-adult --json
    """
    pack = load_pack(rules_dir)
    rule = find_rule(pack, rule_id)
    if as_json:
        emit_json(rule_detail(pack, rule))
        return
    say(f"{rule.id} v{rule.version} [{rule.status}]: {rule.title}", bold=True)
    say(f"  defined at {rule.file}:{rule.line}; source section: {rule.section}"
        + (f", paragraph {rule.paragraph}" if rule.paragraph else ""))
    say(f"  source document sha256: {rule.source_sha256}")
    say(f"  author: {rule.author}; reviewers: {', '.join(rule.reviewers) or '(none listed)'}")
    say(f"  effective: {rule.effective}")
    say("  status history:")
    for line in history_lines(rule.status_history):
        say(f"    {line}")
    say(f"  {rule.kind} / {rule.severity}: {rule.summary}")
    say(f"  detail: {rule.detail}")
    say("  when:")
    for line in render_condition(rule.when, "    "):
        say(line)
    if rule.dose is not None:
        say(f"  dose: {rule.dose.drug} {quantity(rule.dose.range.to_dict())}")
    refs = [pack.references[c.ref].to_dict() for c in rule.citations]
    say(f"  citations {cite_text(refs)}:")
    for c in rule.citations:
        ref = pack.references[c.ref]
        status = "" if ref.resolved else " (UNRESOLVED: not in the source's reference list)"
        say(f"    [{ref.number}] {ref.title}{', ' + str(ref.year) if ref.year else ''}{status}"
            + (f"; {c.evidence}" if c.evidence else ""))
    for note in rule.notes:
        say(f"  note: {note}")


def history_lines(history: Any) -> list[str]:
    """``2026-11-24  approved   by X: comment``, one line per status change."""
    return [f"{h.date}  {h.status:<9}  by {h.by}" + (f": {h.comment}" if h.comment else "") for h in history]


@rules.command("history", epilog=exit_codes.help_text())
@click.argument("rule_id")
@json_option
@rules_option
@handles_errors
def rule_history(rule_id: str, as_json: bool, rules_dir: str | None) -> None:
    """A rule's status history, oldest first: date, status, by whom, and why.

    \b
    Example:
      pressor rules history titration.every-4h-0.5mg-h
      pressor rules history target.map-65 --json
    """
    pack = load_pack(rules_dir)
    rule = find_rule(pack, rule_id)
    if as_json:
        emit_json({"rule_id": rule.id, **rule.provenance()})
        return
    say(f"{rule.id} v{rule.version} [{rule.status}], effective {rule.effective}: {rule.title}", bold=True)
    for line in history_lines(rule.status_history):
        say(f"  {line}")


@rules.command("manifest", epilog=exit_codes.help_text())
@json_option
@rules_option
@handles_errors
def manifest(as_json: bool, rules_dir: str | None) -> None:
    """The pack's identity: name, version, and the SHA-256 of every file and of the whole pack.

    The pack's sha256 is the SHA-256 of the lines "FILE\\0SHA256\\n" of its files,
    sorted by name; every result records it.

    \b
    Example:
      pressor rules manifest
      pressor rules manifest --json
    """
    pack = load_pack(rules_dir)
    data = pack.manifest()
    if as_json:
        emit_json(data)
        return
    say(f"{data['name']} {data['version']}: {data['title']}", bold=True)
    for key in ("author", "effective"):
        if key in data:
            say(f"  {key}: {data[key]}")
    say(f"  directory: {data['directory']}")
    say(f"  {data['rules']} rules in {len(data['files'])} files")
    for f in data["files"]:
        say(f"  {f['sha256']}  {f['name']}")
    say(f"  {data['sha256']}  (pack)")
