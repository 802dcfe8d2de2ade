"""``pressor diff``: two rule packs side by side, and what the change does to the recommendations."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pressor.engine.evaluation.pack import load_pack
from pressor.engine.authoring.pack_diff import diff_packs

from . import exit_codes
from .common import emit_json, handles_errors, json_option, say

_VERB = {"appears": "appears", "disappears": "disappears", "dose": "changes dose"}


@click.command(epilog=exit_codes.help_text())
@click.argument("old", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.argument("new", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--scenarios", "scenario_paths", multiple=True, type=click.Path(exists=True, path_type=str),
              help="Scenario files or directories whose patients both packs are run on "
                   "(repeatable; default: tests/scenarios if present, else the rules' examples).")
@json_option
@handles_errors
def diff(old: str, new: str, scenario_paths: tuple[str, ...], as_json: bool) -> None:
    """Compare two pack directories: rules added, removed and changed, and behaviour.

    Changed rules are shown field by field; a changed condition or output (when,
    recommend, dose, supersedes) without a higher version is an error (exit 1).
    Both packs are then run on the scenario patients and, for every numeric
    threshold in either pack, on those patients moved to the threshold, just below
    and just above it; the recommendations that appear, disappear or change dose
    are listed with an example patient.

    \b
    Example:
      pressor diff rules/ ../candidate/rules/
      pressor diff old/ new/ --scenarios tests/scenarios --json
    """
    if not scenario_paths and Path("tests/scenarios").is_dir():
        scenario_paths = ("tests/scenarios",)
    result = diff_packs(load_pack(old), load_pack(new), scenario_paths)
    if as_json:
        emit_json(result.to_dict())
        raise SystemExit(exit_codes.OK if result.ok else exit_codes.INVALID)
    a, b = result.old, result.new
    say(f"{a['name']} {a['version']} ({a['directory']}) -> {b['name']} {b['version']} ({b['directory']})", bold=True)
    for rid in result.added:
        say(f"  + rule {rid}", fg="green")
    for rid in result.removed:
        say(f"  - rule {rid}", fg="red")
    for item in result.changed:
        version = f" {item.old_version} -> {item.new_version}" if item.old_version else ""
        say(f"  ~ {item.kind} {item.id}{version}")
        for c in item.changes:
            say(f"      {c.path}: {_show(c.old)} -> {_show(c.new)}", dim=True)
    for f in result.findings:
        say(f"{f.severity} {f.code}: {f.message}", fg="red" if f.severity == "error" else "yellow")
    say(f"behaviour over {result.states_checked} patient states ({result.thresholds} thresholds probed):", bold=True)
    if not result.behaviour:
        say("  no recommendation appears, disappears or changes dose")
    for change in result.behaviour:
        ex = change.example
        line = f"  {change.rule_id} {_VERB[change.change]} in {change.states} state(s), e.g. {ex['state']}"
        say(line, fg={"appears": "green", "disappears": "red"}.get(change.change, "yellow"))
        if ex.get("facts"):
            say(f"      where {', '.join(f'{k} = {_show(v)}' for k, v in ex['facts'].items())}", dim=True)
        if change.change == "dose":
            say(f"      {_show(ex['old_dose'].get('range'))} -> {_show(ex['new_dose'].get('range'))}", dim=True)
    if not result.ok:
        raise SystemExit(exit_codes.INVALID)


def _show(value: object) -> str:
    return "(absent)" if value is None else json.dumps(value, ensure_ascii=False)
