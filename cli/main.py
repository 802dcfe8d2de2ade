"""``pressor``: the command line's entry point.

Nothing heavy is imported here: with ``PRESSOR_WORKER`` set, a command the warm worker can answer is
handed to it (:mod:`.worker`) before click, the engine or the pack are imported; otherwise (or when no
worker answers) the click group (:mod:`.group`) runs in this process.
"""
from __future__ import annotations

import os
import sys

__all__ = ["cli", "main"]  # noqa: F822 (cli comes from __getattr__, importing click only then)


def main() -> None:
    """Console-script entry point."""
    if os.environ.get("PRESSOR_WORKER", "0") not in ("", "0"):
        from .worker import answer_with_worker

        code = answer_with_worker(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    from .group import cli

    try:
        cli(prog_name="pressor")
    finally:
        if os.environ.get("PRESSOR_WORKER", "0") not in ("", "0", "require"):
            from .worker import start_in_background

            start_in_background(sys.argv[1:])


def __getattr__(name: str) -> object:
    # ``from pressor.cli.main import cli`` keeps working, without importing click for ``main`` alone.
    if name in ("cli", "COMMANDS", "LazyGroup"):
        from . import group

        return getattr(group, name)
    raise AttributeError(name)
