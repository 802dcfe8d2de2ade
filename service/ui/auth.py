"""Who may see the web app: sessions, the one-time start-up link, OpenID Connect sign-in, CSRF.

Sessions are signed cookies (HMAC-SHA256 over a small JSON payload: session id, subject, expiry,
the session's CSRF token), HttpOnly, SameSite=Strict, Path=/ui, Secure over HTTPS. They hold no
patient data and work across the service's worker processes as long as the workers share the
secret (``pressor serve`` hands one to them). Signing out records the session id as ended until
the session would have expired (:class:`Marks`), and every request checks it, so a copy of the
cookie stops working too; when the identity provider offers RP-initiated logout the session also
keeps the ID token, and signing out continues at the provider (:meth:`Auth.end_session_url`).

Two ways in:

- ``pressor ui`` (local): a random token printed once at start-up; the first visit of
  ``/ui/login?token=...`` opens a session and the token is spent.
- ``pressor serve --ui`` (served): OpenID Connect, authorization code flow with PKCE (S256)
  (:mod:`.oidc`). ``/ui/login`` sends the browser to the provider with a signed ``state`` and sets
  a short-lived cookie holding the same sign-in id, so that only the browser that started a
  sign-in can finish it; the nonce and the PKCE verifier are derived from that id under the
  app's secret (never sent to the browser). The callback spends the state (single use), checks
  the cookie, exchanges the code and checks the ID token.

Every state-changing request (POST) must carry the session's CSRF token (form field
``csrf_token`` or header ``X-CSRF-Token``) and, when the browser sends one, an
``Origin`` equal to the app's own.
"""
from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from .oidc import OidcClient, ProviderUnavailable, SignInRefused

from .roles import ROLES, RolePolicy

log = logging.getLogger("pressor.serve.ui")

COOKIE = "pressor_ui"
#: The cookie binding a sign-in in progress to the browser that started it (SameSite=Lax: it must
#: come back on the provider's cross-site redirect to the callback; Path=/ui/login).
SIGN_IN_COOKIE = "pressor_ui_signin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 8 * 3600
#: Largest session cookie (name and value) made: browsers keep at least 4096 bytes per cookie with its attributes.
MAX_COOKIE_BYTES = 3800
SIGN_IN_SECONDS = 600


#: Sign-in refused (the message says why; it is shown to the user): 401.
AuthFailure = SignInRefused


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
    sid: str = ""
    #: The ID token of the sign-in, kept only when the provider offers RP-initiated logout (its ``id_token_hint``).
    id_token: str | None = None
    #: What the user may do (:mod:`.roles`), fixed at sign-in.
    roles: tuple[str, ...] = ()


class Marks:
    """Ids marked until a time (spent sign-in states, ended sessions), in this process.

    Bounded: expired marks are forgotten, and past ``capacity`` live marks the one expiring
    first is dropped (and a warning logged), so that no flood of sign-ins can exhaust memory.
    Each worker process has its own; :class:`SharedMarks` is used when the service has a
    shared store."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._until: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def _sweep(self, now: float) -> None:
        while self._heap and (self._heap[0][0] < now or len(self._until) > self.capacity):
            until, key = heapq.heappop(self._heap)
            if self._until.get(key) == until:
                del self._until[key]
                if until >= now:
                    log.warning("more than %d sign-in marks are live; the one expiring first was dropped", self.capacity)

    def mark(self, key: str, until: float) -> bool:
        """Mark ``key`` until ``until`` (epoch seconds); False if it was already marked."""
        with self._lock:
            now = time.time()
            self._sweep(now)
            if key in self._until:
                return False
            self._until[key] = until
            heapq.heappush(self._heap, (until, key))
            self._sweep(now)
            return True

    def marked(self, key: str) -> bool:
        with self._lock:
            until = self._until.get(key)
            return until is not None and until >= time.time()


class SharedMarks:
    """Marks kept in the service's shared token replay cache (``replay_cache``: a SQLite file for the
    workers of one machine, PostgreSQL for several instances), so every worker sees them."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache

    def mark(self, key: str, until: float) -> bool:
        return not self._cache.seen(key, until)

    def marked(self, key: str) -> bool:
        # ``seen`` records a new id until the time given: a time already past records nothing that lasts.
        return bool(self._cache.seen(key, time.time() - 1))


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
        try:  # a cookie or state with a byte that is no ASCII is simply not ours: "not signed in", never a 500
            expected = hmac.new(self.secret, body.encode("ascii"), hashlib.sha256).digest()
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
    oidc: OidcClient | None = None
    secure_cookies: bool = False
    session_seconds: int = SESSION_SECONDS
    marks: Any = field(default_factory=Marks)
    roles: RolePolicy = field(default_factory=RolePolicy)
    embedded: bool = False
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
            return Session("insecure-no-auth", time.time() + self.session_seconds, self._insecure_csrf(), roles=ROLES)
        payload = self.signer.unsign(cookies.get(COOKIE))
        if payload is None or not all(isinstance(payload.get(k), str) for k in ("sub", "csrf", "sid")):
            return None
        try:
            if self.marks.marked(f"ui-session|{payload['sid']}"):
                return None
        except Exception as exc:  # noqa: BLE001 - a shared store that fails lets nobody in
            log.error("the web app's session store failed: %r", exc)
            return None
        id_token = payload.get("idt")
        roles = payload.get("roles")
        roles = tuple(r for r in ROLES if isinstance(roles, list) and r in roles)
        return Session(payload["sub"], payload["exp"], payload["csrf"], payload["sid"],
                       id_token if isinstance(id_token, str) else None, roles)

    def end_session(self, session: Session) -> None:
        """Sign-out: the session id is refused from now until the session would have expired."""
        if session.sid:
            self.marks.mark(f"ui-session|{session.sid}", session.exp + 60)

    def _insecure_csrf(self) -> str:
        return _b64(hmac.new(self.signer.secret, b"insecure-csrf", hashlib.sha256).digest())

    def new_session_cookie(self, sub: str, id_token: str | None = None, roles: tuple[str, ...] = ROLES) -> str:
        """The cookie value of a new session for ``sub`` with ``roles`` (signed: a browser cannot add one), keeping
        ``id_token`` (for sign-out at the provider) unless that would make the cookie too big for browsers."""
        payload = {"sub": sub, "exp": time.time() + self.session_seconds, "csrf": secrets.token_urlsafe(24),
                   "sid": secrets.token_urlsafe(16), "roles": list(roles)}
        plain = self.signer.sign(payload)
        if id_token is None:
            return plain
        with_token = self.signer.sign({**payload, "idt": id_token})
        if len(COOKIE) + len(with_token) <= MAX_COOKIE_BYTES:
            return with_token
        log.warning("the ID token (%d characters) is too big to keep in the session cookie: signing out at the "
                    "identity provider will send client_id without id_token_hint", len(id_token))
        return plain

    def end_session_url(self, session: Session, post_logout_redirect_uri: str | None) -> str | None:
        """Where the browser goes next to sign out at the identity provider too (None: the provider offers no
        RP-initiated logout, or it cannot be reached now; the local sign-out stands either way)."""
        if self.mode != "oidc" or self.oidc is None:
            return None
        return self.oidc.end_session_url(id_token=session.id_token, post_logout_redirect_uri=post_logout_redirect_uri)

    def cookie_options(self) -> dict[str, Any]:
        """Attributes of the session cookie."""
        # Embedded in the EHR (ui.frame_ancestors, over https) the app is a cross-site frame, where browsers send
        # only SameSite=None cookies; the CSRF token and the Origin check still guard every POST.
        same_site = "none" if self.embedded and self.secure_cookies else "strict"
        return {"httponly": True, "samesite": same_site, "path": "/ui", "secure": self.secure_cookies,
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
    def _derived(self, purpose: str, sign_in_id: str) -> str:
        """A per-sign-in secret (nonce, PKCE verifier) that only holders of the app's secret can compute."""
        return _b64(hmac.new(self.signer.secret, f"{purpose}|{sign_in_id}".encode(), hashlib.sha256).digest())

    def begin_sign_in(self, redirect_uri: str) -> tuple[str, str]:
        """The provider's URL to send the browser to, and the value of :data:`SIGN_IN_COOKIE`.

        :class:`ProviderUnavailable` when the provider's discovery document cannot be had."""
        client = self._provider()
        sign_in_id = secrets.token_urlsafe(16)
        exp = time.time() + SIGN_IN_SECONDS
        state = self.signer.sign({"purpose": "oidc-state", "id": sign_in_id, "exp": exp})
        browser = self.signer.sign({"purpose": "oidc-browser", "id": sign_in_id, "exp": exp})
        verifier = self._derived("pkce", sign_in_id)
        challenge = _b64(hashlib.sha256(verifier.encode("ascii")).digest())
        url = client.authorization_url(redirect_uri, state=state, nonce=self._derived("nonce", sign_in_id),
                                       code_challenge=challenge)
        return url, browser

    def finish_sign_in(self, params: Mapping[str, str], browser: str | None, redirect_uri: str) -> tuple[str, str | None, tuple[str, ...]]:
        """Check the provider's answer (query of the callback) and the browser's sign-in cookie, spend
        the state, exchange the code, check the ID token; ``iss|sub`` of the user, and the ID token when
        the provider offers RP-initiated logout (the session keeps it as the ``id_token_hint``).

        :class:`SignInRefused` (401) or :class:`ProviderUnavailable` (502) otherwise."""
        client = self._provider()
        if params.get("error"):
            described = params.get("error_description") or ""
            raise SignInRefused(f"the identity provider did not sign you in: {params['error'][:100]}"
                                + (f" ({described[:200]})" if described else ""))
        state = self.signer.unsign(params.get("state"))
        if state is None or state.get("purpose") != "oidc-state" or not isinstance(state.get("id"), str):
            raise SignInRefused("the sign-in state is missing, forged or expired; sign in again")
        cookie = self.signer.unsign(browser)
        if cookie is None or cookie.get("purpose") != "oidc-browser" or not hmac.compare_digest(
                str(cookie.get("id")).encode(), state["id"].encode()):
            raise SignInRefused("this sign-in was not started in this browser (or took longer than "
                                f"{SIGN_IN_SECONDS // 60} minutes); sign in again")
        if params.get("iss") is not None and params["iss"] != client.settings.issuer:  # RFC 9207
            raise SignInRefused(f"the answer comes from issuer {params['iss'][:200]!r}, not the configured one")
        try:
            fresh = self.marks.mark(f"ui-state|{state['id']}", float(state["exp"]) + 60)
        except Exception as exc:  # noqa: BLE001 - a shared store that fails accepts nothing
            raise ProviderUnavailable(f"the sign-in store is unavailable ({type(exc).__name__})") from exc
        if not fresh:
            raise SignInRefused("this sign-in answer was already used; sign in again")
        code = params.get("code")
        if not code:
            raise SignInRefused("the identity provider's answer holds no code")
        tokens = client.exchange(code, redirect_uri, self._derived("pkce", state["id"]))
        claims = client.verify_id_token(tokens["id_token"], nonce=self._derived("nonce", state["id"]),
                                        access_token=tokens.get("access_token"))
        keep = tokens["id_token"] if client.end_session_endpoint() is not None else None
        user = f"{claims['iss']}|{claims['sub']}"
        return user, keep, self.roles.roles_of(user, claims)

    def sign_in_cookie_options(self) -> dict[str, Any]:
        """Attributes of :data:`SIGN_IN_COOKIE`."""
        return {"httponly": True, "samesite": "lax", "path": "/ui/login", "secure": self.secure_cookies,
                "max_age": SIGN_IN_SECONDS}

    def _provider(self) -> OidcClient:
        if self.oidc is None:
            raise SignInRefused("no identity provider is configured (config 'ui.oidc')")
        return self.oidc

    # -- CSRF -----------------------------------------------------------------
    @staticmethod
    def csrf_ok(session: Session, offered: str | None, origin: str | None, own_origin: str) -> bool:
        """The request carries this session's CSRF token and, if it names one, our own origin."""
        if origin is not None and origin != own_origin:
            return False
        if not offered:
            return False
        return hmac.compare_digest(offered.encode("utf-8"), session.csrf.encode("utf-8"))
