"""``pressor serve``: the CDS Hooks service over HTTP (uvicorn workers)."""
from __future__ import annotations

import os

import click

from . import exit_codes
from .common import emit_json, handles_errors, json_option, rules_option, say


@click.command(epilog=exit_codes.help_text())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes; each loads and compiles the pack once.")
@rules_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=str), default=None,
              help="Server configuration (YAML or JSON): trusted issuers and keys, base_url, audit_db, audit_input, "
                   "require_audit, limits.")
@click.option("--insecure-no-auth", "insecure", is_flag=True,
              help="Accept requests without a token. For local testing only; announced on stderr and in every response.")
@click.option("--ui", "with_ui", is_flag=True,
              help="Also serve the web app under /ui; users sign in with the OpenID Connect provider of the config's ui.oidc.")
@json_option
@handles_errors
def serve(host: str, port: int, workers: int, rules_dir: str | None, config_path: str | None, insecure: bool,
          with_ui: bool, as_json: bool) -> None:
    """Serve the protocol as CDS Hooks 2.0 services (patient-view, order-select, order-sign).

    GET /cds-services lists the services and their prefetch templates; POST
    /cds-services/{id} returns cards; POST /cds-services/{id}/feedback records outcomes.
    Every call needs a CDS Hooks JWT (Authorization: Bearer) from an issuer in the config
    file (keys given there or fetched from its JWKS URL), unless --insecure-no-auth. What
    the prefetch lacks is fetched from the call's fhirServer; required data that can be had
    neither way is answered 412. One JSON log line per request on stderr (or log_file).
    See docs/deploy.md. --json prints the start-up summary on stdout.

    Every evaluation (one record per evaluated state, user = the token's iss|sub) and
    every feedback item goes to the audit log: config audit_db, else $PRESSOR_AUDIT_DB,
    else the default (see `pressor audit`). If a call cannot be recorded its cards still
    come back, with a warning card saying so (503 instead with require_audit: true);
    feedback that cannot be recorded is answered 503.

    --ui adds the web app (see `pressor ui`) under /ui: sign-in through the OpenID
    Connect provider named in the config's ui.oidc, whose ID tokens are checked with
    the keys of the matching trusted issuer.

    \b
    Example:
      pressor serve --config serve.yaml --port 8080 --workers 2
      pressor serve --config serve.yaml --ui
      pressor serve --insecure-no-auth --port 8080
    """
    import uvicorn

    from pressor.engine.audit import AuditLog
    from pressor.engine.audit.store_postgres import redacted
    from pressor.engine.errors import AuditError
    from pressor.engine.evaluation.evaluate import release

    from pressor.service.app import SERVICES, SETTINGS_ENV, Settings, announce_insecure, build_runtime

    settings = Settings(config_path=os.path.abspath(config_path) if config_path else None,
                        rules_dir=os.path.abspath(rules_dir) if rules_dir else None, insecure=insecure)
    runtime = build_runtime(settings)  # fail here, with a located message, before any worker starts
    audit_path = str(runtime.audit.path)
    try:
        # Create (or migrate) the log once here, so that workers only open it; a failure is
        # not fatal (each call reports it, and the workers retry), but it is said now.
        AuditLog.open(audit_path).close()
    except AuditError as exc:
        say(f"WARNING: the audit log cannot be used; calls will say their advice is not recorded"
            f"{' and be refused (require_audit)' if runtime.config.require_audit else ''}: {exc}", fg="red", bold=True)
    release(runtime.pack)  # each worker builds its own engine
    if not insecure and not runtime.config.issuers:
        raise click.UsageError("no trusted issuers: give --config with 'issuers' (or --insecure-no-auth for local testing)")
    if with_ui and not insecure:
        from pressor.service.ui.served import oidc_problem

        problem = oidc_problem(settings.config_path, runtime.config)
        if problem:
            raise click.UsageError(problem)
    if insecure:
        announce_insecure()
    summary = {"url": f"http://{host}:{port}", "services": sorted(SERVICES), "workers": workers, "insecure": insecure,
               "pack": {"name": runtime.pack.name, "version": runtime.pack.version, "sha256": runtime.pack.sha256},
               "audit": {"path": redacted(audit_path), "input": runtime.config.audit_input, "required": runtime.config.require_audit},
               "issuers": sorted(runtime.config.issuers), "cors_origins": list(runtime.config.cors_origins),
               "fhir_fetch": runtime.config.fhir_fetch.enabled, "log": runtime.config.log_file or "stderr"}
    if with_ui:
        summary["ui"] = f"http://{host}:{port}/ui/"
    if as_json:
        emit_json(summary)
    say(f"pressor serve: {runtime.pack.name} {runtime.pack.version} on http://{host}:{port} "
        f"({workers} worker{'s' if workers > 1 else ''})")
    os.environ[SETTINGS_ENV] = settings.to_env()
    if runtime.config.metrics.enabled and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import tempfile

        # one directory for every worker of this start, so that a scrape of any of them sums all
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="pressor-metrics-")
    factory = "pressor.service.app:create_app"
    if with_ui:
        import secrets

        from pressor.service.ui.served import SECRET_ENV

        os.environ.setdefault(SECRET_ENV, secrets.token_hex(32))  # one session secret for every worker
        factory = "pressor.service.ui.served:create_served_app"
    from pressor.service.idle import IdleClosingH11Protocol

    uvicorn.run(factory, factory=True, host=host, port=port, workers=workers, log_level="warning", access_log=False,
                http=IdleClosingH11Protocol, timeout_keep_alive=int(runtime.config.idle_timeout_s))
