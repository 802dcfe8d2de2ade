"""A small EHR for the service tests, run as its own process on 127.0.0.1 (a port the OS picks).

It serves, over real HTTP (``http.server``):

- a FHIR R4 server at ``/fhir``: ``Patient/{id}`` and ``Medication/{id}`` reads and searches of Observation, Condition,
  MedicationAdministration, MedicationRequest and Procedure by ``patient``, ``code`` and ``combo-code``
  (``system|code``, comma separated; as in FHIR R4, ``code`` does not match components), ``status`` and ``date=geYYYY-MM-DDThh:mm:ssZ``,
  ``_sort=-date`` (newest first), paged by ``_count`` with ``next`` links; ``--cap N`` answers at most N matches
  of a search, as EHRs do (the rest silently dropped); optionally only with ``Authorization: Bearer <--token>``;
- published key sets at ``/jwks/{name}.json`` (set with ``PUT``), as an EHR publishes its JWKS; a ``PUT`` of
  ``{"redirect": URL}`` makes that path answer 302 to URL instead;
- a SMART App Launch authorization server (``--smart-patient ID``): ``/fhir/.well-known/smart-configuration``,
  ``/auth/authorize`` (checks client, redirect, ``aud``, a S256 challenge; answers 302 to the redirect URI
  with a code) and ``/auth/token`` (checks the code once, the redirect URI and the PKCE verifier; answers the
  ``--token`` as access token with the patient in context); ``GET /_smart`` shows what it was sent;
- control: ``POST /_control`` ``{"fail": {"Observation": 500 | "slow" | "offsite-next" | "not-json"}}``,
  ``GET /_requests`` (every request seen: path, query, authorization), ``POST /_reset``.

Usage: ``python tests/ehr_server.py BUNDLE.json... [--token T] [--shift-to-now ISO] [--cap N]``; prints
``port N`` on stdout once listening.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

SEARCHABLE = ("Observation", "Condition", "MedicationAdministration", "MedicationRequest", "Procedure")


def shifted(data: Any, delta: timedelta) -> Any:
    """``data`` with every date-time moved by ``delta``."""
    if isinstance(data, dict):
        return {k: shifted(v, delta) for k, v in data.items()}
    if isinstance(data, list):
        return [shifted(v, delta) for v in data]
    if isinstance(data, str) and len(data) > 10 and data[10:11] == "T":
        return (datetime.fromisoformat(data.replace("Z", "+00:00")) + delta).isoformat().replace("+00:00", "Z")
    return data


class Store:
    def __init__(self, resources: list[dict[str, Any]], token: str | None, cap: int | None = None) -> None:
        self.resources = resources
        self.token = token
        self.cap = cap
        self.smart_patient: str | None = None
        self.codes: dict[str, dict[str, Any]] = {}
        self.smart_seen: list[dict[str, Any]] = []
        self.fail: dict[str, Any] = {}
        self.requests: list[dict[str, Any]] = []
        self.jwks: dict[str, Any] = {}
        self.lock = threading.Lock()


def _subject(resource: dict[str, Any]) -> str | None:
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference")
    return ref.split("/")[-1] if isinstance(ref, str) else None


def _when(resource: dict[str, Any]) -> str | None:
    for key in ("effectiveDateTime", "authoredOn", "recordedDate", "onsetDateTime"):
        if isinstance(resource.get(key), str):
            return resource[key]
    period = resource.get("effectivePeriod")
    return period.get("start") if isinstance(period, dict) else None


def _matches(resource: dict[str, Any], params: dict[str, str]) -> bool:
    if "patient" in params and _subject(resource) != params["patient"]:
        return False
    if "status" in params and resource.get("status") not in params["status"].split(","):
        return False
    for name in ("code", "combo-code"):  # as in FHIR R4: code is Observation.code; combo-code also its components
        if name in params:
            wanted = set(params[name].split(","))
            concepts = [resource.get("code") or {}]
            if name == "combo-code":
                concepts += [c.get("code") or {} for c in resource.get("component") or []]
            codings = [c for concept in concepts for c in concept.get("coding") or []]
            if not any(f"{c.get('system')}|{c.get('code')}" in wanted for c in codings):
                return False
    if "date" in params and params["date"].startswith("ge"):
        when = _when(resource)
        bound = datetime.fromisoformat(params["date"][2:].replace("Z", "+00:00"))
        if when is None or datetime.fromisoformat(when.replace("Z", "+00:00")) < bound:
            return False
    return True


_BOMB: list[bytes] = []


def gzip_bomb(inflated: int = 512 * 1024 * 1024) -> bytes:
    """A valid gzip stream of a JSON object padded with ``inflated`` spaces (~0.5 MB compressed), made once and
    cheaply: one fully flushed deflate block of 1 MiB of spaces, repeated (each such block stands alone)."""
    if not _BOMB:
        import struct
        import zlib

        def block(data: bytes) -> bytes:
            z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
            return z.compress(data) + z.flush(zlib.Z_FULL_FLUSH)

        head, pad, tail = b'{"resourceType": "Bundle", "type": "searchset", "entry": []', b" " * (1 << 20), b"}"
        crc = zlib.crc32(head)
        for _ in range(inflated >> 20):
            crc = zlib.crc32(pad, crc)
        crc = zlib.crc32(tail, crc)
        size = len(head) + (inflated >> 20) * len(pad) + len(tail)
        last = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = block(head) + block(pad) * (inflated >> 20) + last.compress(tail) + last.flush()  # the final block
        _BOMB.append(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body + struct.pack("<II", crc, size & 0xFFFFFFFF))
    return _BOMB[0]


def make_handler(store: Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: Any, content_type: str = "application/fhir+json") -> None:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _body(self) -> Any:
            size = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(size) or b"null")

        def do_PUT(self) -> None:
            path = urlsplit(self.path).path
            if path.startswith("/jwks/"):
                store.jwks[path] = self._body()
                self._send(204, b"")
            else:
                self._send(404, {"resourceType": "OperationOutcome"})

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if path == "/auth/token" and store.smart_patient:
                size = int(self.headers.get("Content-Length") or 0)
                form = {k: v[-1] for k, v in parse_qs(self.rfile.read(size).decode()).items()}
                store.smart_seen.append({"path": path, "form": form, "authorization": self.headers.get("Authorization")})
                grant = store.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if grant is None or grant["redirect_uri"] != form.get("redirect_uri") or grant["challenge"] != challenge:
                    self._send(400, {"error": "invalid_grant"}, "application/json")
                    return
                self._send(200, {"access_token": store.token or "open", "token_type": "Bearer", "expires_in": 300,
                                 "scope": grant["scope"], "patient": store.smart_patient}, "application/json")
                return
            if path == "/_control":
                store.fail = self._body().get("fail", {})
                self._send(204, b"")
            elif path == "/_reset":
                self._body()
                store.fail, store.requests[:] = {}, []
                self._send(204, b"")
            else:
                self._send(405, {"resourceType": "OperationOutcome"})

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/_requests":
                self._send(200, store.requests, "application/json")
                return
            if url.path == "/_smart":
                self._send(200, store.smart_seen, "application/json")
                return
            host = f"http://{self.headers.get('Host')}"
            if url.path == "/fhir/.well-known/smart-configuration" and store.smart_patient:
                self._send(200, {"authorization_endpoint": f"{host}/auth/authorize", "token_endpoint": f"{host}/auth/token",
                                 "code_challenge_methods_supported": ["S256"],
                                 "capabilities": ["launch-ehr", "launch-standalone", "client-public", "context-ehr-patient"]},
                           "application/json")
                return
            if url.path == "/auth/authorize" and store.smart_patient:
                q = {k: v[-1] for k, v in parse_qs(url.query).items()}
                store.smart_seen.append({"path": url.path, "query": q})
                ok = (q.get("response_type") == "code" and q.get("client_id") == "pressor-smart"
                      and q.get("aud") == f"{host}/fhir" and q.get("code_challenge_method") == "S256" and q.get("code_challenge"))
                if not ok:
                    self._send(400, {"error": "invalid_request"}, "application/json")
                    return
                code = secrets.token_urlsafe(12)
                store.codes[code] = {"redirect_uri": q["redirect_uri"], "challenge": q["code_challenge"], "scope": q.get("scope", "")}
                self.send_response(302)
                self.send_header("Location", f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with store.lock:
                store.requests.append({"path": url.path, "query": parse_qs(url.query),
                                       "authorization": self.headers.get("Authorization")})
            if url.path.startswith("/jwks/"):
                published = store.jwks.get(url.path)
                if isinstance(published, dict) and set(published) == {"redirect"}:
                    self.send_response(302)
                    self.send_header("Location", published["redirect"])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif published is not None:
                    self._send(200, published, "application/json")
                else:
                    self._send(404, {"error": "no such key set"}, "application/json")
                return
            if not url.path.startswith("/fhir/"):
                self._send(404, {"resourceType": "OperationOutcome"})
                return
            if store.token and self.headers.get("Authorization") != f"Bearer {store.token}":
                self._send(401, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]})
                return
            parts = url.path[len("/fhir/"):].split("/")
            kind = parts[0]
            mode = store.fail.get(kind)
            if mode == "slow":
                time.sleep(5)
            elif isinstance(mode, int):
                self._send(mode, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]})
                return
            elif mode == "not-json":
                self._send(200, b"<html>maintenance</html>", "text/html")
                return
            elif mode == "gzip-bomb":  # ~0.5 MB on the wire, 512 MB inflated (issue 24)
                raw = gzip_bomb()
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                return
            if len(parts) == 2 and kind in ("Patient", "Medication"):
                found = [r for r in store.resources if r["resourceType"] == kind and r.get("id") == parts[1]]
                self._send(200, found[0]) if found else self._send(404, {"resourceType": "OperationOutcome"})
                return
            if len(parts) != 1 or kind not in SEARCHABLE:
                self._send(404, {"resourceType": "OperationOutcome"})
                return
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            hits = [r for r in store.resources if r["resourceType"] == kind and _matches(r, params)]
            if params.get("_sort") == "-date":
                hits.sort(key=lambda r: _when(r) or "", reverse=True)
            hits = hits[:store.cap] if store.cap else hits
            count = int(params.get("_count", "50"))
            offset = int(params.get("_offset", "0"))
            page = hits[offset:offset + count]
            bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(hits),
                                      "entry": [{"fullUrl": f"{kind}/{r.get('id')}", "resource": r,
                                                 "search": {"mode": "match"}} for r in page]}
            if offset + count < len(hits):
                host = "elsewhere.invalid:9" if mode == "offsite-next" else self.headers.get("Host")
                nxt = urlencode({**params, "_offset": offset + count})
                bundle["link"] = [{"relation": "next", "url": f"http://{host}/fhir/{kind}?{nxt}"}]
            self._send(200, bundle)

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundles", nargs="*")
    ap.add_argument("--token")
    ap.add_argument("--shift-to-now", help="the instant the bundles are written as seen from; times move to now")
    ap.add_argument("--cap", type=int, help="at most this many matches of any search (the rest dropped, as EHRs do)")
    ap.add_argument("--smart-patient", help="serve a SMART authorization server giving this patient in context")
    args = ap.parse_args()
    resources: list[dict[str, Any]] = []
    for path in args.bundles:
        with open(path) as f:
            bundle = json.load(f)
        if args.shift_to_now:
            pinned = datetime.fromisoformat(args.shift_to_now.replace("Z", "+00:00"))
            bundle = shifted(bundle, datetime.now(timezone.utc) - pinned)
        resources += [e["resource"] for e in bundle.get("entry", [])]
    store = Store(resources, args.token, args.cap)
    store.smart_patient = args.smart_patient
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(store))
    server.daemon_threads = True
    print(f"port {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
