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
              help="Server configuration (YAML or JSON): trusted issuers and keys, base_url, feedback_log, limits.")
@click.option("--insecure-no-auth", "insecure", is_flag=True,
              help="Accept requests without a token. For local testing only; announced on stderr and in every response.")
@json_option
@handles_errors
def serve(host: str, port: int, workers: int, rules_dir: str | None, config_path: str | None, insecure: bool,
          as_json: bool) -> None:
    """Serve the protocol as CDS Hooks 2.0 services (patient-view, order-select).

    GET /cds-services lists the services and their prefetch templates; POST
    /cds-services/{id} returns cards; POST /cds-services/{id}/feedback records outcomes.
    Every call needs a CDS Hooks JWT (Authorization: Bearer) from an issuer in the config
    file, unless --insecure-no-auth. Nothing is fetched from the EHR: data not prefetched
    stays unknown and an info card says what is missing. --json prints the start-up
    summary on stdout.

    \b
    Example:
      pressor serve --config serve.yaml --port 8080 --workers 2
      pressor serve --insecure-no-auth --port 8080
    """
    import uvicorn

    from pressor.engine.evaluate import release

    from .cds_service import SERVICES, SETTINGS_ENV, Settings, announce_insecure, build_runtime

    settings = Settings(config_path=os.path.abspath(config_path) if config_path else None,
                        rules_dir=os.path.abspath(rules_dir) if rules_dir else None, insecure=insecure)
    runtime = build_runtime(settings)  # fail here, with a located message, before any worker starts
    release(runtime.pack)  # each worker builds its own engine
    if not insecure and not runtime.config.issuers:
        raise click.UsageError("no trusted issuers: give --config with 'issuers' (or --insecure-no-auth for local testing)")
    if insecure:
        announce_insecure()
    summary = {"url": f"http://{host}:{port}", "services": sorted(SERVICES), "workers": workers, "insecure": insecure,
               "pack": {"name": runtime.pack.name, "version": runtime.pack.version, "sha256": runtime.pack.sha256}}
    if as_json:
        emit_json(summary)
    say(f"pressor serve: {runtime.pack.name} {runtime.pack.version} on http://{host}:{port} "
        f"({workers} worker{'s' if workers > 1 else ''})")
    os.environ[SETTINGS_ENV] = settings.to_env()
    uvicorn.run("pressor.cli.cds_service:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False)
