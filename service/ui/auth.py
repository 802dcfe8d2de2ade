"""Who may see the web app: sessions, the one-time start-up link, OpenID Connect sign-in, CSRF.

Sessions are signed cookies (HMAC-SHA256 over a small JSON payload: subject, expiry,
the session's CSRF token), HttpOnly, SameSite=Strict, Path=/ui, Secure over HTTPS. They
hold no patient data, and being stateless they work across the service's worker
processes as long as the workers share the secret (``pressor serve`` hands one to them).

Two ways in:

- ``pressor ui`` (local): a random token printed once at start-up; the first visit of
  ``/ui/login?token=...`` opens a session and the token is spent.
- ``pressor serve --ui`` (served): OpenID Connect, implicit flow with ``form_post``
  (``response_type=id_token``). The ID token must be signed by an issuer the service
  already trusts (the ``issuers`` of its configuration, with their keys: nothing is
  fetched), for ``aud`` = the configured ``client_id``, with the ``nonce`` bound to the
  signed ``state`` of this sign-in.

Every state-changing request (POST) must carry the session's CSRF token (form field
``csrf_token`` or header ``X-CSRF-Token``) and, when the browser sends one, an
``Origin`` equal to the app's own.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlencode

COOKIE = "pressor_ui"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 8 * 3600
SIGN_IN_SECONDS = 600


class AuthFailure(Exception):
    """Sign-in refused (the message says why; it is shown to the user)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """A signed-in user."""

    sub: str
    exp: float
    csrf: str


@dataclass(frozen=True)
class OidcProvider:
    """The OpenID Connect provider the served app signs users in with."""

    issuer: str
    client_id: str
    authorization_endpoint: str
    keys: Mapping[str, Any]  # kid -> public key, from the service's trusted issuers
    algorithms: tuple[str, ...] = ("ES384", "RS384", "RS256", "ES256")
    scope: str = "openid profile"
    clock_skew_s: int = 60


@dataclass
class Signer:
    """Signs and checks the app's cookies and sign-in states with one secret."""

    secret: bytes

    def sign(self, payload: Mapping[str, Any]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        mac = hmac.new(self.secret, body.encode("ascii"), hashlib.sha256).digest()
        return f"{body}.{_b64(mac)}"

    def unsign(self, token: str | None) -> dict[str, Any] | None:
        """The payload, or None when the token is absent, forged, malformed or expired."""
        if not token or token.count(".") != 1:
            return None
        body, mac = token.split(".")
        expected = hmac.new(self.secret, body.encode("ascii"), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_unb64(mac), expected):
                return None
            payload = json.loads(_unb64(body))
        except (ValueError, TypeError):
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), (int, float)) or payload["exp"] < time.time():
            return None
        return payload


@dataclass
class Auth:
    """The app's access policy: how users sign in, and the checks on every request."""

    signer: Signer
    mode: str  # "token" (pressor ui) | "oidc" (pressor serve --ui) | "insecure" (serve --insecure-no-auth)
    local_user: str = "local"
    oidc: OidcProvider | None = None
    secure_cookies: bool = False
    session_seconds: int = SESSION_SECONDS
    _token: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def local(cls, user: str, *, secret: bytes | None = None) -> "Auth":
        """``pressor ui``: a fresh secret and a one-time token."""
        auth = cls(Signer(secret or secrets.token_bytes(32)), "token", local_user=user)
        auth._token = secrets.token_urlsafe(32)
        return auth

    @property
    def start_token(self) -> str | None:
        """The one-time token (None once spent)."""
        return self._token

    # -- sessions -------------------------------------------------------------
    def session(self, cookies: Mapping[str, str]) -> Session | None:
        """The signed-in user of a request, if any."""
        if self.mode == "insecure":
            return Session("insecure-no-auth", time.time() + self.session_seconds, self._insecure_csrf())
        payload = self.signer.unsign(cookies.get(COOKIE))
        if payload is None or not isinstance(payload.get("sub"), str) or not isinstance(payload.get("csrf"), str):
            return None
        return Session(payload["sub"], payload["exp"], payload["csrf"])

    def _insecure_csrf(self) -> str:
        return _b64(hmac.new(self.signer.secret, b"insecure-csrf", hashlib.sha256).digest())

    def new_session_cookie(self, sub: str) -> str:
        """The cookie value of a new session for ``sub``."""
        return self.signer.sign({"sub": sub, "exp": time.time() + self.session_seconds, "csrf": secrets.token_urlsafe(24)})

    def cookie_options(self) -> dict[str, Any]:
        """Attributes of the session cookie."""
        return {"httponly": True, "samesite": "strict", "path": "/ui", "secure": self.secure_cookies,
                "max_age": self.session_seconds}

    # -- the one-time link ----------------------------------------------------
    def spend_token(self, offered: str | None) -> str:
        """Check the start-up token and spend it; the subject of the new session."""
        with self._lock:
            if self.mode != "token":
                raise AuthFailure("this server signs in with its identity provider, not a start-up link")
            if self._token is None:
                raise AuthFailure("this start-up link was already used; restart `pressor ui` for a new one")
            if not offered or not hmac.compare_digest(offered.encode("utf-8"), self._token.encode("utf-8")):
                raise AuthFailure("wrong or missing token; open the exact link `pressor ui` printed")
            self._token = None
        return self.local_user

    # -- OpenID Connect -------------------------------------------------------
    def authorization_url(self, redirect_uri: str) -> str:
        """Where to send the browser to sign in (with a signed state carrying a fresh nonce)."""
        provider = self._provider()
        nonce = secrets.token_urlsafe(16)
        state = self.signer.sign({"nonce": nonce, "exp": time.time() + SIGN_IN_SECONDS, "purpose": "oidc"})
        query = urlencode({"response_type": "id_token", "response_mode": "form_post", "client_id": provider.client_id,
                           "redirect_uri": redirect_uri, "scope": provider.scope, "state": state, "nonce": nonce})
        sep = "&" if "?" in provider.authorization_endpoint else "?"
        return f"{provider.authorization_endpoint}{sep}{query}"

    def oidc_subject(self, id_token: str | None, state: str | None) -> str:
        """Check the provider's answer (ID token + state); ``iss|sub`` of the user."""
        import jwt

        provider = self._provider()
        payload = self.signer.unsign(state)
        if payload is None or payload.get("purpose") != "oidc":
            raise AuthFailure("the sign-in state is missing, forged or expired; sign in again")
        if not id_token:
            raise AuthFailure("the identity provider sent no id_token")
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise AuthFailure(f"malformed ID token: {exc}") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in provider.algorithms:
            raise AuthFailure(f"ID token algorithm '{alg}' is not accepted")
        key = provider.keys.get(kid) if kid else (next(iter(provider.keys.values())) if len(provider.keys) == 1 else None)
        if key is None:
            raise AuthFailure(f"unknown key id {kid!r} for issuer {provider.issuer!r}")
        try:
            claims = jwt.decode(id_token, key, algorithms=[alg], audience=provider.client_id, issuer=provider.issuer,
                                leeway=provider.clock_skew_s, options={"require": ["iss", "sub", "aud", "exp", "iat", "nonce"]})
        except jwt.PyJWTError as exc:
            raise AuthFailure(f"ID token refused: {exc}") from exc
        if not hmac.compare_digest(str(claims["nonce"]).encode("utf-8"), str(payload["nonce"]).encode("utf-8")):
            raise AuthFailure("ID token nonce does not match this sign-in")
        return f"{claims['iss']}|{claims['sub']}"

    def _provider(self) -> OidcProvider:
        if self.oidc is None:
            raise AuthFailure("no identity provider is configured (config 'ui.oidc')")
        return self.oidc

    # -- CSRF -----------------------------------------------------------------
    @staticmethod
    def csrf_ok(session: Session, offered: str | None, origin: str | None, own_origin: str) -> bool:
        """The request carries this session's CSRF token and, if it names one, our own origin."""
        if origin is not None and origin != own_origin:
            return False
        return bool(offered) and hmac.compare_digest(offered.encode("utf-8"), session.csrf.encode("utf-8"))
