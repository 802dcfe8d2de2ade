"""The one policy for every call this service makes to another party's server (FHIR fetch, published key
sets, the identity provider, SMART), and small bounded JSON requests.

The rules (issue 24): a URL is compared as scheme, host, port and path after normalisation (case of
scheme and host, a default port, a trailing slash), never as a string prefix; userinfo
(``https://ehr@attacker``), dot segments (``/fhir/../jwks``, also percent-encoded), backslashes and
control characters are refused outright; https, or plain http to the loopback only (127.0.0.1,
localhost, ::1); an allowlist entry admits its own host and port and the paths under its path, segment
by segment. Redirects are never followed (a 3xx is the answer, for the caller to refuse). A time-out;
a size limit on the answer, counted while it is inflated (a gzip bomb stops at the limit, not after);
JSON read strictly (no duplicate keys, no NaN, bounded nesting). FHIR fetching has its own client
(``fhir_fetch``: paging, concurrency) under the same rules.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Largest answer read (bytes): a discovery document, a key set or a token response is a few kB.
MAX_RESPONSE_BYTES = 1_000_000


class Unreachable(Exception):
    """No usable answer came: the URL is not allowed, the server is down or slow, or the answer is too big."""


#: Content codings the service asks for and can inflate under a limit.
ACCEPT_ENCODING = "gzip, deflate"


@dataclass(frozen=True)
class Target:
    """A URL as compared: lower-case scheme and host, the port (default filled in), the path without a trailing slash."""

    scheme: str
    host: str
    port: int
    path: str

    def covers(self, other: "Target") -> bool:
        """Whether ``other`` is this URL or under it: same scheme, host and port, and a path that is this one or
        continues it by whole segments (``/fhir`` covers ``/fhir/Patient`` but not ``/fhirx``)."""
        return (self.scheme, self.host, self.port) == (other.scheme, other.host, other.port) and (
            other.path == self.path or other.path.startswith(self.path + "/"))

    @property
    def origin(self) -> str:
        """``https://host[:port]`` (the port only when not the scheme's default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port == _DEFAULT_PORT[self.scheme] else f":{self.port}")


_DEFAULT_PORT = {"http": 80, "https": 443}
_DOT_SEGMENTS = (".", "..")


def target(url: str) -> Target:
    """``url`` as a :class:`Target`; :class:`Unreachable` saying why it may not be called at all."""
    if not isinstance(url, str) or any(ord(c) < 0x21 or c == "\\" or ord(c) == 0x7F for c in url):
        raise Unreachable(f"{str(url)[:200]!r} is not a URL (spaces, control characters or backslashes)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Unreachable(f"{url[:200]!r} is not a URL") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORT or not host:
        raise Unreachable(f"{url[:200]!r} is not an http(s) URL")
    if "@" in parts.netloc:
        raise Unreachable(f"{url[:200]!r} carries userinfo (user@host); refused: the host is what follows the '@'")
    segments = parts.path.split("/")
    if any(unquote(seg) in _DOT_SEGMENTS for seg in segments):
        raise Unreachable(f"{url[:200]!r} has a dot segment ('.' or '..') in its path; refused")
    if scheme == "http" and host not in LOOPBACK:
        raise Unreachable(f"{url[:200]!r} must use https (plain http only to 127.0.0.1 or localhost)")
    return Target(scheme, host, port if port is not None else _DEFAULT_PORT[scheme], parts.path.rstrip("/"))


def url_problem(url: str, hosts: frozenset[str] | None = None, *, whose: str = "the allowed hosts",
                within: tuple[str, ...] | None = None) -> str | None:
    """Why ``url`` may not be called (None when it may): :func:`target`'s rules; a host from ``hosts``; under one
    of the URLs ``within`` (scheme, host, port and path compared; both named ``whose`` in the reason)."""
    try:
        t = target(url)
    except Unreachable as exc:
        return str(exc)
    if hosts is not None and t.host not in hosts:
        return f"{url!r} is not on {whose} ({', '.join(sorted(hosts))})"
    if within is not None:
        allowed = []
        for entry in within:
            try:
                allowed.append(target(entry))
            except Unreachable:
                continue
        if not any(a.covers(t) for a in allowed):
            return f"{url!r} is not among {whose}"
    return None


#: Bytes inflated per step: small, so that no step holds more than this beside the body.
_STEP = 65536


class Inflater:
    """A response body read under ``limit`` bytes *after* inflating: gzip and deflate are inflated in bounded
    steps, so a small compressed answer that would inflate to gigabytes stops at the limit (issue 24)."""

    def __init__(self, encoding: str | None, limit: int, what: str) -> None:
        import zlib

        self.limit, self.what, self.size = limit, what, 0
        coding = (encoding or "identity").strip().lower()
        if coding in ("identity", ""):
            self._z = None
        elif coding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._z = zlib.decompressobj(zlib.MAX_WBITS)
        else:
            raise Unreachable(f"{what} came in content coding {coding!r}, which is not read (asked for {ACCEPT_ENCODING})")
        self.body = bytearray()

    def feed(self, raw: bytes) -> None:
        """Add raw (possibly compressed) bytes; :class:`Unreachable` once the inflated body passes the limit."""
        import zlib

        if self._z is None:
            self._add(raw)
            return
        data = raw
        try:
            while data:
                out = self._z.decompress(data, min(_STEP, self.limit - len(self.body) + 1))
                self._add(out)
                data = self._z.unconsumed_tail
        except zlib.error as exc:
            raise Unreachable(f"{self.what}: the compressed answer is corrupt ({exc})") from exc

    def _add(self, chunk: bytes) -> None:
        self.body += chunk
        if len(self.body) > self.limit:
            raise Unreachable(f"{self.what} answered more than {self.limit} bytes")


def request_json(method: str, url: str, *, timeout_s: float, hosts: frozenset[str] | None = None,
                 whose: str = "the allowed hosts", max_bytes: int = MAX_RESPONSE_BYTES,
                 **kwargs: Any) -> tuple[int, Any, str | None]:
    """Status, JSON body (None if the body is not JSON) and ``Location`` header of one request;
    :class:`Unreachable` saying why if no answer could be had within the rules (``hosts``, named ``whose``)."""
    import httpx

    problem = url_problem(url, hosts, whose=whose)
    if problem:
        raise Unreachable(problem)
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            with client.stream(method, url, headers={"Accept": "application/json", "Accept-Encoding": ACCEPT_ENCODING,
                                                     **kwargs.pop("headers", {})}, **kwargs) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise Unreachable(f"{url} answered more than {max_bytes} bytes ({declared})")
                inflater = Inflater(response.headers.get("content-encoding"), max_bytes, url)
                for chunk in response.iter_raw():
                    inflater.feed(chunk)
                body = inflater.body
                status, location = response.status_code, response.headers.get("location")
    except httpx.TimeoutException as exc:
        raise Unreachable(f"{url} did not answer within {timeout_s:g} s") from exc
    except httpx.HTTPError as exc:
        raise Unreachable(f"{url} could not be reached ({type(exc).__name__})") from exc
    from pressor.engine.errors import PressorError
    from pressor.engine.evaluation.load import loads_json

    try:
        return status, loads_json(body.decode("utf-8"), file=url), location
    except (PressorError, UnicodeDecodeError):
        return status, None, location


def get_json_object(url: str, *, timeout_s: float, hosts: frozenset[str] | None = None,
                    whose: str = "the allowed hosts") -> dict[str, Any]:
    """The JSON object at ``url`` (HTTP 200 only); :class:`Unreachable` saying why not (a redirect is refused,
    with where it pointed)."""
    status, data, location = request_json("GET", url, timeout_s=timeout_s, hosts=hosts, whose=whose)
    if 300 <= status < 400:
        raise Unreachable(f"{url} answered HTTP {status}, a redirect" + (f" to {location[:200]}" if location else "")
                          + "; redirects are not followed: configure the URL that answers directly")
    if status != 200 or not isinstance(data, dict):
        raise Unreachable(f"{url} answered HTTP {status}" + ("" if isinstance(data, dict) else ", not a JSON object"))
    return data
