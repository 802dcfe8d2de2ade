"""Small JSON requests to other parties' servers (published key sets, the identity provider), bounded.

The rules: https, or plain http to the loopback only (127.0.0.1, localhost, ::1); optionally only to
given hosts; redirects are never followed (a 3xx is the answer, for the caller to refuse: a redirect
must not be able to send the request elsewhere); a time-out; a size limit on the answer; JSON read
strictly (no duplicate keys, no NaN, bounded nesting). FHIR fetching has its own client
(``fhir_fetch``: paging, concurrency) under the same rules.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Largest answer read (bytes): a discovery document, a key set or a token response is a few kB.
MAX_RESPONSE_BYTES = 1_000_000


class Unreachable(Exception):
    """No usable answer came: the URL is not allowed, the server is down or slow, or the answer is too big."""


def url_problem(url: str, hosts: frozenset[str] | None = None, *, whose: str = "the allowed hosts") -> str | None:
    """Why ``url`` may not be called (None when it may): https, or http to the loopback; a host from ``hosts``
    (named ``whose`` in the reason)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return f"{url!r} is not a URL"
    if not host or parts.scheme not in ("https", "http"):
        return f"{url!r} is not an http(s) URL"
    if parts.scheme == "http" and host not in LOOPBACK:
        return f"{url!r} must use https (plain http only to 127.0.0.1 or localhost)"
    if hosts is not None and host not in hosts:
        return f"{url!r} is not on {whose} ({', '.join(sorted(hosts))})"
    return None


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
            with client.stream(method, url, headers={"Accept": "application/json", **kwargs.pop("headers", {})},
                               **kwargs) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise Unreachable(f"{url} answered more than {max_bytes} bytes ({declared})")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise Unreachable(f"{url} answered more than {max_bytes} bytes")
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
