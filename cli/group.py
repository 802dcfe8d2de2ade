"""``pressor``: the click group. Thin: parse options, call the engine, render (``main.py`` is the entry point)."""
from __future__ import annotations

import importlib

import click

from . import exit_codes

#: Each command's module, imported only when the command runs (or help lists it), so that
#: `pressor recommend` does not pay for the lint solver, the diff or the service at start-up.
COMMANDS = {
    "recommend": "pressor.cli.recommend:recommend",
    "validate": "pressor.cli.validate:validate",
    "rules": "pressor.cli.rules:rules",
    "explain": "pressor.cli.explain:explain",
    "lint": "pressor.cli.lint:lint",
    "new-rule": "pressor.cli.new_rule:new_rule",
    "test": "pressor.cli.test_cmd:test",
    "diff": "pressor.cli.diff:diff",
    "audit": "pressor.cli.audit:audit",
    "serve": "pressor.cli.serve:serve",
    "ui": "pressor.cli.ui:ui",
    "shadow": "pressor.cli.shadow:shadow",
    "worker": "pressor.cli.worker_cmd:worker",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        if name not in self.commands:
            module, attr = COMMANDS[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return self.commands[name]


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=exit_codes.help_text(),
)
@click.version_option(package_name="pressor", prog_name="pressor")
def cli() -> None:
    """Norepinephrine protocol interpreter for refractory hypotension.

    Every recommendation carries its rule id and version, its citations and the facts
    that triggered it. Machine output (--json) goes to stdout; human text and errors
    go to stderr.

    \b
    Example:
      pressor recommend examples/septic-shock-adult.yaml
    """
