"""``pressor worker``: start, stop or show the warm CLI worker (see :mod:`.worker`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click

from . import exit_codes
from . import worker as w
from .common import emit_json, json_option


def _report(pid: int | None, as_json: bool, text: str, *, stopped: bool = False) -> None:
    """The worker's state: ``text`` on stderr; with ``--json``, ``{"running", "pid", "socket"}`` on stdout."""
    if as_json:
        emit_json({"running": pid is not None and not stopped, "pid": pid, "socket": w.socket_path()})
    click.echo(text, err=True)


@click.group(epilog=exit_codes.help_text())
def worker() -> None:
    """The warm CLI worker (opt in with PRESSOR_WORKER=1): a per-user fork-server that answers
    `pressor recommend` with the same output, without the start-up cost.

    \b
    Example:
      PRESSOR_WORKER=1 pressor recommend examples/septic-shock-adult.yaml --json --no-audit
    """


@worker.command(epilog=exit_codes.help_text())
@json_option
def start(as_json: bool) -> None:
    """Start the worker in the background (if none runs) and wait until it answers.

    \b
    Example:
      pressor worker start
    """
    if w.running_pid() is None:
        subprocess.Popen([sys.executable, "-m", "pressor.cli.worker", "serve"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd="/")
        deadline = time.monotonic() + 30
        while w.running_pid() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    pid = w.running_pid()
    if pid is None:
        raise click.ClickException("the worker did not start within 30 s")
    _report(pid, as_json, f"worker {pid} on {w.socket_path()}")


@worker.command(epilog=exit_codes.help_text())
@json_option
def stop(as_json: bool) -> None:
    """Stop the worker (SIGTERM); children answering a command finish it.

    \b
    Example:
      pressor worker stop
    """
    pid = w.running_pid()
    if pid is None:
        _report(None, as_json, "no worker is running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while w.running_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    _report(pid, as_json, f"worker {pid} stopped", stopped=True)


@worker.command(epilog=exit_codes.help_text())
@json_option
def status(as_json: bool) -> None:
    """Say whether a worker runs (exit 0) or not (exit 1).

    \b
    Example:
      pressor worker status
    """
    pid = w.running_pid()
    _report(pid, as_json, "no worker is running" if pid is None else f"worker {pid} on {w.socket_path()}")
    if pid is None:
        sys.exit(1)
