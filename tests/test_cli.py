"""CLI behaviour: golden outputs, stdout/stderr separation, help and README that cannot drift.

Regenerate the golden files after an intended change with ``PRESSOR_UPDATE_GOLDEN=1 pytest tests/test_cli.py``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pressor.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
NOW = "2026-11-24T12:00:00Z"
UPDATE = os.environ.get("PRESSOR_UPDATE_GOLDEN") == "1"


def redact(text: str) -> str:
    """Volatile fields: the pack hash (changes with any rule edit) and the engine version."""
    text = re.sub(r"\b[0-9a-f]{64}\b", "<sha256>", text)
    text = re.sub(r"sha256 [0-9a-f]{12}", "sha256 <sha256>", text)
    return re.sub(r'"engine_version": "[^"]*"', '"engine_version": "<engine>"', text)


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(actual)
    assert path.exists(), f"missing golden file {name}: run with PRESSOR_UPDATE_GOLDEN=1"
    assert actual == path.read_text(), f"{name} differs from its golden copy"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_recommend_golden_text_and_json(example, result_validator):
    runner = CliRunner()
    text = runner.invoke(cli, ["recommend", str(example), "--now", NOW])
    assert text.exit_code == 0 and text.stdout == ""  # human text goes to stderr
    check_golden(f"{example.stem}.txt", redact(text.stderr))
    machine = runner.invoke(cli, ["recommend", str(example), "--now", NOW, "--json"])
    assert machine.exit_code == 0 and machine.stderr == ""
    data = json.loads(machine.stdout)
    result_validator.validate(data)
    check_golden(f"{example.stem}.json", redact(machine.stdout))


def test_main_example_shows_what_the_clinician_needs():
    out = CliRunner().invoke(cli, ["recommend", str(ROOT / "examples/septic-shock-adult.yaml"), "--now", NOW]).stderr
    # one plan, in the order one acts on it
    assert out.index("PLAN") < out.index(" 1. MAP target: ") < out.index(" 2. Vasopressor: ") < out.index(" 3. Fluids")
    assert out.count("aim for a MAP") == 1 and "more items not shown" in out and "pressor recommend --all" in out
    full = CliRunner().invoke(cli, ["recommend", str(ROOT / "examples/septic-shock-adult.yaml"), "--now", NOW, "--all"]).stderr
    assert full.index("CRITICAL") < full.index("WARNING") < full.index("INFO")
    assert "start norepinephrine now" in out and "[2,4,5,7?,12]" in out
    assert "for 72 kg: 1.44-3.6 mcg/min" in out and "pump: 5.4-13.5 mL/h at 16 mcg/mL" in out
    assert "still to give 1296 mL" in out


def test_include_draft_shows_the_draft_rule_marked():
    state = ROOT / "examples/refractory-escalation.yaml"
    plain = CliRunner().invoke(cli, ["recommend", str(state), "--json", "--now", NOW])
    drafts = CliRunner().invoke(cli, ["recommend", str(state), "--json", "--now", NOW, "--include-draft"])
    ids = lambda r: {x["rule_id"]: x["status"] for x in json.loads(r.stdout)["recommendations"]}  # noqa: E731
    assert "titration.every-4h-0.5mg-h" not in ids(plain)
    assert ids(drafts)["titration.every-4h-0.5mg-h"] == "draft"


def test_rules_list_and_show():
    runner = CliRunner()
    listing = json.loads(runner.invoke(cli, ["rules", "list", "--json"]).stdout)
    assert len(listing) == len({r["id"] for r in listing}) >= 38
    shown = runner.invoke(cli, ["rules", "show", "norepinephrine.dose-adult", "--json"])
    data = json.loads(shown.stdout)
    assert data["id"] == "norepinephrine.dose-adult" and data["citations"][0]["number"] == 1
    assert any("CONTRADICTION" in n for n in data["notes"])
    human = runner.invoke(cli, ["rules", "show", "access.peripheral-until-central"])
    assert "UNRESOLVED" in human.stderr and human.stdout == ""
    missing = runner.invoke(cli, ["rules", "show", "target.map-66"])
    assert missing.exit_code == 1 and "did you mean 'target.map-65'?" in missing.stderr


def _commands(group: click.Group, prefix: str = "pressor"):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        path = f"{prefix} {name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from _commands(command, path)


@pytest.mark.parametrize("path, command", list(_commands(cli)), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_has_help_with_an_example_and_is_in_the_readme(path, command):
    readme = (ROOT / "README.md").read_text()
    args = path.split()[1:] + ["--help"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0
    assert "Example:" in result.output, f"{path} --help has no Example: block"
    assert "Exit codes:" in result.output, f"{path} --help does not list the exit codes"
    assert f"`{path}" in readme, f"{path} is missing from README.md"


def test_readme_exit_codes_match_the_code():
    from pressor.cli.exit_codes import TABLE

    readme = (ROOT / "README.md").read_text()
    for code, meaning in TABLE:
        assert re.search(rf"\|\s*{code}\s*\|", readme), f"exit code {code} ({meaning}) not in README.md"
