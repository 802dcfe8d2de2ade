"""``pressor``: the command line. Thin: parse options, call the engine, render."""
from __future__ import annotations

import click

from . import exit_codes
from .audit import audit
from .diff import diff
from .explain import explain
from .lint import lint
from .recommend import recommend
from .rules import rules
from .serve import serve
from .test_cmd import test
from .validate import validate


@click.group(
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


cli.add_command(recommend)
cli.add_command(validate)
cli.add_command(rules)
cli.add_command(explain)
cli.add_command(lint)
cli.add_command(test)
cli.add_command(diff)
cli.add_command(audit)
cli.add_command(serve)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="pressor")
