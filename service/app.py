"""The CDS Hooks 2.0 service (FastAPI). No clinical logic here: ``engine.fhir`` reads the
request, ``engine.evaluate`` decides, ``cards`` renders.

Stateless: each worker process loads and compiles the pack, the FHIR mapping and the
configuration once, at start-up (the lifespan), and serves requests from them. Nothing is
fetched from ``fhirServer``: what the call does not carry stays unknown.

Endpoints: ``GET /cds-services`` (discovery), ``POST /cds-services/{id}`` (cards),
``POST /cds-services/{id}/feedback``, and, without authentication (no patient data),
``GET /rules/{rule_id}`` (a rule's documentation, the cards' source URL) and ``GET /healthz``.

Every evaluation and every feedback item goes to the audit log (``engine.audit``), opened
once per worker; see :class:`AuditSink`.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from pressor.engine.audit import AuditLog, resolve_path
from pressor.engine.audit.replay_cache import open_replay_cache
from pressor.engine.errors import AuditError, EvaluationError, InputError, PressorError, Problem
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.ehr.fhir import FhirMapping, from_hook_request, load_mapping, prefetch_templates
from pressor.engine.evaluation.load import Document, load_document, loads_json
from pressor.engine.model import RulePack
from pressor.engine.evaluation.pack import load_pack
from pressor.engine.evaluation.validate import schema, schema_problems

from .cards import cards_for, not_recorded_card
from pressor.engine.report import rule_detail

log = logging.getLogger("pressor.serve")

#: Environment variable through which ``pressor serve`` hands its options to every worker.
SETTINGS_ENV = "PRESSOR_SERVE_SETTINGS"
INSECURE_HEADER = "X-Pressor-Insecure"
INSECURE_TEXT = "authentication disabled (--insecure-no-auth): do not use with patient data"
DEFAULT_ALGORITHMS = ("ES384", "RS384")
CONFIG_SCHEMA = "serve-config.schema.json"
REQUEST_SCHEMA = "cds-hooks-request.schema.json"


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
            "Checks a draft vasopressor order against the protocol (for example dopamine or phenylephrine first-line) "
            "and returns the applicable recommendations."),
)}


# --- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What ``pressor serve`` passes to each worker (JSON in ``PRESSOR_SERVE_SETTINGS``)."""

    config_path: str | None = None
    rules_dir: str | None = None
    insecure: bool = False

    @classmethod
    def from_env(cls) -> "Settings":
        """The settings of this worker (defaults if the variable is unset)."""
        raw = os.environ.get(SETTINGS_ENV)
        return cls(**json.loads(raw)) if raw else cls()

    def to_env(self) -> str:
        """JSON for ``PRESSOR_SERVE_SETTINGS``."""
        return json.dumps(self.__dict__)


@dataclass
class Config:
    """The server configuration file, checked."""

    base_url: str | None = None
    issuers: dict[str, dict[str, Any]] = field(default_factory=dict)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    max_token_lifetime_s: int = 600
    clock_skew_s: int = 60
    max_body_bytes: int = 1_048_576
    audit_db: str | None = None
    #: Where accepted token ids are kept: None (this process), a postgresql:// URL or a SQLite file (shared).
    replay_cache: str | None = None
    audit_input: str = "full"
    require_audit: bool = False
    fhir_mapping: str | None = None
    lookback_hours: dict[str, float] = field(default_factory=dict)
    include_draft: bool = False
    profile: str | None = None  # a site profile file for the pack's parameters


def load_config(path: str | None) -> Config:
    """Read and check the configuration file (YAML or JSON); every problem is reported, with its line."""
    if path is None:
        return Config()
    doc = load_document(path)
    if not isinstance(doc.data, dict):
        raise InputError.single("the configuration must be a mapping", file=doc.file)
    problems = schema_problems(doc, CONFIG_SCHEMA)
    if problems:
        raise InputError(problems)
    data = doc.data
    issuers: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(data.get("issuers", [])):
        keys: dict[str, Any] = {}
        for j, spec in enumerate(item["keys"]):
            key, kid = _public_key(spec, doc, f"/issuers/{i}/keys/{j}")
            keys[kid] = key
        issuers[item["iss"]] = keys
    base = data.get("base_url")
    return Config(
        base_url=base.rstrip("/") if base else None, issuers=issuers,
        algorithms=tuple(data.get("algorithms", DEFAULT_ALGORITHMS)),
        max_token_lifetime_s=data.get("max_token_lifetime_s", 600), clock_skew_s=data.get("clock_skew_s", 60),
        max_body_bytes=data.get("max_body_bytes", 1_048_576), audit_db=data.get("audit_db"), replay_cache=data.get("replay_cache"),
        audit_input=data.get("audit_input", "full"), require_audit=data.get("require_audit", False),
        fhir_mapping=data.get("fhir_mapping"), lookback_hours=dict(data.get("lookback_hours", {})),
        include_draft=data.get("include_draft", False), profile=data.get("profile"),
    )


def _public_key(spec: dict[str, Any], doc: Document, pointer: str) -> tuple[Any, str]:
    import jwt
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        if "pem" in spec:
            key = load_pem_public_key(spec["pem"].encode("ascii"))
            kid = spec.get("kid")
        else:
            jwk = jwt.PyJWK(spec["jwk"])
            key, kid = jwk.key, spec.get("kid") or spec["jwk"].get("kid")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise InputError([Problem(f"unreadable public key: {exc}", **doc.where(pointer))]) from exc
    if not kid:
        raise InputError([Problem("a key needs a 'kid' (tokens name their key with it)", **doc.where(pointer))])
    if hasattr(key, "private_bytes"):
        raise InputError([Problem("this is a private key; give the public key only", **doc.where(pointer))])
    return key, kid


# --- authentication ------------------------------------------------------------------------


class AuthError(Exception):
    """A request without a valid CDS Hooks JWT (401)."""


class Verifier:
    """Checks the CDS Hooks bearer JWT: trusted issuer, its key, algorithm, aud, exp, iat, jti (no replay)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # jti of tokens not yet expired: in this process, or shared (config replay_cache)
        self.replay = open_replay_cache(config.replay_cache)

    def verify(self, authorization: str | None, audiences: list[str]) -> dict[str, Any]:
        """The token's claims; :class:`AuthError` saying why not."""
        import jwt

        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError("missing bearer token (Authorization: Bearer <JWT>)")
        token = authorization[len("Bearer "):].strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from exc
        alg, kid, iss = header.get("alg"), header.get("kid"), unverified.get("iss")
        if alg not in self.config.algorithms:
            raise AuthError(f"algorithm '{alg}' is not accepted (accepted: {', '.join(self.config.algorithms)})")
        keys = self.config.issuers.get(iss) if isinstance(iss, str) else None
        if keys is None:
            raise AuthError(f"issuer {iss!r} is not trusted")
        if not kid or kid not in keys:
            raise AuthError(f"unknown key id {kid!r} for issuer {iss!r}")
        try:
            claims = jwt.decode(token, keys[kid], algorithms=[alg], audience=audiences, issuer=iss,
                                leeway=self.config.clock_skew_s, options={"require": ["iss", "aud", "exp", "iat", "jti"]})
        except jwt.InvalidAudienceError as exc:
            raise AuthError(f"wrong audience: the token must be for {audiences[0]}") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        now = time.time()
        iat, exp, jti = claims["iat"], claims["exp"], claims["jti"]
        if iat > now + self.config.clock_skew_s:
            raise AuthError("token issued in the future (iat)")
        if exp - iat > self.config.max_token_lifetime_s:
            raise AuthError(f"token lifetime exp - iat is over {self.config.max_token_lifetime_s} s")
        if not isinstance(jti, str) or not jti:
            raise AuthError("token has no jti")
        try:
            replayed = self.replay.seen(jti, exp + self.config.clock_skew_s)
        except Exception as exc:  # noqa: BLE001 - a shared cache that fails accepts nothing
            raise AuthError(f"the token replay cache is unavailable ({type(exc).__name__})") from exc
        if replayed:
            raise AuthError("token replayed (jti already used)")
        return claims


# --- the audit log ---------------------------------------------------------------------------


class AuditSink:
    """The worker's one connection to the audit log, shared by all its requests.

    Opened in the lifespan; if that fails, each later write tries again, so a log that
    becomes writable is used without a restart. Writes run in the threadpool (an fsync must
    not stall the event loop), so one lock serialises them on the shared connection; across
    worker processes SQLite's WAL and ``BEGIN IMMEDIATE`` keep one valid chain.
    """

    def __init__(self, path: str | os.PathLike[str], input_mode: str) -> None:
        self.path = path
        self.input_mode = input_mode
        self._log: AuditLog | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open the log now; an :class:`AuditError` is logged, not raised (the next write retries)."""
        try:
            with self._lock:
                self._opened()
        except AuditError as exc:
            log.error("the audit log cannot be opened; the next call tries again: %s", exc)

    def _opened(self) -> AuditLog:
        if self._log is None:
            self._log = AuditLog.open(self.path)
        return self._log

    def close(self) -> None:
        """Close the connection (worker shutdown)."""
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def record(self, pack: RulePack, pairs: list[tuple[Any, Any]], *, now: datetime, user: str,
               hook_instance: str) -> list[str]:
        """One record per evaluated ``(state, result)``; their ids. Raises :class:`AuditError`."""
        with self._lock:
            audit = self._opened()
            return [audit.append(pack, state, result, now=now, user=user, input_mode=self.input_mode,
                                 hook_instance=hook_instance).id for state, result in pairs]

    def record_feedback(self, items: list[dict[str, Any]], *, service: str, now: datetime, user: str) -> list[str]:
        """One feedback entry per item, all or none; their ids. Raises :class:`AuditError`."""
        with self._lock:
            return [e.id for e in self._opened().append_feedback(items, service=service, now=now, user=user)]


# --- the runtime ---------------------------------------------------------------------------


@dataclass
class Runtime:
    """Everything a worker loads once."""

    settings: Settings
    config: Config
    pack: RulePack
    mapping: FhirMapping
    verifier: Verifier
    audit: AuditSink
    validators: dict[str, Any]
    drug_codings: dict[str, dict[str, str]]


def build_runtime(settings: Settings) -> Runtime:
    """Load configuration, pack and mapping, and compile the request validators (once per process)."""
    import fastjsonschema

    config = load_config(settings.config_path)
    pack = load_pack(settings.rules_dir, profile=config.profile)
    mapping = load_mapping(config.fhir_mapping, lookback_hours=config.lookback_hours or None)
    defs = schema(REQUEST_SCHEMA)
    validators = {name: fastjsonschema.compile({**defs, "$ref": f"#/$defs/{name}"}) for name in ("hookRequest", "feedback")}
    codings = {}
    for med in mapping.medications:
        c = mapping.drug_codes(med.drug)[0]
        codings[med.drug] = {"system": c.system, "code": c.code, "display": c.display}
    audit = AuditSink(resolve_path(config.audit_db), config.audit_input)
    return Runtime(settings, config, pack, mapping, Verifier(config), audit, validators, codings)


def _error(status: int, kind: str, message: str, problems: list[dict[str, Any]] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": kind, "message": message}
    if problems:
        body["problems"] = problems
    return JSONResponse(body, status_code=status, headers=headers)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app (uvicorn factory). Settings default to ``PRESSOR_SERVE_SETTINGS``."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.rt = build_runtime(settings)
        app.state.rt.audit.open()
        try:
            yield
        finally:
            app.state.rt.audit.close()

    app = FastAPI(title="pressor CDS Hooks service", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    if settings.insecure:
        @app.middleware("http")
        async def announce_insecure(request: Request, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers[INSECURE_HEADER] = INSECURE_TEXT
            return response

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

    def rt_of(request: Request) -> Runtime:
        return request.app.state.rt

    def base_url(request: Request) -> str:
        rt = rt_of(request)
        return rt.config.base_url or str(request.base_url).rstrip("/")

    def authenticate(request: Request, audiences: list[str]) -> str:
        """Who calls, for the audit log: the token's ``iss``, and ``|sub`` when it has one."""
        rt = rt_of(request)
        if rt.settings.insecure:
            return "insecure-no-auth"
        try:
            claims = rt.verifier.verify(request.headers.get("authorization"), audiences)
        except AuthError as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
        sub = claims.get("sub")
        return f"{claims['iss']}|{sub}" if isinstance(sub, str) and sub else claims["iss"]

    async def read_json(request: Request) -> Any:
        limit = rt_of(request).config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"request body is over {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"request body is over {limit} bytes")
            chunks.append(chunk)
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

    @app.exception_handler(PressorError)
    async def pressor_error(request: Request, exc: PressorError) -> JSONResponse:
        if isinstance(exc, EvaluationError):
            log.error("evaluation failed: %s", exc)
            return _error(500, exc.kind, str(exc), [p.to_dict() for p in exc.problems])
        return _error(400, exc.kind, str(exc), [p.to_dict() for p in exc.problems])

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        pack = rt_of(request).pack
        return {"status": "ok", "pack": {"name": pack.name, "version": pack.version, "sha256": pack.sha256}}

    @app.get("/rules/{rule_id}")
    async def rule_doc(request: Request, rule_id: str) -> dict[str, Any]:
        pack = rt_of(request).pack
        try:
            return rule_detail(pack, pack.rule(rule_id))
        except KeyError:
            raise HTTPException(404, f"no rule '{rule_id}' in {pack.name}") from None

    @app.get("/cds-services")
    async def discovery(request: Request) -> dict[str, Any]:
        authenticate(request, [f"{base_url(request)}/cds-services"])
        templates = prefetch_templates(rt_of(request).mapping)
        return {"services": [{"hook": s.hook, "id": s.id, "title": s.title, "description": s.description,
                              "prefetch": templates} for s in SERVICES.values()]}

    def service_of(service_id: str) -> Service:
        service = SERVICES.get(service_id)
        if service is None:
            raise HTTPException(404, f"no CDS Service '{service_id}' (see GET /cds-services)")
        return service

    @app.post("/cds-services/{service_id}")
    async def call(request: Request, service_id: str) -> JSONResponse:
        service = service_of(service_id)
        base = base_url(request)
        client = authenticate(request, [f"{base}/cds-services/{service_id}"])
        body = await read_json(request)
        check_shape(request, "hookRequest", body)
        if body["hook"] != service.hook:
            raise _BadRequest("bad_request", f"/hook: service '{service_id}' answers '{service.hook}', not '{body['hook']}'")
        rt = rt_of(request)
        now = _utc_now()
        conversion = from_hook_request(body, now=now, mapping=rt.mapping, pack=rt.pack)
        states = conversion.states()
        results = [evaluate(rt.pack, state, now=now, include_draft=rt.config.include_draft) for state in states]
        hook_instance = body["hookInstance"]
        cards = cards_for(results, conversion, hook_instance=hook_instance, base_url=base,
                          patient_id=body["context"]["patientId"], drug_codings=rt.drug_codings)
        try:
            ids = await run_in_threadpool(rt.audit.record, rt.pack, list(zip(states, results)), now=now, user=client,
                                          hook_instance=hook_instance)
            audited: dict[str, Any] = {"recorded": True, "records": ids}
        except AuditError as exc:
            log.error("cards of hookInstance %s NOT recorded in the audit log: %s", hook_instance, exc)
            if rt.config.require_audit:
                return _error(503, "audit_unavailable",
                              f"the advice is withheld (require_audit) because it could not be recorded: {exc}",
                              [p.to_dict() for p in exc.problems])
            # The clinician keeps the advice, and is told that there is no record of it.
            cards.append(not_recorded_card(hook_instance, results[0].pack, base, exc.problems[0].message))
            audited = {"recorded": False, "reason": str(exc)}
        extension = {"notes": conversion.notes, "missing": conversion.missing, "audit": audited,
                     "pack": results[0].pack, "mapping_sha256": rt.mapping.sha256, "evaluated_at": results[0].evaluated_at}
        return JSONResponse({"cards": cards, "extension": {"pressor": extension}})

    @app.post("/cds-services/{service_id}/feedback")
    async def feedback(request: Request, service_id: str) -> JSONResponse:
        service_of(service_id)
        base = base_url(request)
        client = authenticate(request, [f"{base}/cds-services/{service_id}", f"{base}/cds-services/{service_id}/feedback"])
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


class _BadRequest(Exception):
    """A 400 with a JSON body naming the problem."""

    def __init__(self, kind: str, message: str, problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.problems = kind, message, problems


def announce_insecure() -> None:
    """The loud start-up warning of ``--insecure-no-auth``."""
    bar = "!" * 78
    sys.stderr.write(f"{bar}\n!! pressor serve: {INSECURE_TEXT}\n!! every response carries the header {INSECURE_HEADER}\n{bar}\n")
    sys.stderr.flush()
