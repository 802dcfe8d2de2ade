"""OpenID Connect for the served web app: the provider's discovery document and keys, the
authorization request (code flow, PKCE S256), the code exchange at the token endpoint, the
ID token's checks, and the end-session URL of RP-initiated logout.

Outbound requests go only to the configured issuer's host (and the hosts of endpoints the
configuration names explicitly), over https (plain http only to 127.0.0.1/localhost), without
following redirects, with a time-out and a size limit. The provider's signing keys are held by
the service's :class:`~pressor.service.auth.KeySet` (cached, fetched again for an unknown ``kid`` at
most every ``min_refetch_s``), as for CDS Hooks issuers.

Two kinds of failure: :class:`SignInRefused` (the answer says no, or a check fails: 401) and
:class:`ProviderUnavailable` (the provider is down, slow, or answers garbage: 502).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import quote_plus, urlencode, urlsplit

from pressor.service import outbound
from pressor.service.auth import AuthError, KeySet, KeySetUnavailable, _check_key_fits
from pressor.service.config import JwksSettings

log = logging.getLogger("pressor.serve.ui")

#: ID token algorithms accepted unless the configuration narrows them (never ``none`` or HMAC).
DEFAULT_ALGORITHMS = ("RS256", "ES256", "RS384", "ES384", "PS256", "PS384")
AUTH_METHODS = ("client_secret_basic", "client_secret_post")
DISCOVERY_PATH = "/.well-known/openid-configuration"
_PROVIDER_HOSTS = "the identity provider's hosts"


class SignInRefused(Exception):
    """The sign-in is refused (401); the message says why and is shown to the user."""


class ProviderUnavailable(Exception):
    """The identity provider could not be used: unreachable, too slow, or an answer that makes no sense (502)."""


def url_problem(url: str, hosts: frozenset[str] | None = None) -> str | None:
    """Why ``url`` may not be called (None when it may): https, or http to the loopback; a host from ``hosts``."""
    return outbound.url_problem(url, hosts, whose=_PROVIDER_HOSTS)


@dataclass(frozen=True)
class OidcSettings:
    """The ``ui.oidc`` section of the service configuration, with the client secret already read."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    auth_method: str = "client_secret_basic"
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    jwks_uri: str | None = None
    scope: str = "openid profile"
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    clock_skew_s: int = 60
    timeout_s: float = 5.0
    discovery_cache_s: float = 3600.0
    jwks: JwksSettings = field(default_factory=JwksSettings)


class OidcClient:
    """This app as a confidential client of one OpenID Connect provider."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        explicit = [u for u in (settings.authorization_endpoint, settings.token_endpoint, settings.jwks_uri) if u]
        self.hosts = frozenset(urlsplit(u).hostname or "" for u in [settings.issuer, *explicit])
        for url in [settings.issuer, *explicit]:
            problem = url_problem(url)
            if problem:
                raise ValueError(problem)
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._attempted_at: float | None = None
        self._keys: KeySet | None = None
        self._lock = threading.Lock()

    # -- outbound HTTP ----------------------------------------------------------
    def _request(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        """Status and JSON body of one request to the provider; :class:`ProviderUnavailable` if none came."""
        try:
            status, data, _ = outbound.request_json(method, url, timeout_s=self.settings.timeout_s, hosts=self.hosts,
                                                    whose=_PROVIDER_HOSTS, **kwargs)
        except outbound.Unreachable as exc:
            raise ProviderUnavailable(str(exc)) from exc
        return status, data

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            return outbound.get_json_object(url, timeout_s=self.settings.timeout_s, hosts=self.hosts, whose=_PROVIDER_HOSTS)
        except outbound.Unreachable as exc:
            raise ProviderUnavailable(str(exc)) from exc

    # -- discovery and keys -------------------------------------------------------
    def endpoints(self) -> dict[str, str]:
        """``authorization_endpoint``, ``token_endpoint`` and ``jwks_uri``: configured, else discovered."""
        s = self.settings
        given = {"authorization_endpoint": s.authorization_endpoint, "token_endpoint": s.token_endpoint,
                 "jwks_uri": s.jwks_uri}
        configured = {name: value for name, value in given.items() if value}
        if len(configured) == len(given):
            return configured
        metadata = self._discovered()
        return {name: value or metadata[name] for name, value in given.items()}

    def _discovered(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            metadata = self._metadata
            fresh = now - self._metadata_at < self.settings.discovery_cache_s
            recently_tried = self._attempted_at is not None and now - self._attempted_at < self.settings.jwks.min_refetch_s
            if metadata is not None and (fresh or recently_tried):
                return metadata
            self._attempted_at = now
            url = self.settings.issuer.rstrip("/") + DISCOVERY_PATH
            try:
                metadata = self._get_json(url)
                if metadata.get("issuer") != self.settings.issuer:
                    raise ProviderUnavailable(f"{url} names the issuer {metadata.get('issuer')!r}, not the configured "
                                              f"{self.settings.issuer!r} (they must be equal, character for character)")
                self._check_endpoints(metadata)
            except ProviderUnavailable as exc:
                if self._metadata is None:
                    raise
                log.warning("the identity provider's discovery document could not be refreshed: %s", exc)
                return self._metadata  # keep what we had
            self._metadata, self._metadata_at = metadata, now
            return metadata

    def _check_endpoints(self, metadata: dict[str, Any]) -> None:
        """The discovered endpoints this app will use: present, and on the provider's hosts."""
        s = self.settings
        for name, given in (("authorization_endpoint", s.authorization_endpoint), ("token_endpoint", s.token_endpoint),
                            ("jwks_uri", s.jwks_uri)):
            if given:
                continue
            value = metadata.get(name)
            if not isinstance(value, str):
                raise ProviderUnavailable(f"the provider's discovery document has no {name}")
            problem = url_problem(value, self.hosts)
            if problem:
                raise ProviderUnavailable(f"discovered {name}: {problem}; set it in ui.oidc if it is right")

    def _key(self, kid: str) -> Any:
        if self._keys is None:
            jwks_uri = self.endpoints()["jwks_uri"]
            with self._lock:
                if self._keys is None:
                    self._keys = KeySet(jwks_uri, self.settings.jwks, fetch=self._read_key_set)
        try:
            return self._keys.key(kid)
        except KeySetUnavailable as exc:
            raise ProviderUnavailable(exc.reason) from exc
        except AuthError as exc:
            raise SignInRefused(f"ID token refused: {exc.reason}") from exc

    def _read_key_set(self, url: str) -> Any:
        try:
            return self._get_json(url)
        except ProviderUnavailable as exc:  # KeySet keeps the keys it has on ValueError
            raise ValueError(str(exc)) from exc

    def end_session_endpoint(self) -> str | None:
        """The provider's ``end_session_endpoint`` (RP-initiated logout) when its discovery document has a usable
        one (on its hosts, https); None otherwise, or when the document cannot be had now (logged). With every
        endpoint configured in ``ui.oidc`` discovery is not used, and neither is RP-initiated logout."""
        s = self.settings
        if s.authorization_endpoint and s.token_endpoint and s.jwks_uri:
            return None
        try:
            value = self._discovered().get("end_session_endpoint")
        except ProviderUnavailable as exc:
            log.warning("sign-out: the identity provider's discovery document cannot be had (%s); "
                        "signed out of pressor only", exc)
            return None
        if value is None:
            return None
        problem = url_problem(value, self.hosts) if isinstance(value, str) else f"{value!r} is not a URL"
        if problem is None and any(c in value for c in "'\"<>\\ \t\r\n"):
            problem = f"{value!r} holds quotes, angle brackets or white space"
        if problem:
            log.warning("sign-out: the identity provider's end_session_endpoint is not used (%s); "
                        "signed out of pressor only", problem)
            return None
        return value

    def end_session_url(self, *, id_token: str | None, post_logout_redirect_uri: str | None) -> str | None:
        """Where the browser goes to sign out at the provider too (OpenID Connect RP-Initiated Logout 1.0):
        ``end_session_endpoint`` with ``id_token_hint`` (when the session kept the ID token), ``client_id`` and
        ``post_logout_redirect_uri`` when given; None when the provider has no usable endpoint."""
        endpoint = self.end_session_endpoint()
        if endpoint is None:
            return None
        query = {"id_token_hint": id_token} if id_token else {}
        query["client_id"] = self.settings.client_id  # lets the provider check the redirect even without the hint
        if post_logout_redirect_uri:
            query["post_logout_redirect_uri"] = post_logout_redirect_uri
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"

    # -- the flow -------------------------------------------------------------------
    def authorization_url(self, redirect_uri: str, *, state: str, nonce: str, code_challenge: str) -> str:
        """Where the browser goes to sign in: an authorization code request with PKCE (S256)."""
        endpoint = self.endpoints()["authorization_endpoint"]
        query = urlencode({"response_type": "code", "client_id": self.settings.client_id, "redirect_uri": redirect_uri,
                           "scope": self.settings.scope, "state": state, "nonce": nonce,
                           "code_challenge": code_challenge, "code_challenge_method": "S256"})
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def exchange(self, code: str, redirect_uri: str, code_verifier: str) -> dict[str, Any]:
        """The token response for ``code`` (client authenticated as configured)."""
        s = self.settings
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": code_verifier}
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if s.auth_method == "client_secret_post":
            form.update(client_id=s.client_id, client_secret=s.client_secret)
        else:  # RFC 6749 2.3.1: each part form-urlencoded, then Basic
            pair = f"{quote_plus(s.client_id)}:{quote_plus(s.client_secret)}".encode("utf-8")
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        url = self.endpoints()["token_endpoint"]
        status, data = self._request("POST", url, content=urlencode(form).encode("ascii"), headers=headers)
        if status in (400, 401) and isinstance(data, dict) and isinstance(data.get("error"), str):
            described = data.get("error_description")
            raise SignInRefused("the identity provider refused the sign-in code: " + data["error"][:100]
                                + (f" ({described[:200]})" if isinstance(described, str) and described else ""))
        if status != 200:
            raise ProviderUnavailable(f"the token endpoint answered HTTP {status}")
        if not isinstance(data, dict):
            raise ProviderUnavailable("the token endpoint answered something that is not a JSON token response")
        if not isinstance(data.get("id_token"), str):
            raise ProviderUnavailable("the token endpoint's answer holds no id_token")
        return data

    def verify_id_token(self, id_token: str, *, nonce: str, access_token: Any = None) -> dict[str, Any]:
        """The ID token's claims once its signature, iss, aud, azp, exp, iat, nonce and at_hash are checked."""
        import jwt

        s = self.settings
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise ProviderUnavailable(f"the ID token is malformed ({exc})") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in s.algorithms:
            raise SignInRefused(f"ID token algorithm {alg!r} is not accepted (accepted: {', '.join(s.algorithms)})")
        if not isinstance(kid, str) or not kid:
            raise SignInRefused("the ID token names no key (kid)")
        key = self._key(kid)
        try:
            _check_key_fits(key, alg, kid, s.issuer)
        except AuthError as exc:
            raise SignInRefused(f"ID token refused: {exc.reason}") from exc
        try:
            claims = jwt.decode(id_token, key, algorithms=[alg], audience=s.client_id, issuer=s.issuer,
                                leeway=s.clock_skew_s, options={"require": ["iss", "sub", "aud", "exp", "iat", "nonce"]})
        except jwt.PyJWTError as exc:
            raise SignInRefused(f"ID token refused: {exc}") from exc
        if not isinstance(claims["iat"], (int, float)) or claims["iat"] > time.time() + s.clock_skew_s:
            raise SignInRefused("ID token refused: issued in the future (iat)")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != s.client_id:
            raise SignInRefused("ID token refused: several audiences and azp is not this client")
        if not isinstance(claims["nonce"], str) or not hmac.compare_digest(claims["nonce"].encode(), nonce.encode()):
            raise SignInRefused("ID token refused: its nonce does not belong to this sign-in")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise SignInRefused("ID token refused: no subject (sub)")
        if "at_hash" in claims and isinstance(access_token, str):
            if not hmac.compare_digest(str(claims["at_hash"]).encode(), token_hash(access_token, alg).encode()):
                raise SignInRefused("ID token refused: at_hash does not match the access token")
        return claims


def token_hash(value: str, alg: str) -> str:
    """OpenID Connect's ``at_hash``/``c_hash``: the left half of the hash named by ``alg``, base64url."""
    digest = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}[alg[-3:]](value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


def settings_from_config(section: Mapping[str, Any], *, config_dir: str | None, clock_skew_s: int,
                         jwks: JwksSettings, environ: Mapping[str, str]) -> OidcSettings:
    """The ``ui.oidc`` section (schema-checked) with its client secret read; ``ValueError`` saying why not."""
    from pathlib import Path

    if "client_secret_env" in section:
        name = section["client_secret_env"]
        secret = environ.get(name, "")
        if not secret:
            raise ValueError(f"ui.oidc.client_secret_env: the environment variable {name} is not set (or empty)")
    else:
        path = Path(section["client_secret_file"])
        if not path.is_absolute() and config_dir:
            path = Path(config_dir) / path
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"ui.oidc.client_secret_file: {path} cannot be read ({exc.strerror})") from exc
        if not secret:
            raise ValueError(f"ui.oidc.client_secret_file: {path} is empty")
    settings = OidcSettings(
        issuer=section["issuer"], client_id=section["client_id"], client_secret=secret,
        auth_method=section.get("token_endpoint_auth_method", "client_secret_basic"),
        authorization_endpoint=section.get("authorization_endpoint"), token_endpoint=section.get("token_endpoint"),
        jwks_uri=section.get("jwks_uri"), scope=section.get("scope", "openid profile"),
        algorithms=tuple(section.get("algorithms", DEFAULT_ALGORITHMS)), clock_skew_s=clock_skew_s,
        timeout_s=float(section.get("timeout_s", 5.0)), jwks=jwks)
    OidcClient(settings)  # the URLs are usable (https, or loopback http)
    return settings
