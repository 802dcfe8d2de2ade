"""``pressor explain``: why each rule fired, did not fire, could not be decided, or was not evaluated."""
from __future__ import annotations

from typing import Any

import click

from pressor.engine.report import decides_text

from pressor.engine.evaluation.explain import Explanation, LeafTrace, RuleExplanation
from pressor.engine.evaluation.explain import explain as explain_state
from pressor.engine.evaluation.pack import load_pack

from . import exit_codes
from .common import emit_json, handles_errors, json_option, profile_option, rules_option, say
from .recommend import parse_now, read_input, with_facts

_HEADINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "fired": ("FIRED", {"fg": "green", "bold": True}),
    "superseded": ("SUPERSEDED (condition held; a refining rule is shown instead)", {"bold": True}),
    "not_fired": ("NOT FIRED", {"bold": True}),
    "not_evaluable": ("NOT EVALUABLE", {"fg": "yellow", "bold": True}),
    "inactive": ("INACTIVE", {"dim": True, "bold": True}),
}
_TRUTH = {True: "[true]   ", False: "[false]  ", None: "[unknown]"}


def show_value(value: Any) -> str:
    """A fact value as the rule files write it: ``true``, ``65``, ``[septic, other]``; absent is ``unknown``."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    return str(value)


def leaf_lines(leaf: LeafTrace) -> list[str]:
    """One comparison: truth, test, actual value (and threshold when it is another fact), then its inputs."""
    test = leaf.condition
    if leaf.threshold_fact is not None:
        test += f" (= {show_value(leaf.threshold)})"
    if leaf.negated:
        test = f"not ({test})"
    text = f"{_TRUTH[leaf.truth]} {test}: " + (f"actual {show_value(leaf.actual)}" if leaf.known else "not recorded")
    if leaf.for_any_value_of:
        text += f" (decided for any value of {', '.join(leaf.for_any_value_of)}: not recorded)"
    if leaf.missing and leaf.missing != (leaf.fact,):
        text += f" (missing {', '.join(leaf.missing)})"
    return [text] + [f"            <- because {b}" for b in leaf.because]


def rule_lines(rule: RuleExplanation) -> list[str]:
    """One block: the rule, then its comparisons (or why it was not evaluated)."""
    status = "" if rule.status == "approved" else f" [{rule.status}]"
    lines = [f"{rule.rule_id} v{rule.rule_version}{status}: {rule.title}"]
    if rule.outcome in ("inactive", "superseded"):
        lines.append(f"  {rule.reason}")
    if rule.outcome == "not_evaluable":
        lines.append(f"  missing: {', '.join(rule.missing)}")
    for leaf in rule.conditions:
        lines.extend("  " + line for line in leaf_lines(leaf))
    wm = rule.when_missing or {}
    if wm.get("outcome") == "conditional":
        lines.append(f"  would fire if: {wm['if']}")
    elif wm.get("outcome") == "not_applicable":
        lines.append(f"  not applicable: {wm['because']}")
    return lines


def explanation_text(explanation: Explanation) -> list[tuple[str, dict[str, Any]]]:
    """The whole explanation as (line, click style) pairs, grouped fired / not fired / not evaluable / inactive."""
    pack = explanation.pack
    out: list[tuple[str, dict[str, Any]]] = [
        (f"pressor explain: {pack['name']} {pack['version']} (sha256 {pack['sha256'][:12]}), "
         f"evaluated {explanation.evaluated_at}", {"bold": True}),
    ]
    if pack.get("profile"):
        from pressor.engine.report import profile_lines

        out += [(line, {"bold": True}) for line in profile_lines(pack["profile"])]
    for outcome, rules in explanation.grouped().items():
        if not rules:
            continue
        heading, style = _HEADINGS[outcome]
        out.append(("", {}))
        out.append((f"{heading} ({len(rules)})", style))
        for rule in rules:
            out.extend((f"  {line}", {}) for line in rule_lines(rule))
    if explanation.ask_next:
        out.append(("", {}))
        out.append(("ASK FIRST (what each answer decides)", {"bold": True}))
        for ask in explanation.ask_next:
            out.append((f"  {ask['question']} [{ask['fact']}]", {}))
            out.append((f"    decides: {decides_text(ask, limit=len(ask['decides']))}", {"dim": True}))
    return out


@click.command(epilog=exit_codes.help_text())
@click.argument("state_file", metavar="FILE|-", type=str)
@click.option("--rule", "rule_id", metavar="ID", default=None, help="Explain only this rule.")
@json_option
@click.option("--include-draft", is_flag=True, help="Also evaluate draft and in-review rules (retired ones never).")
@rules_option
@profile_option
@click.option("--now", "now_text", metavar="ISO-8601", default=None, help="Evaluation time (default: now, UTC).")
@click.option("--fhir", is_flag=True, help="FILE is a FHIR R4 Bundle (JSON): converted to a patient state first.")
@click.option("--trust-complete", "trust", metavar="LIST", multiple=True,
              help="With --fhir: the bundle's list is complete for this (medications, conditions, or a fact path).")
@handles_errors
def explain(state_file: str, rule_id: str | None, as_json: bool, include_draft: bool, rules_dir: str | None,
            profile: str | None, now_text: str | None, fhir: bool, trust: tuple[str, ...]) -> None:
    """Why each rule fired, did not fire, could not be decided, or was not evaluated.

    Fired: every comparison with the value seen and its threshold, and for derived
    facts the patient facts behind them. Not fired: the comparison that failed (for
    all(), the first false one; for any(), each one). Not evaluable: the unknown
    facts. Inactive: draft and in-review rules (unless --include-draft) and retired
    rules. The outcomes are the engine's own: if the reference logic ever disagrees,
    nothing is explained (exit 4). FILE may be a patient state, a timeline input
    (top-level `timeline:`), or with --fhir a FHIR R4 Bundle.

    \b
    Example:
      pressor explain examples/septic-shock-adult.yaml
      pressor explain examples/septic-shock-adult.yaml --rule norepinephrine.start --json
    """
    now = parse_now(now_text)
    pack, state, document, conversion = read_input(state_file, fhir=fhir, now=now, trust=trust,
                                                   load=lambda: load_pack(rules_dir, profile=profile))
    explanation = explain_state(pack, state, now=now, include_draft=include_draft, rule_id=rule_id, document=document)
    if as_json:
        emit_json(with_facts(explanation.to_dict(), conversion))
    else:
        for note in conversion.notes if conversion is not None else ():
            say(f"{'fhir' if conversion.mapping is not None else 'timeline'}: {note}", dim=True)
        for line, style in explanation_text(explanation):
            say(line, **style)
