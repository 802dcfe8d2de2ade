"""CDS Hooks bearer-token checks: trusted issuer, its key (given, or from its JWKS), algorithm, typ,
aud, exp, iat, lifetime, and no replay. Every failure is an :class:`AuthError` with a reason (a 401):
whatever a token holds, checking it never raises anything else.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from . import outbound
from .config import Config, Issuer, JwksSettings
from pressor.engine.audit.replay_cache import MemoryReplayCache, ReplayCache

log = logging.getLogger("pressor.serve")

#: The key type and, for EC, the curve each accepted algorithm needs.
_KEY_FOR_ALG: dict[str, tuple[type, str | None]] = {
    "RS256": (rsa.RSAPublicKey, None), "RS384": (rsa.RSAPublicKey, None), "RS512": (rsa.RSAPublicKey, None),
    "PS256": (rsa.RSAPublicKey, None), "PS384": (rsa.RSAPublicKey, None), "PS512": (rsa.RSAPublicKey, None),
    "ES256": (ec.EllipticCurvePublicKey, "secp256r1"), "ES384": (ec.EllipticCurvePublicKey, "secp384r1"),
    "ES512": (ec.EllipticCurvePublicKey, "secp521r1"),
}


class AuthError(Exception):
    """A request without a valid CDS Hooks JWT (401); the message says why."""

    def __init__(self, reason: str, *, iss: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.iss = iss if isinstance(iss, str) else None


class KeySetUnavailable(AuthError):
    """A key set that has never been fetched could not be fetched now (the keys' owner is down)."""


class KeySet:
    """One published JWKS: fetched on first use, kept ``cache_s``, fetched again for an unknown kid
    at most every ``min_refetch_s`` (so forged kids cannot make us hammer the issuer).

    ``fetch`` (optional) reads the set's JSON from ``url`` where the caller must narrow where it may go (the
    web app's OpenID Connect provider: only its own hosts); it signals failure with ``ValueError``,
    ``OSError`` or :class:`~pressor.service.outbound.Unreachable`. Without it the set is read by
    :func:`~pressor.service.outbound.get_json_object`: https (http to the loopback only), no redirects
    followed, ``timeout_s``, at most 1 MB."""

    def __init__(self, url: str, settings: JwksSettings, fetch: Callable[[str], Any] | None = None) -> None:
        self.url = url
        self._settings = settings
        self._read = fetch or (lambda u: outbound.get_json_object(u, timeout_s=settings.timeout_s))
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = threading.Lock()

    def key(self, kid: str) -> Any:
        """The public key named ``kid``; :class:`AuthError` if the set has none (after one allowed refetch)."""
        with self._lock:
            now = time.monotonic()
            stale = self._fetched_at is None or now - self._fetched_at > self._settings.cache_s
            if stale or (kid not in self._keys and self._may_refetch(now)):
                self._fetch(now)
            if kid not in self._keys:
                raise AuthError(f"unknown key id {kid!r} in the key set {self.url}")
            return self._keys[kid]

    def _may_refetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self._settings.min_refetch_s

    def _fetch(self, now: float) -> None:
        if not self._may_refetch(now):  # a failed attempt just now: do not hammer the issuer
            if self._fetched_at is None:
                raise KeySetUnavailable(f"the key set {self.url} could not be fetched (next try within "
                                f"{self._settings.min_refetch_s:g} s)")
            return
        self._attempted_at = now
        try:
            jwk_set = jwt.PyJWKSet.from_dict(self._read(self.url))
        except (jwt.PyJWTError, ValueError, TypeError, OSError, outbound.Unreachable) as exc:
            log.warning("key set %s could not be fetched: %s", self.url, exc)
            if self._fetched_at is None:
                raise KeySetUnavailable(f"the key set {self.url} could not be fetched: {exc}") from exc
            return  # keep serving the keys we had
        keys = {}
        for jwk in jwk_set.keys:
            if jwk.key_id and hasattr(jwk.key, "public_numbers") and not hasattr(jwk.key, "private_bytes"):
                keys[jwk.key_id] = jwk.key
        self._keys = keys
        self._fetched_at = now


class Verifier:
    """Checks CDS Hooks bearer JWTs against the configured issuers."""

    def __init__(self, config: Config, replay: ReplayCache) -> None:
        self.config = config
        self.replay = replay
        self._key_sets: dict[str, KeySet] = {}
        self._lock = threading.Lock()
        #: Whether checking a token may wait on I/O (a key set to fetch, a shared replay cache): then it belongs
        #: in a thread, not on the event loop.
        self.may_block = (any(i.jwks_url or i.jku for i in config.issuers.values())
                          or not isinstance(replay, MemoryReplayCache))

    def verify(self, authorization: str | None, audiences: list[str]) -> dict[str, Any]:
        """The token's claims; :class:`AuthError` saying why not. Never raises anything else."""
        try:
            return self._verify(authorization, audiences)
        except AuthError:
            raise
        except Exception as exc:  # a token shape nobody foresaw must still be a 401, never a 500
            log.warning("token refused by an unexpected check failure: %r", exc)
            raise AuthError(f"invalid token ({type(exc).__name__})") from exc

    def _verify(self, authorization: str | None, audiences: list[str]) -> dict[str, Any]:
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError("missing bearer token (Authorization: Bearer <JWT>)")
        token = authorization[len("Bearer "):].strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from exc
        iss = unverified.get("iss")
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise AuthError(f"token type {typ!r} is not JWT", iss=iss)
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            raise AuthError(f"algorithm {alg!r} is not accepted (accepted: {', '.join(self.config.algorithms)})", iss=iss)
        issuer = self.config.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError(f"issuer {iss!r} is not trusted", iss=iss)
        if not isinstance(kid, str) or not kid:
            raise AuthError("the token header names no key (kid)", iss=iss)
        key = self._key(issuer, kid, header.get("jku"))
        _check_key_fits(key, alg, kid, iss)
        try:
            claims = jwt.decode(token, key, algorithms=[alg], audience=audiences, issuer=iss,
                                leeway=self.config.clock_skew_s, options={"require": ["iss", "aud", "exp", "iat", "jti"]})
        except jwt.InvalidAudienceError as exc:
            raise AuthError(f"wrong audience: the token must be for {audiences[0]}", iss=iss) from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}", iss=iss) from exc
        now = time.time()
        iat, exp, jti = claims["iat"], claims["exp"], claims["jti"]
        if iat > now + self.config.clock_skew_s:
            raise AuthError("token issued in the future (iat)", iss=iss)
        if exp - iat > self.config.max_token_lifetime_s:
            raise AuthError(f"token lifetime exp - iat is over {self.config.max_token_lifetime_s} s", iss=iss)
        if not isinstance(jti, str) or not jti:
            raise AuthError("token has no jti", iss=iss)
        try:  # kept until exp plus the clock skew: a token is refused as replayed for as long as it could be accepted
            replayed = self.replay.seen(f"{iss}|{jti}", float(exp) + self.config.clock_skew_s)
        except Exception as exc:  # a shared cache that fails accepts nothing
            log.error("the token replay cache failed: %r", exc)
            raise AuthError(f"the token replay cache is unavailable ({type(exc).__name__})", iss=iss) from exc
        if replayed:
            raise AuthError("token replayed (jti already used)", iss=iss)
        return claims

    def _key(self, issuer: Issuer, kid: str, jku: Any) -> Any:
        """The key ``kid`` of this issuer: from the allowed ``jku``, else configured, else its JWKS URL."""
        if isinstance(jku, str) and jku in issuer.jku:
            return self._key_set(jku).key(kid)
        if kid in issuer.keys:
            return issuer.keys[kid]
        if issuer.jwks_url:
            return self._key_set(issuer.jwks_url).key(kid)
        if jku is not None:
            raise AuthError(f"jku {jku!r} is not on the allowlist of issuer {issuer.iss!r}", iss=issuer.iss)
        raise AuthError(f"unknown key id {kid!r} for issuer {issuer.iss!r}", iss=issuer.iss)

    def _key_set(self, url: str) -> KeySet:
        with self._lock:
            if url not in self._key_sets:
                self._key_sets[url] = KeySet(url, self.config.jwks)
            return self._key_sets[url]


def _check_key_fits(key: Any, alg: str, kid: str, iss: str | None) -> None:
    """Refuse a header whose algorithm does not fit the key it names (RS384 with an EC key, ES256 with P-384)."""
    kind, curve = _KEY_FOR_ALG.get(alg, (None, None))
    if kind is None or not isinstance(key, kind) or (curve and not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == curve)):
        have = f"EC {key.curve.name}" if isinstance(key, ec.EllipticCurvePublicKey) else (
            "RSA" if isinstance(key, rsa.RSAPublicKey) else type(key).__name__)
        raise AuthError(f"algorithm {alg} does not fit key {kid!r} ({have})", iss=iss)


def client_of(claims: dict[str, Any]) -> str:
    """Who calls, for the logs and the audit log: ``iss``, and ``|sub`` when the token has one."""
    sub = claims.get("sub")
    return f"{claims['iss']}|{sub}" if isinstance(sub, str) and sub else claims["iss"]
