"""The CDS Hooks 2.0 service (FastAPI). No clinical logic here: ``engine.ehr`` reads the
request, ``engine.evaluate`` decides, ``cards`` renders.

Stateless: each worker process loads and compiles the pack, the FHIR mapping and the
configuration once, at start-up (the lifespan), and serves requests from them. What the
prefetch does not carry is fetched from the call's ``fhirServer`` (``fhir_fetch``); required
data that can be had neither way is answered 412.

Endpoints: ``GET /cds-services`` (discovery), ``POST /cds-services/{id}`` (cards),
``POST /cds-services/{id}/feedback``, ``GET /openapi.json`` (behind the same authentication,
or off by config), and, without authentication (no patient data), ``GET /rules/{rule_id}``
(a rule's documentation, the cards' source URL) and ``GET /healthz``. CORS preflights are
answered for the configured origins (none by default). One JSON log line per request
(``logs``); token checks in ``auth``; configuration in ``config``.

Every evaluation and every feedback item goes to the audit log (``engine.audit``), opened
once per worker; see :class:`~.audit_sink.AuditSink`. The OpenAPI document is built in ``openapi``; the
selected draft orders are picked out in ``drafts``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect

from pressor.engine.audit import resolve_path
from pressor.engine.ehr.fhir import FhirError, FhirMapping, PatientDeceased, from_hook_request, load_mapping, observation_windows, prefetch_templates, unusable_prefetch
from pressor.engine.errors import AuditError, EvaluationError, InputError, PressorError
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import loads_json
from pressor.engine.evaluation.evaluate import freeze_long_lived
from pressor.engine.evaluation.pack import load_pack
from pressor.engine.evaluation.validate import schema
from pressor.engine.model import RulePack
from pressor.engine.report import rule_detail

from . import logs
from .auth import AuthError, Verifier, client_of
from .slashes import TrailingSlash
from .repeats import RepeatSettings, RepeatWindow, Suppressed, open_shown_store, show_repeats_requested
from .card_parts import CONDITIONAL_SYSTEM, dict_of
from .cards import cards_for, deceased_card, not_recorded_card, unless_ban_cards
from .config import SETTINGS_ENV, Config, Settings, load_config
from .audit_sink import AuditSink
from .drafts import draft_of, selected_drafts, unselect_pointer
from .fhir_fetch import FhirFetcher
from .openapi import REQUEST_SCHEMA, body_and_answer, openapi_document
from pressor.engine.audit.replay_cache import open_replay_cache

__all__ = ["SERVICES", "SETTINGS_ENV", "Settings", "announce_insecure", "build_runtime", "create_app"]

log = logging.getLogger("pressor.serve")

INSECURE_HEADER = "X-Pressor-Insecure"
INSECURE_TEXT = "authentication disabled (--insecure-no-auth): do not use with patient data"


@dataclass(frozen=True)
class Service:
    """One CDS Service this server offers."""

    id: str
    hook: str
    title: str
    description: str


SERVICES = {s.id: s for s in (
    Service("pressor-patient-view", "patient-view", "Norepinephrine protocol: what applies now",
            "Reads the patient's vital signs, weight, lactate, problem list and running infusions and returns the "
            "protocol's applicable recommendations for refractory hypotension, with doses for the patient's weight."),
    Service("pressor-order-select", "order-select", "Norepinephrine protocol: check a vasopressor order",
            "Checks the selected draft vasopressor orders against the protocol (for example dopamine or phenylephrine "
            "first-line) and returns the applicable recommendations; a ban offers to remove or replace the order."),
    Service("pressor-order-sign", "order-sign", "Norepinephrine protocol: check vasopressor orders before signing",
            "Checks every draft vasopressor order about to be signed against the protocol, as order-select does for the "
            "selected ones; a ban offers to remove or replace the order."),
)}


# --- the runtime ---------------------------------------------------------------------------


@dataclass
class Runtime:
    """Everything a worker loads once."""

    settings: Settings
    config: Config
    pack: RulePack
    mapping: FhirMapping
    templates: dict[str, str]
    verifier: Verifier
    audit: AuditSink
    validators: dict[str, Any]
    drug_codings: dict[str, dict[str, str]]
    repeats: RepeatWindow | None = None


def build_runtime(settings: Settings, config: Config | None = None) -> Runtime:
    """Load configuration, pack and mapping, and compile the request validators (once per process)."""
    import fastjsonschema

    config = config or load_config(settings.config_path)
    pack = load_pack(settings.rules_dir, profile=config.profile)
    mapping = load_mapping(config.fhir_mapping, lookback_hours=config.lookback_hours or None)
    defs = schema(REQUEST_SCHEMA)
    validators = {name: fastjsonschema.compile({**defs, "$ref": f"#/$defs/{name}"}) for name in ("hookRequest", "feedback")}
    codings = {}
    for med in mapping.medications:
        c = mapping.drug_codes(med.drug)[0]
        codings[med.drug] = {"system": c.system, "code": c.code, "display": c.display}
    audit = AuditSink(resolve_path(config.audit_db), config.audit_input)
    verifier = Verifier(config, open_replay_cache(config.replay_cache))
    window = RepeatSettings(**vars(config.repeat_window))
    repeats = RepeatWindow(window, open_shown_store(config.replay_cache, window)) if window.enabled else None
    return Runtime(settings, config, pack, mapping, prefetch_templates(mapping), verifier, audit, validators, codings,
                   repeats)


def _error(status: int, kind: str, message: str, problems: list[dict[str, Any]] | None = None,
           headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"error": kind, "message": message, **extra}
    if problems:
        body["problems"] = problems
    return JSONResponse(body, status_code=status, headers=headers)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app (uvicorn factory). Settings default to ``PRESSOR_SERVE_SETTINGS``."""
    settings = settings or Settings.from_env()
    config = load_config(settings.config_path)
    logs.configure(config.log_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.rt = build_runtime(settings, config)
        app.state.fetcher = FhirFetcher(config.fhir_fetch)
        app.state.rt.audit.open()
        freeze_long_lived()  # the pack, compiled rules and imports: kept out of every later garbage collection
        try:
            yield
        finally:
            app.state.rt.audit.close()
            if app.state.rt.repeats is not None:
                app.state.rt.repeats.close()
            await app.state.fetcher.close()

    app = FastAPI(title="pressor CDS Hooks service", version="2.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, description="CDS Hooks 2.0 services for the norepinephrine protocol.")

    # Starlette's own trailing-slash redirect takes its host from the Host header: ours (service/slashes.py) does not.
    app.router.redirect_slashes = False
    app.add_middleware(TrailingSlash, router=app.router, base_url=config.base_url)

    if settings.insecure:
        @app.middleware("http")
        async def announce_insecure(request: Request, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers[INSECURE_HEADER] = INSECURE_TEXT
            return response

    # Browsers (the CDS Hooks sandbox, EHR test harnesses): preflights answered for the allowed
    # origins only; none by default, and a refused preflight is a 400.
    app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                       allow_headers=["Authorization", "Content-Type"], max_age=600)
    if config.metrics.enabled:
        from . import metrics

        app.add_middleware(metrics.Middleware)
        metrics_token = os.environ.get(config.metrics.bearer_token_env) if config.metrics.bearer_token_env else None

        @app.get("/metrics", include_in_schema=False)
        async def prometheus(request: Request) -> Response:
            if not metrics.token_ok(request.headers.get("authorization"), metrics_token):
                raise HTTPException(401, "the metrics need the configured bearer token", headers={"WWW-Authenticate": "Bearer"})
            body, media = metrics.exposition()
            return Response(body, media_type=media)
    app.add_middleware(logs.RequestLog)  # outermost: it sees every answer

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kinds = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        return _error(exc.status_code, kinds.get(exc.status_code, "http_error"), str(exc.detail),
                      headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        # this answer leaves from outside the middleware stack: mark insecure mode here too
        return _error(500, "internal_error", "internal error; the server log has the details",
                      headers={INSECURE_HEADER: INSECURE_TEXT} if settings.insecure else None)

    @app.exception_handler(_ClientGone)
    async def client_gone(request: Request, exc: _ClientGone) -> Response:
        # One line in the request log (status 499, as proxies write it); nobody is left to answer.
        request.state.reason = "client disconnected before sending the whole body"
        return Response(status_code=499)

    def rt_of(request: Request) -> Runtime:
        return request.app.state.rt

    def base_url(request: Request) -> str:
        rt = rt_of(request)
        return rt.config.base_url or str(request.base_url).rstrip("/")

    async def authenticate(request: Request, audiences: list[str]) -> str:
        """Who calls (``iss|sub``), for the logs and the audit log; a 401 (logged with its reason) if not allowed."""
        rt = rt_of(request)
        if rt.settings.insecure:
            client = "insecure-no-auth"
        else:
            header = request.headers.get("authorization")
            try:  # in the threadpool when a key set may have to be fetched from an issuer
                claims = (await run_in_threadpool(rt.verifier.verify, header, audiences) if rt.verifier.may_block
                          else rt.verifier.verify(header, audiences))
            except AuthError as exc:
                logs.auth_failure(exc.reason, path=request.url.path, iss=exc.iss,
                                  peer=request.client.host if request.client else None)
                request.state.reason = exc.reason
                raise HTTPException(401, exc.reason, headers={"WWW-Authenticate": "Bearer"}) from exc
            client = client_of(claims)
        request.state.client = client
        return client

    async def read_json(request: Request) -> Any:
        limit = rt_of(request).config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"request body is over {limit} bytes")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"request body is over {limit} bytes")
                chunks.append(chunk)
        except ClientDisconnect as exc:
            raise _ClientGone() from exc
        raw = b"".join(chunks)
        try:
            return loads_json(raw.decode("utf-8"), file="request body")
        except UnicodeDecodeError as exc:
            raise _BadRequest("malformed_json", f"body is not UTF-8 (byte {exc.start})") from exc
        except InputError as exc:  # duplicate key, NaN, nesting past MAX_DEPTH, bad syntax: located
            p = exc.problems[0]
            where = (f" at line {p.line} column {p.column}" if p.line else "") + (f" ({p.pointer})" if p.pointer else "")
            raise _BadRequest("malformed_json", p.message + where, [q.to_dict() for q in exc.problems]) from exc

    def check_shape(request: Request, name: str, body: Any) -> None:
        import fastjsonschema

        try:
            rt_of(request).validators[name](body)
        except fastjsonschema.JsonSchemaValueException as exc:
            pointer = "/" + "/".join(str(p) for p in exc.path[1:]) if len(exc.path) > 1 else ""
            raise _BadRequest("bad_request", f"{pointer or '/'}: {exc.message.replace('data.', '').replace('data ', '')}") from exc

    @app.exception_handler(_BadRequest)
    async def bad_request(request: Request, exc: _BadRequest) -> JSONResponse:
        return _error(400, exc.kind, exc.message, exc.problems)

    @app.exception_handler(_Precondition)
    async def precondition_failed(request: Request, exc: _Precondition) -> JSONResponse:
        request.state.reason = exc.message
        return _error(412, "precondition_failed", exc.message, missing=exc.missing)

    @app.exception_handler(PressorError)
    async def pressor_error(request: Request, exc: PressorError) -> JSONResponse:
        if isinstance(exc, EvaluationError):
            log.error("evaluation failed: %s", exc)
            return _error(500, exc.kind, str(exc), [p.to_dict() for p in exc.problems])
        return _error(400, exc.kind, str(exc), [p.to_dict() for p in exc.problems])

    @app.get("/healthz", summary="Liveness and the pack served (no authentication)")
    async def healthz(request: Request) -> dict[str, Any]:
        pack = rt_of(request).pack
        return {"status": "ok", "pack": {"name": pack.name, "version": pack.version, "sha256": pack.sha256}}

    @app.get("/rules/{rule_id}", summary="One rule's documentation: the cards' source and links (no authentication)")
    async def rule_doc(request: Request, rule_id: str) -> Any:
        pack = rt_of(request).pack
        try:
            detail = rule_detail(pack, pack.rule(rule_id))
        except KeyError:
            raise HTTPException(404, f"no rule '{rule_id}' in {pack.name}") from None
        accept = request.headers.get("accept", "")
        if "text/html" in accept and "application/json" not in accept.split(",")[0]:
            # a clinician following a card's link in the EHR's browser: a page, not raw JSON
            return HTMLResponse(rule_page(detail), headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})
        return detail

    if config.openapi:
        @app.get("/openapi.json", include_in_schema=False)
        async def openapi(request: Request) -> JSONResponse:
            base = base_url(request)
            await authenticate(request, [f"{base}/openapi.json", f"{base}/cds-services"])
            if request.app.openapi_schema is None:
                request.app.openapi_schema = openapi_document(request.app)
            return JSONResponse(request.app.openapi_schema)

    @app.get("/cds-services", summary="CDS Hooks discovery: the services and their prefetch templates")
    async def discovery(request: Request) -> dict[str, Any]:
        await authenticate(request, [f"{base_url(request)}/cds-services"])
        templates = rt_of(request).templates
        return {"services": [{"hook": s.hook, "id": s.id, "title": s.title, "description": s.description,
                              "prefetch": templates} for s in SERVICES.values()]}

    def service_of(service_id: str) -> Service:
        service = SERVICES.get(service_id)
        if service is None:
            raise HTTPException(404, f"no CDS Service '{service_id}' (see GET /cds-services)")
        return service

    async def complete_prefetch(request: Request, body: dict[str, Any], now: datetime) -> tuple[dict[str, str], list[str]]:
        """Fetch what the prefetch lacks; why each key still missing is missing, and notes. 412 if a required one is."""
        rt = rt_of(request)
        prefetch = body.get("prefetch") or {}
        unusable = {k: problem for k in rt.templates if k in prefetch and (problem := unusable_prefetch(prefetch[k]))}
        lacking = {k: t for k, t in rt.templates.items() if k not in prefetch or k in unusable}
        if not lacking:
            return {}, []
        fetcher: FhirFetcher = request.app.state.fetcher
        refusal = fetcher.refusal(body.get("fhirServer")) if "fhirServer" in body else "the call gave no fhirServer"
        notes: list[str] = []
        if refusal is None:
            fetched = await fetcher.fetch(body["fhirServer"], body.get("fhirAuthorization"), lacking, body["context"],
                                          now=now, windows=observation_windows(rt.mapping))
            body["prefetch"] = {**prefetch, **fetched.prefetch}
            why, notes = fetched.failed, fetched.notes
            request.state.fetched = sorted(fetched.prefetch)
        else:
            why = dict.fromkeys(lacking, refusal)
        why = {k: f"{unusable[k]}; {reason}" if k in unusable else reason for k, reason in why.items()}
        required = [k for k in rt.config.fhir_fetch.required if k in why]
        if required:
            raise _Precondition("required data could not be had: " + "; ".join(f"{k} ({why[k]})" for k in required),
                                [{"prefetch": k, "template": rt.templates[k], "reason": why[k]} for k in required])
        return why, notes

    async def fetch_medications(request: Request, body: dict[str, Any]) -> list[str]:
        """Medications named by reference and not in the request, read from its fhirServer (prefetch key
        ``medications``); notes for those that could not be had (the cards then say the drug is unresolved)."""
        fetcher: FhirFetcher = request.app.state.fetcher
        if fetcher.refusal(body.get("fhirServer")) is not None:
            return []
        bundle, notes = await fetcher.medications(body["fhirServer"], body.get("fhirAuthorization"), body)
        if bundle is not None:
            prefetch = body.get("prefetch")
            if not isinstance(prefetch, dict):
                prefetch = body["prefetch"] = {}
            held = prefetch.get("medications")
            if isinstance(held, dict) and isinstance(held.get("entry"), list):
                bundle["entry"] = held["entry"] + bundle["entry"]
            prefetch["medications"] = bundle
        return [f"medications: {n}" for n in notes] + ([f"medications: fetched {len(bundle['entry'])} Medication "
                                                         "resource(s) named by reference"] if bundle else [])

    @app.post("/cds-services/{service_id}", summary="Call a CDS Service: cards for this patient (CDS Hooks 2.0)",
              openapi_extra=body_and_answer("request.hookRequest", "cards.response",
                                             {"412": "required data neither prefetched nor fetchable",
                                              "503": "the advice could not be recorded (require_audit)"}))
    async def call(request: Request, service_id: str) -> JSONResponse:
        service = service_of(service_id)
        base = base_url(request)
        client = await authenticate(request, [f"{base}/cds-services/{service_id}"])
        body = await read_json(request)
        check_shape(request, "hookRequest", body)
        request.state.hook, request.state.hookInstance = body["hook"], body["hookInstance"]
        if body["hook"] != service.hook:
            raise _BadRequest("bad_request", f"/hook: service '{service_id}' answers '{service.hook}', not '{body['hook']}'")
        rt = rt_of(request)
        now = _utc_now()
        why_missing, fetch_notes = await complete_prefetch(request, body, now)
        fetch_notes += await fetch_medications(request, body)
        selected, index = selected_drafts(body)
        try:
            conversion = from_hook_request(selected, now=now, mapping=rt.mapping, pack=rt.pack)
        except PatientDeceased as exc:
            pack = {"name": rt.pack.name, "version": rt.pack.version, "sha256": rt.pack.sha256}
            return JSONResponse({"cards": [deceased_card(body["hookInstance"], pack, base, exc.problems[0].message)]})
        except FhirError as exc:
            raise FhirError([unselect_pointer(p, index) for p in exc.problems]) from exc
        states = conversion.states()
        drafts = [draft_of(order, selected) for order in conversion.orders] or [None]
        results = [evaluate(rt.pack, state, now=now, include_draft=rt.config.include_draft) for state in states]
        request.state.rules_fired = sorted({f"{r.rule_id}@{r.rule_version}" for res in results for r in res.recommendations})
        hook_instance = body["hookInstance"]
        cards = cards_for(results, conversion, hook_instance=hook_instance, base_url=base,
                          patient_id=body["context"]["patientId"], drug_codings=rt.drug_codings, drafts=drafts,
                          ui_base_url=rt.config.ui_base_url, why_missing=why_missing)
        # A draft order whose purpose the record leaves unknown: evaluated as first-line too, so that its ban is
        # shown "unless ..." rather than not at all; recorded beside the real evaluation.
        unless = [(i, state, words, evaluate(rt.pack, state, now=now, include_draft=rt.config.include_draft))
                  for i, state, words in conversion.unless_states()]
        if unless:
            fired = {r.rule_id for res in results for r in res.recommendations}
            extra = unless_ban_cards([(drafts[i], words, res) for i, _, words, res in unless], set(fired),
                                     pack=results[0].pack, hook_instance=body["hookInstance"], base_url=base,
                                     patient_id=body["context"]["patientId"], drug_codings=rt.drug_codings,
                                     ui_base_url=rt.config.ui_base_url)
            banned = {c["source"]["topic"]["code"].split("|")[0] for c in extra}
            cards = [c for c in cards if not (c["source"].get("topic", {}).get("system") == CONDITIONAL_SYSTEM
                                              and c["source"]["topic"]["code"].split("|")[0] in banned)]
            cards[:0] = extra
        patient_id = body["context"]["patientId"]
        blocks = rt.repeats is not None and rt.repeats.may_block
        cards, suppressed = (await run_in_threadpool(_without_repeats, rt.repeats, body, patient_id, cards, now) if blocks
                             else _without_repeats(rt.repeats, body, patient_id, cards, now))
        pairs = list(zip(states, results)) + [(state, res) for _, state, _, res in unless]
        # The record and the cards share one serialisation of each result (dict_of); the records are prepared on a
        # thread of the pool (their compression beside the next call's evaluation), then committed by the writer.
        ids, pending = await run_in_threadpool(
            rt.audit.submit, rt.pack, pairs, now=now, user=clinician(body, client), hook_instance=hook_instance,
            patient=patient_of(body, rt.config), dicts=[dict_of(res) for _, res in pairs],
            # what was not shown again, and why (hashed with the call's first record)
            suppressed=[x.to_dict(now.timestamp()) for x in suppressed] or None)
        try:
            if rt.config.require_audit or rt.config.audit_wait or not rt.audit.healthy:
                await asyncio.wrap_future(pending)  # answered only once its records are committed
                audited: dict[str, Any] = {"recorded": True, "records": ids}
            else:  # audit_wait: false: answered before the commit (a crash may lose these records)
                pending.add_done_callback(_log_late_failure(hook_instance))
                audited = {"recorded": "queued", "records": ids}
        except AuditError as exc:
            log.error("cards of hookInstance %s NOT recorded in the audit log: %s", hook_instance, exc)
            if rt.config.require_audit:
                return _error(503, "audit_unavailable",
                              f"the advice is withheld (require_audit) because it could not be recorded: {exc}",
                              [p.to_dict() for p in exc.problems])
            # The clinician keeps the advice, and is told that there is no record of it.
            cards.append(not_recorded_card(hook_instance, results[0].pack, base, exc.problems[0].message))
            audited = {"recorded": False, "reason": str(exc)}
        if rt.repeats is not None:
            if blocks:
                await run_in_threadpool(_remember, rt.repeats, patient_id, cards, now)
            else:
                _remember(rt.repeats, patient_id, cards, now)
        request.state.cards, request.state.audit_recorded = cards, audited["recorded"]
        request.state.not_fetched = bool(why_missing)
        extension: dict[str, Any] = {"notes": fetch_notes + conversion.notes, "missing": conversion.missing, "audit": audited,
                     "pack": results[0].pack, "mapping_sha256": rt.mapping.sha256, "evaluated_at": results[0].evaluated_at}
        if why_missing:
            extension["not_fetched"] = why_missing
        if suppressed:
            extension["suppressed"] = [x.to_dict(now.timestamp()) for x in suppressed]
            # the request's log line says what was not shown again and why (no patient data: keys and reasons)
            request.state.suppressed = [{"repeat_key": x.key, "reason": x.reason(now.timestamp())} for x in suppressed]
        return JSONResponse({"cards": cards, "extension": {"pressor": extension}})

    @app.post("/cds-services/{service_id}/feedback", summary="Feedback on cards (CDS Hooks 2.0): recorded in the audit log",
              openapi_extra=body_and_answer("request.feedback", None, {"503": "the feedback could not be recorded"}))
    async def feedback(request: Request, service_id: str) -> JSONResponse:
        service_of(service_id)
        base = base_url(request)
        client = await authenticate(request, [f"{base}/cds-services/{service_id}",
                                              f"{base}/cds-services/{service_id}/feedback"])
        body = await read_json(request)
        check_shape(request, "feedback", body)
        try:
            ids = await run_in_threadpool(rt_of(request).audit.record_feedback, body["feedback"], service=service_id,
                                          now=_utc_now(), user=client)
        except AuditError as exc:
            # Feedback is only worth its record: say so, and the client may send it again.
            log.error("feedback on %s NOT recorded in the audit log: %s", service_id, exc)
            return _error(503, "audit_unavailable", f"the feedback could not be recorded: {exc}",
                          [p.to_dict() for p in exc.problems])
        return JSONResponse({"received": len(body["feedback"]), "recorded": ids})

    return app


def _without_repeats(repeats: RepeatWindow | None, body: dict[str, Any], patient_id: str, cards: list[dict[str, Any]],
                     now: datetime) -> tuple[list[dict[str, Any]], list[Suppressed]]:
    """The cards to show and those not shown again (unchanged within the repeat window); every card when the window
    is off, the request asks for repeats, or the store fails (a card shown twice is safer than one lost)."""
    if repeats is None or show_repeats_requested(body):
        return cards, []
    try:
        return repeats.split(patient_id, cards, now.timestamp())
    except Exception as exc:  # noqa: BLE001 - any store driver's error: logged, and every card shown
        log.error("the repeat window could not be read; every card is shown: %r", exc)
        return cards, []


def _remember(repeats: RepeatWindow, patient_id: str, cards: list[dict[str, Any]], now: datetime) -> None:
    try:
        repeats.remember(patient_id, cards, now.timestamp())
    except Exception as exc:  # noqa: BLE001 - any store driver's error: logged; the cards were shown
        log.error("the repeat window could not be written; these cards may be shown again: %r", exc)


def _log_late_failure(hook_instance: str) -> Any:
    def done(future: Future) -> None:
        exc = future.exception()
        if exc is not None:
            log.error("cards of hookInstance %s NOT recorded in the audit log (answered before the commit, "
                      "audit_wait: false): %s", hook_instance, exc)
    return done


def rule_page(detail: dict[str, Any]) -> str:
    """One rule as a small, self-contained HTML page (every text escaped; no script, no outside request)."""
    from html import escape

    rec = detail.get("recommend") or {}
    cites = "".join(f"<li>[{escape(str(c.get('number')))}] {escape(str(c.get('title')))}"
                    + (f", {escape(str(c.get('publisher')))} {escape(str(c.get('year') or ''))}" if c.get("publisher") else "")
                    + (f" <em>({escape(str(c['evidence']))})</em>" if c.get("evidence") else "") + "</li>"
                    for c in detail.get("citations", []))
    pack = detail.get("pack") or {}
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(detail['title'])}</title>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}</style></head><body>"
            f"<h1>{escape(detail['title'])}</h1><p><strong>{escape(str(rec.get('severity', '')))}</strong>: "
            f"{escape(str(rec.get('summary', '')))}</p><p>{escape(str(rec.get('detail', '')))}</p>"
            f"<h2>Sources</h2><ol>{cites}</ol><p><small>Rule {escape(detail['id'])} v{escape(detail['version'])}, status "
            f"{escape(detail['status'])}; pack {escape(str(pack.get('name', '')))} {escape(str(pack.get('version', '')))}. "
            "pressor supports clinical judgement; it does not replace it.</small></p></body></html>")


def clinician(body: dict[str, Any], client: str) -> str:
    """Who the advice was shown to, for the audit log: the hook's ``context.userId`` (the clinician:
    ``Practitioner/123``) and, after "via", the calling EHR (its token's ``iss|sub``); the client alone
    when the hook names no user."""
    user = (body.get("context") or {}).get("userId")
    return f"{user} via {client}" if isinstance(user, str) and user.strip() else client


def patient_of(body: dict[str, Any], config: Config) -> str | None:
    """What the record keeps of whom the call was about (``audit_patient``): ``Patient/{id}``, its keyed hash, or nothing."""
    from pressor.engine.audit.records import patient_key

    pid = (body.get("context") or {}).get("patientId")
    if config.audit_patient == "none" or not isinstance(pid, str) or not pid:
        return None
    return patient_key(pid, config.audit_patient_key if config.audit_patient == "keyed-hash" else None)


class _BadRequest(Exception):
    """A 400 with a JSON body naming the problem."""

    def __init__(self, kind: str, message: str, problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.problems = kind, message, problems


class _Precondition(Exception):
    """A 412: data the service needs was neither prefetched nor fetchable."""

    def __init__(self, message: str, missing: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.message, self.missing = message, missing


class _ClientGone(Exception):
    """The client went away before its request body was complete."""


def announce_insecure() -> None:
    """The loud start-up warning of ``--insecure-no-auth``."""
    bar = "!" * 78
    sys.stderr.write(f"{bar}\n!! pressor serve: {INSECURE_TEXT}\n!! every response carries the header {INSECURE_HEADER}\n{bar}\n")
    sys.stderr.flush()
