"""``pressor ui``: the web app on this machine only (127.0.0.1), behind a one-time link."""
from __future__ import annotations

import socket
import sys

import click

from . import exit_codes
from .common import audit_db_option
from .common import emit_json, handles_errors, json_option, rules_option, say


@click.command(epilog=exit_codes.help_text())
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port on 127.0.0.1 (0: any free port, printed).")
@rules_option
@audit_db_option
@click.option("--audit-input", "audit_input", type=click.Choice(["full", "hash"]), default="full", show_default=True,
              help="Keep recorded inputs in full, or only their SHA-256.")
@click.option("--include-draft", is_flag=True, help="Also evaluate draft and in-review rules (marked as such).")
@click.option("--compare", "compare_dirs", multiple=True, type=click.Path(file_okay=False, exists=True, path_type=str),
              help="A rule pack directory the diff view can compare with (repeatable).")
@click.option("--scenarios", "scenario_paths", multiple=True, type=click.Path(exists=True, path_type=str),
              help="Scenario files or directories for the coverage and diff views (repeatable).")
@json_option
@handles_errors
def ui(port: int, rules_dir: str | None, audit_db: str | None, audit_input: str, include_draft: bool,
       compare_dirs: tuple[str, ...], scenario_paths: tuple[str, ...], as_json: bool) -> None:
    """The web app for clinicians, informaticists and auditors, on 127.0.0.1 only.

    Prints a one-time link (with --json: {"url", "login_url", ...} on stdout): opening it
    signs this browser in with an HttpOnly, SameSite=Strict session cookie, and the link
    stops working. Without it the app shows no patient data and no audit record.
    Advice is recorded in the audit log (--audit-db, else $PRESSOR_AUDIT_DB, else the
    default) when the clinician presses "Record this advice", under the OS user's name.
    Stop with Ctrl-C.

    \b
    Example:
      pressor ui
      pressor ui --port 0 --scenarios tests/scenarios --compare ../pack-1.1
    """
    import uvicorn

    from pressor.engine.audit import os_user, resolve_path
    from pressor.engine.evaluation.pack import load_pack
    from pressor.service.ui.app import create_ui_app
    from pressor.service.ui.auth import Auth
    from pressor.service.ui.context import UiContext

    pack = load_pack(rules_dir)
    auth = Auth.local(f"local:{os_user()}")
    ctx = UiContext(pack=pack, auth=auth, audit_path=resolve_path(audit_db), input_mode=audit_input,
                    include_draft=include_draft, compare_dirs=compare_dirs, scenario_paths=scenario_paths)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise click.UsageError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror} (try --port 0)") from exc
    sock.listen(128)  # connections wait in the backlog until the server starts: the link works once printed
    bound = sock.getsockname()[1]
    url = f"http://127.0.0.1:{bound}/ui/"
    login = f"http://127.0.0.1:{bound}/ui/login?token={auth.start_token}"
    if as_json:
        emit_json({"url": url, "login_url": login, "pack": {"name": pack.name, "version": pack.version, "sha256": pack.sha256},
                   "audit": {"path": str(ctx.audit_path), "input": audit_input}})
        sys.stdout.flush()
    say(f"pressor ui: {pack.name} {pack.version} on {url} (this machine only)")
    say(f"open this link once to sign in (it works once): {login}", bold=True)
    from pressor.service.idle import IdleClosingH11Protocol

    server = uvicorn.Server(uvicorn.Config(create_ui_app(ctx), log_level="warning", access_log=False,
                                           http=IdleClosingH11Protocol, timeout_keep_alive=10))
    server.run(sockets=[sock])
