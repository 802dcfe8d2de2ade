"""Fetching from the caller's FHIR server what the prefetch did not carry (the one HTTP client to FHIR).

CDS Hooks lets a service fetch with ``fhirServer`` and the ``fhirAuthorization`` access token.
Each missing prefetch key's template (``engine.ehr.fhir.prefetch_templates``) is filled from the
context and run, bounded: a time-out per request, ``_count``, at most ``max_pages`` pages through
``next`` links (which must stay on the same server: the token never leaves it), a size limit per
response, and a date bound on observations from the mapping's longest look-back window. What
cannot be fetched is reported with the reason; the app answers 412 when it was required. All the
searches of one call run concurrently and must finish within ``deadline_s``.
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from pressor.engine.errors import InputError
from pressor.engine.evaluation.load import loads_json

from .config import FetchSettings
from .outbound import ACCEPT_ENCODING, Inflater, Unreachable, target, url_problem

_TOKEN = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")
_USER_TOKENS = {"Practitioner": "userPractitionerId", "PractitionerRole": "userPractitionerRoleId",
                "Patient": "userPatientId", "RelatedPerson": "userRelatedPersonId"}
FHIR_JSON = "application/fhir+json"


class FetchFailed(Exception):
    """One prefetch key could not be fetched; the message says why."""


@dataclass
class Fetched:
    """What a fetch brought: prefetch values by key, what could not be had and why, notes for the response."""

    prefetch: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def fill_template(template: str, context: dict[str, Any]) -> str | None:
    """The template with ``{{context.x}}`` and ``{{userPractitionerId}}``-style tokens replaced; None if one cannot be."""
    # Quoted: a context value is one id or token, never a path or a query of its own (``../`` or ``&code=``).
    values: dict[str, str] = {f"context.{k}": quote(str(v), safe="") for k, v in context.items()
                              if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    user = context.get("userId")
    if isinstance(user, str) and user.count("/") == 1:
        kind, uid = user.split("/")
        if kind in _USER_TOKENS:
            values[_USER_TOKENS[kind]] = quote(uid, safe="")
    unresolved = False

    def sub(m: re.Match[str]) -> str:
        nonlocal unresolved
        if m.group(1) in values:
            return values[m.group(1)]
        unresolved = True
        return m.group(0)

    filled = _TOKEN.sub(sub, template)
    return None if unresolved else filled


class FhirFetcher:
    """One worker's HTTP client to FHIR servers (connection pool shared by its requests)."""

    def __init__(self, settings: FetchSettings) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(timeout=settings.timeout_s, follow_redirects=False,
                                         limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
                                         headers={"Accept": FHIR_JSON, "Accept-Encoding": ACCEPT_ENCODING})

    async def close(self) -> None:
        await self._client.aclose()

    def refusal(self, server: Any) -> str | None:
        """Why ``server`` may not be fetched from (None if it may)."""
        if not self.settings.enabled:
            return "fetching is disabled (fhir_fetch.enabled: false)"
        if not isinstance(server, str):
            return "no usable fhirServer in the request"
        problem = url_problem(server, within=tuple(self.settings.servers) or None,
                              whose="the servers this service may fetch from (fhir_fetch.servers)")
        if problem is not None:
            if self.settings.servers and "is not among" in problem:
                return f"fhirServer {server[:200]} is not among the servers this service may fetch from"
            return f"no usable fhirServer in the request: {problem}"
        if urlsplit(server).query or urlsplit(server).fragment:
            return "no usable fhirServer in the request: a FHIR base has no query or fragment"
        return None

    async def fetch(self, server: str, authorization: Any, templates: dict[str, str], context: dict[str, Any], *,
                    now: datetime, windows: dict[str, float]) -> Fetched:
        """Run every template (concurrently); each either lands in ``prefetch`` or in ``failed`` with its reason.
        ``windows``: the look-back (hours) of each observation key, sent as ``date=ge``."""
        headers = _bearer(authorization)
        base = server.rstrip("/")
        out = Fetched()

        async def one(key: str, template: str) -> None:
            query = fill_template(template, context)
            if query is None:
                out.failed[key] = f"its template {template!r} names context the call did not give"
                return
            if key in windows and "date=" not in query:
                query += f"&date=ge{(now - timedelta(hours=windows[key])).strftime('%Y-%m-%dT%H:%M:%SZ')}"
            try:
                out.prefetch[key] = await self._run(base, query, headers, key, out.notes)
            except FetchFailed as exc:
                out.failed[key] = str(exc)

        tasks = {key: asyncio.ensure_future(one(key, template)) for key, template in templates.items()}
        _, late = await asyncio.wait(tasks.values(), timeout=self.settings.deadline_s)
        for task in late:
            task.cancel()
        for key, task in tasks.items():
            if task in late:
                out.prefetch.pop(key, None)
                out.failed[key] = f"not fetched within fhir_fetch.deadline_s ({self.settings.deadline_s:g} s)"
        return out

    async def _run(self, base: str, query: str, headers: dict[str, str], key: str, notes: list[str]) -> Any:
        path = query.split("?", 1)[0]
        if "?" not in query:  # a read: Patient/{id}
            resource = await self._get(f"{base}/{query}", headers, allow_404=True)
            if resource is None:
                return None  # supplied, nothing found
            if not isinstance(resource, dict) or resource.get("resourceType") != path.split("/")[0]:
                raise FetchFailed(f"GET {_path_of(base + '/' + query)} did not return a {path.split('/')[0]}")
            return resource
        # The template's _count bounds what an EHR prefetches; fetching, the date bound and the page limits do.
        query = re.sub(r"&_count=\d+(?=&|$)", "", query)
        url: str | None = f"{base}/{query}&_count={self.settings.page_size}"
        entries: list[dict[str, Any]] = []
        pages = 0
        while url is not None:
            if pages == self.settings.max_pages:
                notes.append(f"{key}: fetched {pages} pages ({len(entries)} resources) from fhirServer; more were not read "
                             f"(fhir_fetch.max_pages)")
                # a cut result: Bundle.total says there was more (cut_observations words it for the cards)
                return {"resourceType": "Bundle", "type": "searchset", "total": len(entries) + 1, "entry": entries}

            bundle = await self._get(url, headers)
            pages += 1
            if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
                raise FetchFailed(f"{path} search did not return a Bundle")
            page_entries = bundle.get("entry") or []
            if not isinstance(page_entries, list):
                raise FetchFailed(f"{path} search returned a Bundle whose entry is not an array")
            entries += [e for e in page_entries if isinstance(e, dict) and not _is_outcome(e)]
            url = _next_link(bundle)
            if url is not None and url_problem(url, within=(base,)) is not None:
                try:
                    where = target(url).origin
                except Unreachable:
                    where = "an unusable URL"
                raise FetchFailed(f"{path} search: the next page is on another server or path ({where}); not followed")
        else:
            notes.append(f"{key}: fetched from fhirServer ({len(entries)} resources, {pages} page{'s' * (pages != 1)})")
        return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries} if entries else None

    async def medications(self, server: str, authorization: Any, request: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
        """The Medication resources that the request's administrations and orders name by reference and that
        it does not hold (read from ``server``, at most :data:`MAX_MEDICATION_READS`), as a Bundle; and notes
        for those that could not be had. A reference to another server is never followed (the token stays)."""
        wanted = missing_medications(request)
        if not wanted:
            return None, []
        base = server.rstrip("/")
        headers = _bearer(authorization)
        found: list[dict[str, Any]] = []
        notes: list[str] = []

        async def one(ref: str) -> None:
            there = urlsplit(ref)
            if there.scheme and url_problem(ref, within=(base,)) is not None:
                notes.append(f"{ref[:200]}: not under fhirServer; not fetched")
                return
            tail = "/".join(there.path.split("/_history")[0].rstrip("/").split("/")[-2:])
            try:
                med = await self._get(f"{base}/{tail}", headers, allow_404=True)
            except FetchFailed as exc:
                notes.append(f"{ref}: {exc}")
                return
            if not isinstance(med, dict) or med.get("resourceType") != "Medication":
                notes.append(f"{ref}: fhirServer has no such Medication")
                return
            found.append({"fullUrl": ref if there.scheme else f"{base}/{tail}", "resource": med})

        refs = wanted[:MAX_MEDICATION_READS]
        if len(wanted) > len(refs):
            notes.append(f"{len(wanted) - len(refs)} more Medication references were not fetched (at most {MAX_MEDICATION_READS})")
        _, late = await asyncio.wait([asyncio.ensure_future(one(r)) for r in refs], timeout=self.settings.deadline_s)
        for task in late:
            task.cancel()
        if late:
            notes.append(f"{len(late)} Medication reads did not finish within fhir_fetch.deadline_s")
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": found} if found else None
        return bundle, notes


    async def _get(self, url: str, headers: dict[str, str], *, allow_404: bool = False) -> Any:
        limit = self.settings.max_page_bytes
        problem = url_problem(url)  # every URL, built from a template and the context or a next link, is checked
        if problem is not None:
            raise FetchFailed(f"GET {_path_of(url)} refused: {problem.replace(url[:200], _path_of(url))}")
        try:
            async with self._client.stream("GET", url, headers=headers) as response:
                if allow_404 and response.status_code in (404, 410):
                    return None
                if response.status_code != 200:
                    raise FetchFailed(f"GET {_path_of(url)} answered HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise FetchFailed(f"GET {_path_of(url)}: response over {limit} bytes")
                inflater = Inflater(response.headers.get("content-encoding"), limit, f"GET {_path_of(url)}")
                async for chunk in response.aiter_raw():
                    inflater.feed(chunk)  # inflated in bounded steps: a gzip bomb stops at the limit
                body = inflater.body
        except Unreachable as exc:
            msg = str(exc).replace(f"answered more than {limit} bytes", f"response over {limit} bytes")
            raise FetchFailed(msg) from exc
        except httpx.TimeoutException as exc:
            raise FetchFailed(f"GET {_path_of(url)} timed out after {self.settings.timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise FetchFailed(f"GET {_path_of(url)} failed: {type(exc).__name__}") from exc
        try:
            return loads_json(bytes(body).decode("utf-8"), file=_path_of(url))
        except UnicodeDecodeError as exc:
            raise FetchFailed(f"GET {_path_of(url)} did not return JSON (not UTF-8)") from exc
        except InputError as exc:  # malformed, duplicate keys, too deep: the strict reader's reason
            raise FetchFailed(f"GET {_path_of(url)} did not return JSON the service accepts: {exc.problems[0].message}") from exc


def _path_of(url: str) -> str:
    """The path of a FHIR URL for messages and logs: no query, and a read's id masked (``/fhir/Patient/{id}``):
    both may identify the patient."""
    parts = urlsplit(url).path.split("/")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        parts[-1] = "{id}"
    return "/".join(parts)


def _is_outcome(entry: dict[str, Any]) -> bool:
    resource = entry.get("resource")
    return (isinstance(entry.get("search"), dict) and entry["search"].get("mode") == "outcome") or (
        isinstance(resource, dict) and resource.get("resourceType") == "OperationOutcome")


def _next_link(bundle: dict[str, Any]) -> str | None:
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


#: At most this many Medication resources are read for one call.
MAX_MEDICATION_READS = 20


def missing_medications(request: dict[str, Any]) -> list[str]:
    """``medicationReference`` references of the request's administrations and orders (prefetch and draft
    orders) that name neither a contained resource nor a Medication the request holds."""
    held: set[str] = set()
    refs: list[str] = []

    def walk(node: Any, full_url: str | None = None) -> None:
        if not isinstance(node, dict):
            return
        kind = node.get("resourceType")
        if kind == "Bundle":
            for entry in node.get("entry") or []:
                if isinstance(entry, dict):
                    walk(entry.get("resource"), entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None)
        elif kind == "Medication":
            if isinstance(node.get("id"), str):
                held.add(f"Medication/{node['id']}")
            if full_url:
                held.add(full_url)
        elif kind in ("MedicationAdministration", "MedicationRequest"):
            ref = (node.get("medicationReference") or {}).get("reference") if isinstance(node.get("medicationReference"), dict) else None
            if isinstance(ref, str) and ref and not ref.startswith("#"):
                refs.append(ref)

    for value in (request.get("prefetch") or {}).values():
        walk(value)
    walk((request.get("context") or {}).get("draftOrders"))
    out = []
    for ref in dict.fromkeys(refs):
        tail = "/".join(ref.split("/_history")[0].rstrip("/").split("/")[-2:])
        if ref not in held and tail not in held and tail.startswith("Medication/"):
            out.append(ref)
    return out


def _bearer(authorization: Any) -> dict[str, str]:
    if isinstance(authorization, dict) and isinstance(authorization.get("access_token"), str):
        return {"Authorization": f"Bearer {authorization['access_token']}"}
    return {}
