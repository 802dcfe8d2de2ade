"""``pressor new-rule``: scaffold a draft rule with its provenance, examples and a scenario."""
from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import click

from pressor.engine.authoring.scaffold import scaffold
from pressor.engine.errors import RuleFileError
from pressor.engine.evaluation.pack import default_rules_dir, load_pack

from . import exit_codes
from .common import emit_json, handles_errors, json_option, say


@click.command("new-rule", epilog=exit_codes.help_text())
@click.argument("rule_id", metavar="ID")
@click.option("--rules", "rules_dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Rule pack directory to add the rule to (default: the bundled pack's, in a checkout).")
@click.option("--scenarios", "scenarios_dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Scenario directory for the stub (default: tests/scenarios, if present); FAMILY.yaml there gets it.")
@click.option("--title", default=None, help="The rule's title (default: a TODO).")
@click.option("--date", "on", metavar="YYYY-MM-DD", default=None, help="Date of the draft entry (default: today, UTC).")
@json_option
@handles_errors
def new_rule(rule_id: str, rules_dir: str | None, scenarios_dir: str | None, title: str | None, on: str | None,
             as_json: bool) -> None:
    """Add a draft rule ID (family.name) with its provenance, examples and a scenario stub.

    The rule goes at the end of FAMILY.yaml in the pack (created for a new family): version 1.0.0,
    status draft, the pack's author, the reviewers most rules name, the source document's SHA-256,
    the section and most-cited reference of its family, a placeholder condition that loads, a firing
    and a non-firing example. Replace every TODO, then run validate, lint and test.

    \b
    Example:
      pressor new-rule escalation.add-angiotensin-ii --rules rules/ --title "Add angiotensin II"
      pressor validate rules/ && pressor lint rules/ && pressor test --coverage
    """
    directory = Path(rules_dir) if rules_dir else default_rules_dir()
    today = date.fromisoformat(on) if on else datetime.now(timezone.utc).date()
    scenarios = Path(scenarios_dir) if scenarios_dir else (Path("tests/scenarios") if Path("tests/scenarios").is_dir() else None)
    pack = load_pack(directory, cache=False)
    before = {p: p.read_text(encoding="utf-8") if p.exists() else None
              for p in (directory / f"{rule_id.split('.', 1)[0]}.yaml",
                        *([scenarios / f"{rule_id.split('.', 1)[0]}.yaml"] if scenarios else []))}
    made = scaffold(pack, rule_id, today=today, scenarios=scenarios, title=title)
    try:
        load_pack(directory, check_examples=True, cache=False)
    except RuleFileError:
        for path, text in before.items():  # leave the pack as it was: the scaffold must never break it
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(text, encoding="utf-8")
        raise
    if as_json:
        emit_json(made.to_dict())
    say(f"added {rule_id} (draft) at {made.rule_file}:{made.line}"
        + (f"; a scenario stub in {made.scenario_file}" if made.scenario_file else ""), fg="green")
    say("next: replace every TODO, then: pressor validate, pressor lint, pressor test --coverage")
