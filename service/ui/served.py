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
from .smart import SmartLauncher, SmartSettings
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


def build_context(rt: Any, secret: bytes, fetcher: Any = None) -> UiContext:
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
                    marks=marks, roles=RolePolicy.from_config(section.get("roles")),
                    embedded=bool(section.get("frame_ancestors")))
        banner = None
    smart = SmartSettings.from_config(section.get("smart"), os.environ)
    return UiContext(pack=rt.pack, auth=auth, audit_path=rt.audit.path, input_mode=config.audit_input,
                     include_draft=config.include_draft, banner=banner, base_url=config.base_url,
                     smart=SmartLauncher(smart, auth.signer, auth._derived) if smart else None,
                     smart_record=smart_record_reader(rt, fetcher) if smart else None,
                     frame_ancestors=tuple(section.get("frame_ancestors", ())))


def smart_record_reader(rt: Any, fetcher: Any) -> Any:
    """``await read(tokens)``: the launched patient's record, read from the launch's ``iss`` with its access token
    through the service's FHIR fetch (bounded; ``fhir_fetch.servers`` applies), as ``(state, notes)``."""
    from datetime import datetime, timezone

    from pressor.engine.ehr.fhir import FhirError, from_hook_request, observation_windows

    async def read(tokens: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
        iss, authorization = tokens["iss"], {"access_token": tokens["access_token"]}
        refusal = fetcher.refusal(iss)
        if refusal is not None:
            return None, [f"the record was not read: {refusal}"]
        now = datetime.now(timezone.utc)
        context = {"patientId": tokens["patient"]}
        fetched = await fetcher.fetch(iss, authorization, rt.templates, context, now=now, windows=observation_windows(rt.mapping))
        body = {"context": context, "prefetch": fetched.prefetch}
        meds, med_notes = await fetcher.medications(iss, authorization, body)
        if meds is not None:
            body["prefetch"]["medications"] = meds
        notes = [f"{k} not read: {why}" for k, why in fetched.failed.items()] + med_notes
        try:
            conversion = from_hook_request(body, now=now, mapping=rt.mapping, pack=rt.pack)
        except FhirError as exc:
            return None, notes + [str(exc)]
        return conversion.state, notes + conversion.gaps

    return read


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
                holder["ctx"] = build_context(request.app.state.rt, secret, request.app.state.fetcher)
            return holder["ctx"]

    mount_ui(app, context_of)
    return app
