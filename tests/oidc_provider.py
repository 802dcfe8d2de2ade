"""A small OpenID Connect provider for the web app's tests, on 127.0.0.1 (a port the OS picks), over
real HTTP (``http.server`` in a thread of the test process).

It serves discovery (``/.well-known/openid-configuration``), its key set (``/jwks``), an authorization
endpoint that signs the user in at once and redirects back with a code (or an ``error``), and a token
endpoint that checks the client's secret (``client_secret_basic`` or ``client_secret_post``), the
code (single use, for the same client and redirect URI) and PKCE (``S256``: the verifier must hash to
the challenge of the authorization request) before it issues an ID token signed with a key generated
here. Tests change what it does through attributes: ``token_mode`` ("ok", "slow", "drop", "garbage",
"500"), ``deny`` (an error to answer the authorization request with), ``claims`` (overrides of the ID
token's claims), ``rotate()`` (a new signing key), ``discovery_issuer``, ``end_session`` (publish an
``end_session_endpoint``, ``/logout``: RP-initiated logout, which checks that ``id_token_hint`` is an ID
token it issued to this client (expired or not), that ``client_id`` is this client, and that
``post_logout_redirect_uri`` is one of ``post_logout_redirect_uris`` before redirecting there).
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class FakeOidcProvider:
    def __init__(self, client_id: str, client_secret: str, *, auth_method: str = "client_secret_basic",
                 host_name: str = "127.0.0.1") -> None:
        self.client_id, self.client_secret, self.auth_method = client_id, client_secret, auth_method
        self.keys: dict[str, Any] = {}
        self.published: list[str] = []
        self.signing_kid = ""
        self.rotate()
        self.codes: dict[str, dict[str, Any]] = {}
        self.used_codes: set[str] = set()
        self.requests: list[dict[str, Any]] = []
        self.token_mode = "ok"
        self.deny: str | None = None
        self.claims: dict[str, Any] = {}
        self.subject = "dr.lee"
        self.discovery_issuer: str | None = None
        self.end_session = False
        self.post_logout_redirect_uris: set[str] = set()
        self.issued: list[str] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # host_name "localhost" makes the provider another site than an app on 127.0.0.1 (for a browser)
        self.issuer = f"http://{host_name}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "FakeOidcProvider":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.token_mode, self.deny, self.claims, self.discovery_issuer = "ok", None, {}, None
            self.end_session = False
            self.post_logout_redirect_uris.clear()
            self.requests.clear()

    def rotate(self, publish: bool = True) -> str:
        """A new signing key (P-256, ES256), published in the key set unless ``publish`` is False."""
        kid = f"key-{len(self.keys) + 1}-{secrets.token_hex(4)}"
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        if publish:
            self.published.append(kid)
        self.signing_kid = kid
        return kid

    def paths(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    # -- what it answers ----------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        logout = {"end_session_endpoint": f"{self.issuer}/logout"} if self.end_session else {}
        return {**logout, "issuer": self.discovery_issuer or self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"], "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"]}

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.keys[kid].public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "ES256"})
        return {"keys": keys}

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        redirect = query.get("redirect_uri", "")
        problems = [name for name, ok in (
            ("response_type", query.get("response_type") == "code"), ("client_id", query.get("client_id") == self.client_id),
            ("code_challenge_method", query.get("code_challenge_method") == "S256"),
            ("code_challenge", len(query.get("code_challenge", "")) == 43), ("nonce", bool(query.get("nonce"))),
            ("scope", "openid" in query.get("scope", "").split()), ("redirect_uri", redirect.startswith("http"))) if not ok]
        if problems:
            return 400, {"Content-Type": "text/plain"}, f"bad authorization request: {problems}".encode()
        back = {"state": query.get("state", "")}
        if self.deny:
            back.update(error=self.deny, error_description="The user declined to sign in")
        else:
            code = secrets.token_urlsafe(24)
            with self.lock:
                self.codes[code] = {"challenge": query["code_challenge"], "nonce": query["nonce"], "redirect_uri": redirect,
                                    "client_id": query["client_id"], "at": time.time()}
            back["code"] = code
        sep = "&" if "?" in redirect else "?"
        return 302, {"Location": f"{redirect}{sep}{urlencode(back)}"}, b""

    def logout(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        hint = query.get("id_token_hint")
        if hint is not None:
            try:
                kid = jwt.get_unverified_header(hint)["kid"]
                jwt.decode(hint, self.keys[kid].public_key(), algorithms=["ES256"], audience=self.client_id,
                           issuer=self.issuer, options={"verify_exp": False})
            except (jwt.PyJWTError, KeyError) as exc:
                return 400, {"Content-Type": "text/plain"}, f"bad id_token_hint: {exc}".encode()
        if query.get("client_id", self.client_id) != self.client_id:
            return 400, {"Content-Type": "text/plain"}, b"unknown client_id"
        back = query.get("post_logout_redirect_uri")
        if back is None:
            return 200, {"Content-Type": "text/plain"}, b"signed out"
        if back not in self.post_logout_redirect_uris:
            return 400, {"Content-Type": "text/plain"}, b"post_logout_redirect_uri not registered"
        return 302, {"Location": back}, b""

    def token(self, headers: Any, form: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        mode = self.token_mode
        if mode == "slow":
            time.sleep(2.5)
        if mode == "garbage":
            return 200, {"Content-Type": "text/html"}, b"<html>maintenance</html>"
        if mode == "500":
            return 500, {"Content-Type": "application/json"}, b'{"error": "server_error"}'

        def refuse(error: str, status: int = 400) -> tuple[int, dict[str, str], bytes]:
            return status, {"Content-Type": "application/json"}, json.dumps(
                {"error": error, "error_description": f"refused by the fake provider ({error})"}).encode()

        basic = headers.get("Authorization", "")
        if self.auth_method == "client_secret_basic":
            if not basic.startswith("Basic "):
                return refuse("invalid_client", 401)
            user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
            if (unquote_plus(user), unquote_plus(password)) != (self.client_id, self.client_secret):
                return refuse("invalid_client", 401)
        elif basic or (form.get("client_id"), form.get("client_secret")) != (self.client_id, self.client_secret):
            return refuse("invalid_client", 401)
        code = form.get("code", "")
        with self.lock:
            grant = self.codes.pop(code, None)
            replayed = code in self.used_codes
            self.used_codes.add(code)
        if grant is None or replayed:
            return refuse("invalid_grant")
        if form.get("grant_type") != "authorization_code" or form.get("redirect_uri") != grant["redirect_uri"]:
            return refuse("invalid_grant")
        verifier = form.get("code_verifier", "")
        if not 43 <= len(verifier) <= 128 or _b64(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]:
            return refuse("invalid_grant")  # PKCE
        now = int(time.time())
        access_token = secrets.token_urlsafe(32)
        claims = {"iss": self.issuer, "sub": self.subject, "aud": self.client_id, "iat": now, "exp": now + 300,
                  "nonce": grant["nonce"], "at_hash": _b64(hashlib.sha256(access_token.encode()).digest()[:16]),
                  **self.claims}
        claims = {k: v for k, v in claims.items() if v is not None}
        id_token = jwt.encode(claims, self.keys[self.signing_kid], algorithm="ES256", headers={"kid": self.signing_kid})
        self.issued.append(id_token)
        if mode == "drop":
            raise ConnectionAbortedError("dropped on purpose")
        return 200, {"Content-Type": "application/json", "Cache-Control": "no-store"}, json.dumps(
            {"access_token": access_token, "token_type": "Bearer", "expires_in": 300, "id_token": id_token}).encode()

    # -- HTTP ---------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, data: Any) -> None:
                self._answer(200, {"Content-Type": "application/json"}, json.dumps(data).encode())

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                provider.requests.append({"path": parts.path, "query": query, "headers": dict(self.headers)})
                if parts.path == "/.well-known/openid-configuration":
                    self._json(provider.discovery())
                elif parts.path == "/jwks":
                    self._json(provider.jwks())
                elif parts.path == "/authorize":
                    self._answer(*provider.authorize(query))
                elif parts.path == "/logout" and provider.end_session:
                    self._answer(*provider.logout(query))
                else:
                    self._answer(404, {}, b"")

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                provider.requests.append({"path": parts.path, "form": form, "headers": dict(self.headers)})
                if parts.path != "/token":
                    self._answer(404, {}, b"")
                    return
                try:
                    self._answer(*provider.token(self.headers, form))
                except ConnectionAbortedError:
                    self.close_connection = True
                    self.connection.shutdown(2)

        return Handler
