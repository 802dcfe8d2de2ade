"""SMART App Launch (v2) of the web app from the EHR: the EHR opens ``/ui/launch?iss=...&launch=...``.

EHR launch: ``iss`` (the EHR's FHIR base URL, which must be one of ``ui.smart.issuers``) and ``launch``
(opaque, passed back); standalone launch: no ``iss``, the configured ``standalone_iss``, and the scope
asks for ``launch/patient``. Either way: ``{iss}/.well-known/smart-configuration`` names the
authorization and token endpoints (S256 must be among its ``code_challenge_methods_supported`` when it
lists them); the browser goes to the authorization endpoint with ``response_type=code``, ``client_id``,
``redirect_uri``, ``scope``, ``state`` (signed, single use, bound to the browser by a cookie),
``aud=iss``, ``launch`` and a PKCE S256 challenge; the callback exchanges the code (with the verifier,
and the client secret when one is configured) for an access token and the patient in context. The app
then reads that patient's record from ``iss`` with the token (the service's FHIR fetch: bounded, on that
server only) and shows the clinician view for it. Outbound calls follow ``service/outbound.py``: https (or
http to the loopback), no redirects followed, a time-out and a size limit.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlencode

from ..outbound import Unreachable, get_json_object, request_json, url_problem

SMART_COOKIE = "pressor_smart_launch"
LAUNCH_SECONDS = 600
DEFAULT_SCOPE = "launch openid fhirUser patient/*.read"


class LaunchRefused(Exception):
    """The launch cannot go on (a 400/401 page with the reason)."""


@dataclass(frozen=True)
class SmartSettings:
    """``ui.smart`` of the configuration."""

    client_id: str
    issuers: tuple[str, ...]
    client_secret: str | None = None
    scope: str = DEFAULT_SCOPE
    standalone_iss: str | None = None
    timeout_s: float = 5.0

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, environ: Mapping[str, str]) -> "SmartSettings | None":
        if not section:
            return None
        secret = environ.get(section["client_secret_env"]) if section.get("client_secret_env") else None
        return cls(client_id=section["client_id"], issuers=tuple(i.rstrip("/") for i in section.get("issuers", ())),
                   client_secret=secret, scope=section.get("scope", DEFAULT_SCOPE),
                   standalone_iss=(section.get("standalone_iss") or "").rstrip("/") or None,
                   timeout_s=float(section.get("timeout_s", 5)))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class SmartLauncher:
    """Begins and finishes a launch; ``signer`` and ``derive`` are the web app's (state, cookie, PKCE verifier)."""

    def __init__(self, settings: SmartSettings, signer: Any, derive: Any) -> None:
        self.settings, self.signer, self.derive = settings, signer, derive

    def configuration(self, iss: str) -> dict[str, str]:
        """The authorization and token endpoints of ``iss`` (its SMART configuration, checked)."""
        try:
            conf = get_json_object(f"{iss}/.well-known/smart-configuration", timeout_s=self.settings.timeout_s)
        except Unreachable as exc:
            raise LaunchRefused(f"the EHR's SMART configuration cannot be read: {exc}") from exc
        endpoints: dict[str, str] = {}
        for name in ("authorization_endpoint", "token_endpoint"):
            url = conf.get(name)
            if not isinstance(url, str) or url_problem(url):
                raise LaunchRefused(f"the EHR's SMART configuration has no usable {name}")
            endpoints[name] = url
        methods = conf.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise LaunchRefused("the EHR's authorization server does not support PKCE S256")
        return endpoints

    def begin(self, iss: str | None, launch: str | None, redirect_uri: str) -> tuple[str, str]:
        """The authorization URL to send the browser to, and the value of :data:`SMART_COOKIE`."""
        s = self.settings
        if iss is None:
            if s.standalone_iss is None:
                raise LaunchRefused("no iss: open pressor from the EHR (a standalone launch needs ui.smart.standalone_iss)")
            iss, scope = s.standalone_iss, s.scope.replace("launch ", "") + " launch/patient"
        else:
            iss, scope = iss.rstrip("/"), s.scope
            if iss not in s.issuers:
                raise LaunchRefused(f"{iss[:200]!r} is not an EHR this pressor is launched from (ui.smart.issuers)")
            if not launch:
                raise LaunchRefused("an EHR launch needs its launch parameter")
        endpoints = self.configuration(iss)
        launch_id = secrets.token_urlsafe(16)
        exp = time.time() + LAUNCH_SECONDS
        state = self.signer.sign({"purpose": "smart-state", "id": launch_id, "exp": exp, "iss": iss,
                                  "token_endpoint": endpoints["token_endpoint"]})
        browser = self.signer.sign({"purpose": "smart-browser", "id": launch_id, "exp": exp})
        challenge = _b64(hashlib.sha256(self.derive("smart-pkce", launch_id).encode("ascii")).digest())
        query = {"response_type": "code", "client_id": s.client_id, "redirect_uri": redirect_uri, "scope": scope,
                 "state": state, "aud": iss, "code_challenge": challenge, "code_challenge_method": "S256"}
        if launch:
            query["launch"] = launch
        return f"{endpoints['authorization_endpoint']}?{urlencode(query)}", browser

    def finish(self, params: Mapping[str, str], browser: str | None, redirect_uri: str,
               spend: Any) -> dict[str, Any]:
        """The token response (``access_token``, ``patient``, ...) with ``iss`` added; :class:`LaunchRefused` if not."""
        if params.get("error"):
            raise LaunchRefused(f"the EHR did not authorise pressor: {params['error'][:100]}")
        state = self.signer.unsign(params.get("state"))
        if state is None or state.get("purpose") != "smart-state":
            raise LaunchRefused("the launch state is missing, forged or expired; launch again from the EHR")
        cookie = self.signer.unsign(browser)
        if cookie is None or cookie.get("purpose") != "smart-browser" or cookie.get("id") != state["id"]:
            raise LaunchRefused("this launch was not started in this browser; launch again from the EHR")
        if not spend(f"smart-state|{state['id']}", float(state["exp"]) + 60):
            raise LaunchRefused("this launch answer was already used; launch again from the EHR")
        if not params.get("code"):
            raise LaunchRefused("the EHR's answer holds no code")
        form = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": redirect_uri,
                "code_verifier": self.derive("smart-pkce", state["id"])}
        auth = None
        if self.settings.client_secret:
            auth = (self.settings.client_id, self.settings.client_secret)
        else:
            form["client_id"] = self.settings.client_id
        try:
            status, tokens, _ = request_json("POST", state["token_endpoint"], timeout_s=self.settings.timeout_s, data=form,
                                             auth=auth)
        except Unreachable as exc:
            raise LaunchRefused(f"the EHR's token endpoint cannot be used: {exc}") from exc
        if status != 200 or not isinstance(tokens, dict) or not isinstance(tokens.get("access_token"), str):
            raise LaunchRefused(f"the EHR's token endpoint refused the code (HTTP {status})")
        if not isinstance(tokens.get("patient"), str) or not tokens["patient"]:
            raise LaunchRefused("the EHR gave no patient in context (scope launch or launch/patient)")
        return {**tokens, "iss": state["iss"]}
