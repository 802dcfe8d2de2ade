"""``pressor test``: scenario files and the rules' own examples, with coverage."""
from __future__ import annotations

from pathlib import Path

import click

from pressor.engine.evaluation.pack import load_pack
from pressor.engine.authoring.scenarios import OUTCOMES, Coverage, example_scenarios, load_scenarios, run

from . import exit_codes
from .common import emit_json, handles_errors, json_option, profile_option, rules_option, say

#: Scenario files run when no PATHS are given (relative to the working directory).
DEFAULT_SCENARIOS = Path("tests/scenarios")


@click.command("test", epilog=exit_codes.help_text())
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=str))
@json_option
@rules_option
@profile_option
@click.option("--coverage", "with_coverage", is_flag=True,
              help="Report per rule whether it was seen firing, not firing and not evaluable, and per condition leaf "
                   "true, false and unknown.")
@click.option("--min-coverage", type=click.FloatRange(0, 100), metavar="PCT", default=None,
              help="Fail (exit 1) if rule coverage is below PCT percent (implies --coverage).")
@click.option("--no-examples", is_flag=True, help="Run only the scenario files, not the rules' examples.")
@handles_errors
def test(paths: tuple[str, ...], as_json: bool, rules_dir: str | None, profile: str | None, with_coverage: bool, min_coverage: float | None,
         no_examples: bool) -> None:
    """Run scenario files (default: tests/scenarios, if present) and every rule's examples.

    A scenario names a patient state, the rules that must fire, must not fire and must
    be not evaluable, and doses to expect within a tolerance (see
    schemas/scenario.schema.json). A failure shows expected against got, per rule,
    with the facts that decided it. Exits 1 if any scenario fails or coverage is
    below --min-coverage.

    \b
    Example:
      pressor test
      pressor test tests/scenarios --coverage --min-coverage 100
      pressor test my-patients.yaml --rules rules/ --json
    """
    pack = load_pack(rules_dir, profile=profile)
    if not paths and DEFAULT_SCENARIOS.is_dir():
        paths = (str(DEFAULT_SCENARIOS),)
    scenarios = load_scenarios(paths, pack) + ([] if no_examples else example_scenarios(pack))
    outcome = run(pack, scenarios, with_coverage=with_coverage, min_coverage=min_coverage)
    if as_json:
        emit_json(outcome.to_dict())
        raise SystemExit(exit_codes.OK if outcome.ok else exit_codes.INVALID)
    for o in outcome.failed:
        say(f"FAIL {o.scenario.label}", fg="red", bold=True)
        for f in o.failures:
            say(f"    {f.describe()}", fg="red")
    cov = outcome.coverage
    if cov is not None:
        _coverage_text(cov)
    passed = len(outcome.outcomes) - len(outcome.failed)
    examples = sum(1 for o in outcome.outcomes if o.scenario.origin == "example")
    say(f"{passed} passed, {len(outcome.failed)} failed ({len(outcome.outcomes) - examples} scenarios, {examples} examples)",
        fg="green" if not outcome.failed else "red", bold=True)
    if not outcome.coverage_ok and cov is not None:  # coverage_ok holds when no coverage was measured
        say(f"rule coverage {cov.rule_percent():.1f}% is below the minimum of {min_coverage:g}%", fg="red", bold=True)
    if not outcome.ok:
        raise SystemExit(exit_codes.INVALID)


def _coverage_text(cov: Coverage) -> None:
    data = cov.to_dict()
    rules, leaves = data["rules"], data["leaves"]
    say(f"rule coverage: {rules['percent']}% ({rules['seen']}/{rules['reachable']} reachable outcomes: "
        f"{', '.join(OUTCOMES)})", bold=True)
    for rid, gone in rules["missing"].items():
        say(f"    {rid}: never seen {', '.join(gone)}", fg="yellow")
    for rid, entry in rules["per_rule"].items():
        for outcome, why in entry["impossible"].items():
            say(f"    {rid}: {outcome} cannot happen: {why}", dim=True)
    say(f"condition coverage: {leaves['percent']}% ({leaves['seen']}/{leaves['reachable']} leaf outcomes: true, false, unknown)",
        bold=True)
    for item in leaves["missing"]:
        say(f"    {item['owner']} {item['test']}: never seen {', '.join(item['outcomes'])}", dim=True)
