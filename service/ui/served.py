"""``pressor serve --ui``: the web app mounted on the CDS Hooks service, in every worker.

Users sign in with the OpenID Connect provider of the configuration's ``ui.oidc``, whose ID
tokens are checked with the keys of the matching entry of ``issuers`` (the service's own
trust list; nothing is fetched). With ``--insecure-no-auth`` the app is open, says so on
every page, and records as ``insecure-no-auth``. Workers share the session secret through
``PRESSOR_UI_SECRET`` (hex), which ``pressor serve`` sets when it is not already set.
"""
from __future__ import annotations

import os
import secrets
import threading
from typing import Any

from fastapi import FastAPI, Request

from .app import mount_ui
from .auth import Auth, OidcProvider, Signer
from .context import UiContext

SECRET_ENV = "PRESSOR_UI_SECRET"


def ui_config(config_path: str | None) -> dict[str, Any]:
    """The ``ui`` section of the service configuration (already checked against its schema)."""
    if config_path is None:
        return {}
    from pressor.engine.evaluation.load import load_document

    data = load_document(config_path).data
    return dict(data.get("ui") or {}) if isinstance(data, dict) else {}


def oidc_problem(config_path: str | None, issuers: dict[str, Any]) -> str | None:
    """Why the served app could not sign anyone in (None when it can)."""
    oidc = ui_config(config_path).get("oidc")
    if not oidc:
        return "--ui needs 'ui: {oidc: {issuer, client_id, authorization_endpoint}}' in --config (or --insecure-no-auth)"
    if oidc["issuer"] not in issuers:
        return f"ui.oidc.issuer {oidc['issuer']!r} is not one of the configured 'issuers' (its keys check the ID tokens)"
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
        oidc = section.get("oidc") or {}
        provider = None
        if oidc.get("issuer") in config.issuers:
            provider = OidcProvider(issuer=oidc["issuer"], client_id=oidc["client_id"],
                                    authorization_endpoint=oidc["authorization_endpoint"],
                                    keys=config.issuers[oidc["issuer"]].keys, algorithms=tuple(config.algorithms),
                                    scope=oidc.get("scope", "openid profile"), clock_skew_s=config.clock_skew_s)
        secure = bool(config.base_url and config.base_url.startswith("https://"))
        auth = Auth(Signer(secret), "oidc", oidc=provider, secure_cookies=secure, session_seconds=int(hours * 3600))
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
