"""``pressor serve --ui``: the web app mounted on the CDS Hooks service, in every worker.

Users sign in with the OpenID Connect provider of the configuration's ``ui.oidc`` (authorization
code flow with PKCE, as a confidential client whose secret is read from an environment variable or
a file, never from the configuration text). With ``--insecure-no-auth`` the app is open, says so on
every page, and records as ``insecure-no-auth``. Workers share the session secret through
``PRESSOR_UI_SECRET`` (hex), which ``pressor serve`` sets when it is not already set. Spent
sign-in states and ended sessions are kept in the service's shared ``replay_cache`` when it has
one, else in each process.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
from typing import Any

from fastapi import FastAPI, Request

from .app import mount_ui
from .roles import RolePolicy
from .auth import Auth, Marks, SharedMarks, Signer
from .oidc import OidcClient, OidcSettings, settings_from_config
from .context import UiContext

SECRET_ENV = "PRESSOR_UI_SECRET"
log = logging.getLogger("pressor.serve.ui")


def ui_config(config_path: str | None) -> dict[str, Any]:
    """The ``ui`` section of the service configuration (already checked against its schema)."""
    if config_path is None:
        return {}
    from pressor.engine.evaluation.load import load_document

    data = load_document(config_path).data
    return dict(data.get("ui") or {}) if isinstance(data, dict) else {}


def oidc_settings(config_path: str | None, config: Any, environ: Any = None) -> OidcSettings:
    """The OpenID Connect settings of ``ui.oidc`` with the client secret read; ``ValueError`` saying why not."""
    oidc = ui_config(config_path).get("oidc")
    if not oidc:
        raise ValueError("--ui needs 'ui: {oidc: {issuer, client_id, client_secret_env or client_secret_file}}' "
                         "in --config (or --insecure-no-auth)")
    return settings_from_config(oidc, config_dir=os.path.dirname(config_path) if config_path else None,
                                clock_skew_s=config.clock_skew_s, jwks=config.jwks,
                                environ=os.environ if environ is None else environ)


def oidc_problem(config_path: str | None, config: Any) -> str | None:
    """Why the served app could not sign anyone in (None when it can)."""
    try:
        oidc_settings(config_path, config)
    except ValueError as exc:
        return str(exc)
    return None


def build_context(rt: Any, secret: bytes) -> UiContext:
    """The web app's context from the service's runtime (its pack, configuration and audit log)."""
    settings, config = rt.settings, rt.config
    section = ui_config(settings.config_path)
    hours = float(section.get("session_hours", 8))
    if settings.insecure:
        auth = Auth(Signer(secret), "insecure", session_seconds=int(hours * 3600))
        banner = "Authentication is disabled (--insecure-no-auth): do not use with patient data."
    else:
        try:
            client = OidcClient(oidc_settings(settings.config_path, config))
        except ValueError as exc:  # `pressor serve --ui` checked this at start; the environment changed since
            log.error("the web app cannot sign anyone in: %s", exc)
            client = None
        marks = SharedMarks(rt.verifier.replay) if config.replay_cache else Marks()
        secure = bool(config.base_url and config.base_url.startswith("https://"))
        auth = Auth(Signer(secret), "oidc", oidc=client, secure_cookies=secure, session_seconds=int(hours * 3600),
                    marks=marks, roles=RolePolicy.from_config(section.get("roles")))
        banner = None
    return UiContext(pack=rt.pack, auth=auth, audit_path=rt.audit.path, input_mode=config.audit_input,
                     include_draft=config.include_draft, banner=banner, base_url=config.base_url)


def create_served_app() -> FastAPI:
    """uvicorn factory: the CDS Hooks app with the web app under ``/ui``."""
    from pressor.service.app import Settings, create_app

    app = create_app(Settings.from_env())
    raw = os.environ.get(SECRET_ENV)
    secret = bytes.fromhex(raw) if raw else secrets.token_bytes(32)
    lock = threading.Lock()
    holder: dict[str, UiContext] = {}

    def context_of(request: Request) -> UiContext:
        # The service builds its runtime in its lifespan; the web app's context follows from it.
        with lock:
            if "ctx" not in holder:
                holder["ctx"] = build_context(request.app.state.rt, secret)
            return holder["ctx"]

    mount_ui(app, context_of)
    return app
