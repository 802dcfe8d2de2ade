"""``pressor rules list|show``: what the pack holds."""
from __future__ import annotations

from typing import Any

import click

from pressor.engine.errors import InputError
from pressor.engine.model import Rule, RulePack, render_condition
from pressor.engine.pack import load_pack

from . import exit_codes
from .common import emit_json, handles_errors, json_option, rules_option, say
from .render import citations as cite_text


@click.group(epilog=exit_codes.help_text())
def rules() -> None:
    """List the rules of a pack, or show one with its provenance.

    \b
    Example:
      pressor rules list
      pressor rules show escalation.add-vasopressin
    """


def rule_summary(rule: Rule) -> dict[str, Any]:
    """One line of ``rules list --json``."""
    return {"id": rule.id, "version": rule.version, "status": rule.status, "kind": rule.kind,
            "severity": rule.severity, "title": rule.title, "file": rule.file, "line": rule.line}


def rule_detail(pack: RulePack, rule: Rule) -> dict[str, Any]:
    """Everything about one rule, with its citations resolved."""
    data = dict(rule.raw)
    data["citations"] = [
        {**pack.references[c.ref].to_dict(), **({"evidence": c.evidence} if c.evidence else {})} for c in rule.citations
    ]
    data["location"] = {"file": rule.file, "line": rule.line}
    data["pack"] = {"name": pack.name, "version": pack.version, "sha256": pack.sha256}
    return data


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
    """A rule in full: condition, recommendation, dose, citations, source, notes.

    \b
    Example:
      pressor rules show norepinephrine.dose-adult --json
    """
    pack = load_pack(rules_dir)
    try:
        rule = pack.rule(rule_id)
    except KeyError:
        import difflib

        close = difflib.get_close_matches(rule_id, [r.id for r in pack.rules], n=1)
        raise InputError.single(f"no rule '{rule_id}' in {pack.name}",
                                suggestion=f"did you mean '{close[0]}'?" if close else "see 'pressor rules list'") from None
    if as_json:
        emit_json(rule_detail(pack, rule))
        return
    say(f"{rule.id} v{rule.version} [{rule.status}]: {rule.title}", bold=True)
    say(f"  defined at {rule.file}:{rule.line}; source section: {rule.section}"
        + (f", paragraph {rule.paragraph}" if rule.paragraph else ""))
    say(f"  {rule.kind} / {rule.severity}: {rule.summary}")
    say(f"  detail: {rule.detail}")
    say("  when:")
    for line in render_condition(rule.when, "    "):
        say(line)
    if rule.dose is not None:
        say(f"  dose: {rule.dose.drug} {rule.dose.range.low:g}-{rule.dose.range.high:g} {rule.dose.range.unit}")
    refs = [pack.references[c.ref].to_dict() for c in rule.citations]
    say(f"  citations {cite_text(refs)}:")
    for c in rule.citations:
        ref = pack.references[c.ref]
        status = "" if ref.resolved else " (UNRESOLVED: not in the source's reference list)"
        say(f"    [{ref.number}] {ref.title}{', ' + str(ref.year) if ref.year else ''}{status}"
            + (f"; {c.evidence}" if c.evidence else ""))
    for note in rule.notes:
        say(f"  note: {note}")
