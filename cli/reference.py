"""docs/cli.md, generated from the commands' own help (so the reference cannot drift from the code).

Regenerate it with ``python -m pressor.cli.reference > docs/cli.md`` (or ``PRESSOR_UPDATE_GOLDEN=1 pytest
tests/test_cli_reference.py``); the test fails when it is out of date.
"""
from __future__ import annotations

from collections.abc import Iterator

import click

#: Help is wrapped at this width whatever the terminal, so the reference is the same on every machine.
WIDTH = 100


def _commands(command: click.Command, ctx: click.Context) -> Iterator[tuple[str, click.Context]]:
    yield ctx.command_path, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _commands(sub, click.Context(sub, info_name=name, parent=ctx, terminal_width=WIDTH,
                                                        max_content_width=WIDTH))


def reference() -> str:
    """The CLI reference in Markdown: each command's ``--help``, in command order."""
    from .group import cli

    root = click.Context(cli, info_name="pressor", **{**cli.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH})
    parts = ["# CLI reference", "",
             "Generated from the commands' help by `python -m pressor.cli.reference > docs/cli.md`; "
             "`tests/test_cli_reference.py` fails when it is out of date. `pressor COMMAND -h` shows the same.", ""]
    for path, ctx in _commands(cli, root):
        parts += [f"## `{path}`", "", "```text", ctx.get_help().rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    click.echo(reference(), nl=False)
