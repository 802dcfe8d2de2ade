"""The web app for clinicians, informaticists and auditors (FastAPI + Jinja2, server-rendered).

No clinical logic here: every figure comes from the engine's public functions
(``evaluate``, ``explain``, ``lint_pack``, scenario ``run``/coverage, ``diff_packs``, the
audit log's ``records``/``record``/``verify``/``replay``/``export``), and dose text from
``engine.report``. Pages work without JavaScript; htmx (served by pressor itself) only
swaps fragments: the advice beside the form as the user types, explanations, the results
of verify and replay.

Every page under ``/ui`` except the sign-in routes and static assets needs a session
(:mod:`.auth`); every POST needs the session's CSRF token. Responses carry a strict
Content-Security-Policy (scripts and styles from this origin only, no inline script) and
``Cache-Control: no-store``.
"""
from __future__ import annotations

import html
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from pressor.engine.audit.records import PATIENT_KEY_ENV, patient_forms
from pressor.engine.errors import AuditError, PressorError
from pressor.engine.report import because_text, citations, dose_lines, ordered_evidence, quantity, rule_detail

from .auth import COOKIE, CSRF_FIELD, CSRF_HEADER, SIGN_IN_COOKIE, AuthFailure, Session
from .oidc import ProviderUnavailable
from .context import UiContext, stored_key
from .roles import RECORDERS, allowed
from .smart import LAUNCH_SECONDS, SMART_COOKIE, LaunchRefused
from .words import Wording

HERE = Path(__file__).resolve().parent
PREFIX = "/ui"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SEVERITIES = ("critical", "warning", "info")
AUDIT_PAGE = 200
MAX_DOCUMENT_BYTES = 2_000_000

templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals.update(dose_lines=dose_lines, cite_text=citations, quantity=quantity, SEVERITIES=SEVERITIES,
                             PREFIX=PREFIX)
#: The dose lines of engine.report that the page does not show in its own way (the weight-based
#: figures and pump rates get their own block; their sub-lines are indented by four spaces).
templates.env.globals["may_open"] = lambda session, path: session is not None and allowed(path, session.roles)
templates.env.globals["dose_extra_lines"] = lambda dose: [
    line.strip() for line in dose_lines(dose)[1:] if not line.startswith(("  for ", "  pump", "    "))]
templates.env.globals["because_text"] = because_text
templates.env.globals["ordered_evidence"] = ordered_evidence
templates.env.filters["groupby_rule"] = lambda recs: {r["rule_id"]: r for r in recs or ()}
templates.env.filters["groupby_fact"] = lambda asks: {a["fact"]: a for a in asks or ()}
templates.env.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, sort_keys=False)
templates.env.filters["show"] = lambda v: ("unknown" if v is None else "yes" if v is True else "no" if v is False
                                           else ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))


class NotSignedIn(Exception):
    """A request without a session (401, no data)."""


class CsrfRefused(Exception):
    """A state-changing request without this session's CSRF token or from another origin (403)."""


class Forbidden(Exception):
    """A signed-in user whose roles do not open this view (403; the message says which roles do)."""


class TooLarge(Exception):
    """A request body over :data:`MAX_DOCUMENT_BYTES` (413)."""


class RepeatedField(Exception):
    """A form field sent more than once where it takes one value (400): which value was meant is unknown."""


def _render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("session", getattr(request.state, "ui_session", None))
    context.setdefault("ctx", request.state.ui_ctx if hasattr(request.state, "ui_ctx") else None)
    context.setdefault("htmx", request.headers.get("hx-request") == "true")
    return templates.TemplateResponse(request, name, context, status_code=status)


async def _read_body(request: Request) -> bytes:
    """The request body, refused (:class:`TooLarge`) as soon as it passes :data:`MAX_DOCUMENT_BYTES`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
        raise TooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_DOCUMENT_BYTES:
            raise TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _utc(text: str | None) -> datetime | None:
    """A datetime-local / ISO text as an aware UTC datetime (None when empty)."""
    if not text:
        return None
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def mount_ui(app: FastAPI, context_of: Callable[[Request], UiContext]) -> None:
    """Add the web app under ``/ui`` to ``app`` (its routes, static files and security headers)."""

    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")

    @app.middleware("http")
    async def ui_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/"):
            ancestors = context_of(request).frame_ancestors
            # The EHR may embed the app (ui.frame_ancestors); nobody else, and nobody by default.
            response.headers["Content-Security-Policy"] = CSP if not ancestors else CSP.replace(
                "frame-ancestors 'none'", "frame-ancestors " + " ".join(ancestors))
            response.headers["X-Content-Type-Options"] = "nosniff"
            # same-origin, not no-referrer: under no-referrer Chromium sends "Origin: null" on form
            # POSTs, which the CSRF check rightly refuses; nothing leaves for another origin either way.
            response.headers["Referrer-Policy"] = "same-origin"
            if not ancestors:
                response.headers["X-Frame-Options"] = "DENY"
            response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
            if not request.url.path.startswith(f"{PREFIX}/static/"):
                response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn) -> HTMLResponse:
        ctx = context_of(request)
        return _render(request, "signin.html", 401, ctx=ctx, session=None, message=str(exc) or None)

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, exc: TooLarge) -> HTMLResponse:
        return HTMLResponse(f"<!doctype html><title>Too large</title><p>Refused: the request is over {MAX_DOCUMENT_BYTES} "
                            "bytes.</p>", status_code=413)

    @app.exception_handler(RepeatedField)
    async def repeated_field(request: Request, exc: RepeatedField) -> HTMLResponse:
        return HTMLResponse(f"<!doctype html><title>Refused</title><p>Refused: the form field {html.escape(str(exc))} was sent "
                            "more than once, and it takes one value (reload the page and try again).</p>", status_code=400)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>Refused</title><p>Refused: this request did not carry the page's "
                            "CSRF token (reload the page and try again).</p>", status_code=403)

    def signed_in(request: Request) -> tuple[UiContext, Session]:
        ctx = context_of(request)
        session = ctx.auth.session(request.cookies)
        if session is None:
            raise NotSignedIn()
        request.state.ui_ctx, request.state.ui_session = ctx, session
        if not allowed(request.url.path, session.roles):
            raise Forbidden(request.url.path)
        return ctx, session

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> HTMLResponse:
        session = getattr(request.state, "ui_session", None)
        have = ", ".join(session.roles) if session and session.roles else "none"
        return _render(request, "message.html", 403, ctx=getattr(request.state, "ui_ctx", None), title="Not allowed",
                       message=f"Your role ({have}) does not open this page. Ask whoever administers pressor's "
                               "roles at your site if you need it.")

    async def posted(request: Request) -> tuple[UiContext, Session, list[tuple[str, str]]]:
        """A signed-in POST with its CSRF token checked; the urlencoded form pairs."""
        ctx, session = signed_in(request)
        body = await _read_body(request)
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True) \
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded") else []
        multiple = {f.name for f in ctx.form.fields.values() if f.kind == "choices"}
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen and key not in multiple:
                raise RepeatedField(repr(key[:80]))
            seen.add(key)
        offered = request.headers.get(CSRF_HEADER) or next((v for k, v in pairs if k == CSRF_FIELD), None)
        own = ctx.origin or f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
        if not ctx.auth.csrf_ok(session, offered, request.headers.get("origin"), own):
            raise CsrfRefused()
        return ctx, session, pairs

    # -- signing in -----------------------------------------------------------
    @app.get(PREFIX, include_in_schema=False)
    async def ui_root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    def callback_url(request: Request, ctx: UiContext) -> str:
        return f"{ctx.base_url}{PREFIX}/login/callback" if ctx.base_url else str(request.url_for("ui_oidc_callback"))

    def sign_in_failed(request: Request, ctx: UiContext, status: int, reason: str) -> HTMLResponse:
        from pressor.service.logs import auth_failure

        auth_failure(f"web app sign-in: {reason}", path=request.url.path, iss=None,
                     peer=request.client.host if request.client else None)
        response = _render(request, "signin.html", status, ctx=ctx, session=None, message=reason)
        response.delete_cookie(SIGN_IN_COOKIE, path=f"{PREFIX}/login")
        return response

    @app.get(f"{PREFIX}/login")
    async def login(request: Request, token: str | None = None) -> Response:
        ctx = context_of(request)
        if ctx.auth.mode == "oidc":
            try:  # discovery may be fetched: not on the event loop
                url, browser = await run_in_threadpool(ctx.auth.begin_sign_in, callback_url(request, ctx))
            except ProviderUnavailable as exc:
                return sign_in_failed(request, ctx, 502, f"the identity provider cannot be used now: {exc}")
            except AuthFailure as exc:
                return sign_in_failed(request, ctx, 503, str(exc))
            response = RedirectResponse(url, status_code=303)
            response.set_cookie(SIGN_IN_COOKIE, browser, **ctx.auth.sign_in_cookie_options())
            return response
        try:
            sub = ctx.auth.spend_token(token)
        except AuthFailure as exc:
            return _render(request, "signin.html", 401, ctx=ctx, session=None, message=str(exc))
        response = RedirectResponse(f"{PREFIX}/", status_code=303)
        response.set_cookie(COOKIE, ctx.auth.new_session_cookie(sub), **ctx.auth.cookie_options())
        return response

    @app.get(f"{PREFIX}/login/callback", name="ui_oidc_callback")
    async def oidc_callback(request: Request) -> Response:
        # Reached by the provider's redirect (cross-site): protected by the single-use signed state, the
        # sign-in cookie of the browser that started it, PKCE and the nonce.
        ctx = context_of(request)
        if ctx.auth.mode != "oidc":
            return _render(request, "signin.html", 404, ctx=ctx, session=None, message="this server does not use an identity provider")
        params = {k: v for k, v in request.query_params.items() if len(v) <= 8192}
        try:
            sub, id_token, roles = await run_in_threadpool(ctx.auth.finish_sign_in, params,
                                                           request.cookies.get(SIGN_IN_COOKIE), callback_url(request, ctx))
        except AuthFailure as exc:
            return sign_in_failed(request, ctx, 401, str(exc))
        except ProviderUnavailable as exc:
            return sign_in_failed(request, ctx, 502, f"the identity provider cannot be used now: {exc}")
        # A SameSite=Strict cookie is not sent on a redirect that continues a cross-site navigation;
        # a same-origin page that moves on by itself is.
        home = next(p for p in (f"{PREFIX}/", f"{PREFIX}/audit", f"{PREFIX}/rules") if allowed(p, roles))  # the first view they may open
        response = _render(request, "moving_on.html", ctx=ctx, session=None, title="Signed in", heading="Signed in",
                           next_url=home, link="Continue to pressor")
        response.set_cookie(COOKIE, ctx.auth.new_session_cookie(sub, id_token, roles), **ctx.auth.cookie_options())
        response.delete_cookie(SIGN_IN_COOKIE, path=f"{PREFIX}/login")
        return response

    # -- SMART App Launch from the EHR (smart.py) ------------------------------------
    def launch_callback_url(request: Request, ctx: UiContext) -> str:
        return f"{ctx.base_url}{PREFIX}/launch/callback" if ctx.base_url else str(request.url_for("ui_smart_callback"))

    @app.get(f"{PREFIX}/launch")
    async def smart_launch(request: Request, iss: str | None = None, launch: str | None = None) -> Response:
        ctx = context_of(request)
        if ctx.smart is None:
            return _render(request, "signin.html", 404, ctx=ctx, session=None, message="SMART launch is not configured here (ui.smart)")
        try:
            url, browser = await run_in_threadpool(ctx.smart.begin, iss, launch, launch_callback_url(request, ctx))
        except LaunchRefused as exc:
            return _render(request, "signin.html", 400, ctx=ctx, session=None, message=str(exc))
        response = RedirectResponse(url, status_code=303)
        response.set_cookie(SMART_COOKIE, browser, httponly=True, samesite="lax", path=f"{PREFIX}/launch",
                            secure=ctx.auth.secure_cookies, max_age=LAUNCH_SECONDS)
        return response

    @app.get(f"{PREFIX}/launch/callback", name="ui_smart_callback")
    async def smart_callback(request: Request) -> Response:
        ctx = context_of(request)
        if ctx.smart is None:
            return _render(request, "signin.html", 404, ctx=ctx, session=None, message="SMART launch is not configured here (ui.smart)")
        params = {k: v for k, v in request.query_params.items() if len(v) <= 8192}
        try:
            tokens = await run_in_threadpool(ctx.smart.finish, params, request.cookies.get(SMART_COOKIE),
                                             launch_callback_url(request, ctx), ctx.auth.marks.mark)
        except LaunchRefused as exc:
            return _render(request, "signin.html", 401, ctx=ctx, session=None, message=str(exc))
        state, notes = await ctx.smart_record(tokens)
        # The EHR vouched for the launch, not for a named user (no ID token is verified yet): the session's
        # user is the EHR's launch, with the clinician role only.
        cookie = ctx.auth.new_session_cookie(f"{tokens['iss']}|smart-launch", None, ("clinician",))
        session = ctx.auth.session({COOKIE: cookie})
        request.state.ui_ctx, request.state.ui_session = ctx, session
        advice = await run_in_threadpool(advise, ctx, session, state, record=False) if state else None
        notice = f"Opened from the EHR for Patient/{tokens['patient']}; the record was read from {tokens['iss']}" + (
            f" ({'; '.join(notes)})" if notes else "")
        response = clinician_page(request, ctx, state=state, advice=advice, notice=notice)
        response.set_cookie(COOKIE, cookie, **ctx.auth.cookie_options())
        response.delete_cookie(SMART_COOKIE, path=f"{PREFIX}/launch")
        return response

    @app.post(f"{PREFIX}/logout")
    async def logout(request: Request) -> Response:
        ctx, session, _ = await posted(request)
        try:
            await run_in_threadpool(ctx.auth.end_session, session)
        except Exception as exc:  # noqa: BLE001 - the cookie is cleared below whatever the store says
            import logging

            logging.getLogger("pressor.serve.ui").error("sign-out could not be recorded: %r", exc)
        # Then out of the identity provider too when it offers RP-initiated logout, coming back only to our own
        # configured URL. A page that moves on by itself, not a redirect: CSP form-action 'self' would stop a
        # form POST redirected to another origin.
        back = f"{ctx.base_url}{PREFIX}/" if ctx.base_url else None
        at_provider = await run_in_threadpool(ctx.auth.end_session_url, session, back)
        if at_provider:
            response: Response = _render(request, "moving_on.html", ctx=ctx, session=None, title="Signed out",
                                         heading="Signed out of pressor", next_url=at_provider,
                                         link="Sign out of your organisation's account too")
        else:
            response = RedirectResponse(f"{PREFIX}/", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    # -- clinician --------------------------------------------------------------
    def clinician_page(request: Request, ctx: UiContext, *, state: Any = None, form_errors: dict[str, str] | None = None,
                       advice: dict[str, Any] | None = None, document: str = "", document_kind: str = "state",
                       notice: str | None = None, explanation: Any = None, status: int = 200) -> HTMLResponse:
        values = ctx.form.values(state) if isinstance(state, dict) else {}
        return _render(request, "clinician.html", status, values=values, form_errors=form_errors or {}, advice=advice,
                       document=document, document_kind=document_kind, notice=notice, explanation=explanation,
                       unplaced=ctx.form.unplaced(state) if isinstance(state, dict) else [])

    def advise(ctx: UiContext, session: Session, state: dict[str, Any], *, record: bool,
               form_errors: dict[str, str] | None = None) -> dict[str, Any]:
        """Evaluate (and record, if asked); what the advice panel shows."""
        from pressor.engine.evaluation.evaluate import evaluate

        out: dict[str, Any] = {"state": state, "form_errors": form_errors or {}, "recorded": None, "record_error": None}
        if form_errors:
            return out
        now = ctx.clock()
        try:
            result = evaluate(ctx.pack, state, now=now, include_draft=ctx.include_draft)
        except PressorError as exc:
            out["problems"] = [p for p in exc.problems]
            out["error_kind"] = exc.kind
            return out
        out["result"] = result.to_dict()
        if record and not RECORDERS & set(session.roles):
            out["record_error"] = f"your role ({', '.join(session.roles) or 'none'}) does not record advice"
        elif record:
            from pressor.engine.audit import AuditLog

            try:
                with AuditLog.open(ctx.audit_path) as log:
                    out["recorded"] = log.append(ctx.pack, state, result, now=now, user=session.sub, input_mode=ctx.input_mode)
            except AuditError as exc:
                out["record_error"] = str(exc)
        return out

    @app.get(f"{PREFIX}/")
    async def clinician(request: Request, example: str | None = None, witness: int | None = None,
                        record: str | None = None, rule_example: str | None = None) -> HTMLResponse:
        ctx, session = signed_in(request)
        state: Any = None
        notice = None
        if example:
            found = ctx.example(example)
            if found is None:
                return clinician_page(request, ctx, notice=f"no example named '{example}'", status=404)
            if found.kind == "fhir":
                return await run_in_threadpool(fhir_page, request, ctx, session, found.text, f"example {found.name}")
            if found.kind == "timeline":
                return await run_in_threadpool(state_page, request, ctx, session, found.text, f"example {found.name}")
            from pressor.engine.evaluation.load import parse

            state = parse(found.text, file=f"examples/{found.name}.yaml").data
            notice = f"Example: {found.name}. {found.description}"
        elif witness is not None:
            report = await run_in_threadpool(ctx.lint)
            with_witness = [f for f in report.findings if f.witness is not None]
            if not 0 <= witness < len(with_witness):
                return clinician_page(request, ctx, notice=f"no lint witness #{witness}", status=404)
            finding = with_witness[witness]
            state = finding.witness
            notice = f"Lint witness for {finding.code} ({', '.join(finding.rules)}): {finding.message}"
        elif rule_example:
            rule_id, _, index = rule_example.rpartition(":")
            try:
                item = ctx.pack.rule(rule_id).raw.get("examples", [])[int(index)]
            except (KeyError, ValueError, IndexError):
                return clinician_page(request, ctx, notice=f"no rule example '{rule_example}'", status=404)
            state = item.get("state")
            notice = f"Example of rule {rule_id}: {item.get('name', '')} (expects it {str(item.get('expect', '')).replace('_', ' ')})"
        elif record:
            from pressor.engine.audit import AuditLog

            try:
                with AuditLog.open(ctx.audit_path, create=False) as log:
                    rec = log.record(record)
            except AuditError as exc:
                return clinician_page(request, ctx, notice=str(exc), status=404)
            if rec.input is None:
                return clinician_page(request, ctx, notice=f"record #{rec.seq} kept only the SHA-256 of its input", status=404)
            state = rec.input
            notice = f"Input of audit record #{rec.seq} ({rec.id[:8]}), recorded {rec.recorded_at[:19]}Z for {rec.user}"
        advice = await run_in_threadpool(advise, ctx, session, state, record=False) if isinstance(state, dict) else None
        return clinician_page(request, ctx, state=state, advice=advice, notice=notice)

    @app.post(f"{PREFIX}/advice")
    async def advice(request: Request) -> HTMLResponse:
        ctx, session, pairs = await posted(request)
        state, errors = ctx.form.parse(pairs)
        record = any(k == "record" and v == "1" for k, v in pairs)
        result = await run_in_threadpool(advise, ctx, session, state, record=record, form_errors=errors)
        if request.headers.get("hx-request") == "true":
            return _render(request, "advice.html", advice=result)
        return clinician_page(request, ctx, state=state, form_errors=errors, advice=result)

    def fhir_page(request: Request, ctx: UiContext, session: Session, text: str, label: str, *,
                  record: bool = False) -> HTMLResponse:
        from pressor.engine.ehr.fhir import from_bundle
        from pressor.engine.evaluation.load import parse

        mapping = ctx.fhir_mapping()
        try:
            # as `pressor recommend --fhir` reads a file: the FHIR size limit, temporal facts from the pack
            bundle = parse(text, file=label, fmt="json", max_bytes=mapping.max_bundle_bytes, what="FHIR bundle",
                           positions=False).data
            conversion = from_bundle(bundle, now=ctx.clock(), file=label, mapping=mapping, pack=ctx.pack)
            states = conversion.states()
        except PressorError as exc:
            result = {"state": None, "problems": list(exc.problems), "error_kind": exc.kind, "form_errors": {}}
            return clinician_page(request, ctx, document=text, document_kind="fhir", advice=result, status=400)
        if len(states) > 1:
            return clinician_page(request, ctx, document=text, document_kind="fhir", status=400,
                                  notice=f"the bundle holds {len(states)} draft orders; keep one draft MedicationRequest")
        state = states[0]
        result = advise(ctx, session, state, record=record)
        result["fhir"] = {"notes": conversion.notes, "missing": conversion.missing}
        return clinician_page(request, ctx, state=state, advice=result, document=text, document_kind="fhir",
                              notice=f"FHIR bundle ({label}) converted to the facts below; edit them to see the advice change.")

    def state_page(request: Request, ctx: UiContext, session: Session, text: str, label: str, *,
                   record: bool = False) -> HTMLResponse:
        """A patient state (YAML or JSON), or a timeline input (top-level ``timeline:``) where the
        engine reads them."""
        from pressor.engine.evaluation.load import parse

        try:
            doc = parse(text, file=label)
        except PressorError as exc:
            result = {"state": None, "problems": list(exc.problems), "error_kind": exc.kind, "form_errors": {}}
            return clinician_page(request, ctx, document=text, advice=result, status=400)
        if not isinstance(doc.data, dict):
            return clinician_page(request, ctx, document=text, status=400, notice="a patient state is a mapping of sections")
        notes = None
        state = doc.data
        if "timeline" in state:
            from pressor.engine.ehr.fhir import from_timeline

            try:
                conversion = from_timeline(doc, now=ctx.clock(), pack=ctx.pack)
            except PressorError as exc:
                result = {"state": None, "problems": list(exc.problems), "error_kind": exc.kind, "form_errors": {}}
                return clinician_page(request, ctx, document=text, advice=result, status=400)
            state, notes = conversion.state, {"notes": conversion.notes, "missing": getattr(conversion, "missing", [])}
        result = advise(ctx, session, state, record=record)
        if notes is not None:
            result["fhir"] = notes
        return clinician_page(request, ctx, state=state, advice=result, document=text,
                              notice=f"{label}: read into the form below; edit the facts to see the advice change.")

    @app.post(f"{PREFIX}/document")
    async def document(request: Request) -> HTMLResponse:
        """A pasted (or file-read) FHIR R4 bundle, patient state (YAML/JSON) or timeline input."""
        ctx, session, pairs = await posted(request)
        form = dict(pairs)
        text, kind = form.get("document", ""), form.get("kind", "state")
        record = form.get("record") == "1"
        page = fhir_page if kind == "fhir" else state_page
        label = "pasted bundle" if kind == "fhir" else "pasted input"
        return await run_in_threadpool(page, request, ctx, session, text, label, record=record)

    @app.post(f"{PREFIX}/explain")
    async def explain_rule(request: Request) -> HTMLResponse:
        from pressor.engine.evaluation.explain import explain

        ctx, session, pairs = await posted(request)
        form = dict(pairs)
        state, errors = ctx.form.parse(pairs)
        rule_id = form.get("rule", "")
        try:
            now = _utc(form.get("evaluated_at")) or ctx.clock()
        except ValueError:
            now = ctx.clock()
        if errors:
            explanation, problem = None, "fix the highlighted fields first"
        else:
            try:
                explanation = await run_in_threadpool(explain, ctx.pack, state, now=now, include_draft=ctx.include_draft,
                                                      rule_id=rule_id)
                problem = None
            except PressorError as exc:
                explanation, problem = None, str(exc)
        if request.headers.get("hx-request") == "true":
            return _render(request, "explanation.html", explanation=explanation, problem=problem, rule_id=rule_id)
        result = await run_in_threadpool(advise, ctx, session, state, record=False, form_errors=errors)
        return clinician_page(request, ctx, state=state, form_errors=errors, advice=result,
                              explanation={"rule_id": rule_id, "value": explanation, "problem": problem})

    # -- informaticist ----------------------------------------------------------
    @app.get(f"{PREFIX}/rules")
    async def rules(request: Request, q: str = "", drug: str = "", section: str = "", status: str = "") -> HTMLResponse:
        ctx, _ = signed_in(request)
        pack = ctx.pack
        needle = q.strip().lower()

        def drug_of(rule: Any) -> str:
            return rule.drug or (rule.dose.drug if rule.dose else "") or ""

        found = [r for r in pack.rules
                 if (not needle or needle in r.id.lower() or needle in r.title.lower() or needle in r.summary.lower())
                 and (not drug or drug_of(r) == drug) and (not section or r.section == section)
                 and (not status or r.status == status)]
        facets = {"drugs": sorted({drug_of(r) for r in pack.rules} - {""}),
                  "sections": sorted({r.section for r in pack.rules}),
                  "statuses": sorted({r.status for r in pack.rules})}
        return _render(request, "rules.html", rules=found, facets=facets,
                       query={"q": q, "drug": drug, "section": section, "status": status})

    @app.get(f"{PREFIX}/rules/{{rule_id}}")
    async def rule_page(request: Request, rule_id: str) -> HTMLResponse:
        from pressor.engine.model import render_condition

        ctx, _ = signed_in(request)
        try:
            rule = ctx.pack.rule(rule_id)
        except KeyError:
            return _render(request, "message.html", 404, title="No such rule", message=f"no rule '{rule_id}' in this pack")
        detail = rule_detail(ctx.pack, rule)
        dose = None
        if rule.dose is not None:
            d = rule.dose
            dose = {"drug": d.drug, "range": d.range.to_dict(), "route": d.route, "frequency": d.frequency, "within": d.within,
                    **{k: getattr(d, k).to_dict() for k in ("typical", "maximum", "alternative", "cap") if getattr(d, k)},
                    "pump_rate": d.pump_rate, "remaining_after": d.remaining_after}
        examples = rule.raw.get("examples", [])
        wording = Wording(ctx.pack, ctx.form)
        return _render(request, "rule.html", rule=rule, detail=detail, condition=render_condition(rule.when), dose=dose,
                       provenance=rule.provenance(), examples=examples, words=wording.phrases(rule.when),
                       derived=wording.derived_used(rule.when))

    @app.get(f"{PREFIX}/lint")
    async def lint(request: Request) -> HTMLResponse:
        ctx, _ = signed_in(request)
        report = await run_in_threadpool(ctx.lint)
        findings, n = [], 0
        for finding in report.findings:  # witnesses are numbered in report order, as ?witness= reads them
            findings.append((finding, n if finding.witness is not None else None))
            n += finding.witness is not None
        return _render(request, "lint.html", report=report, findings=findings)

    @app.get(f"{PREFIX}/coverage")
    async def coverage(request: Request) -> HTMLResponse:
        ctx, _ = signed_in(request)
        try:
            test_run = await run_in_threadpool(ctx.test_run)
        except PressorError as exc:
            return _render(request, "message.html", 400, title="Scenarios do not load", message=str(exc))
        cov = test_run.coverage
        return _render(request, "coverage.html", run=test_run, cov=cov, cov_data=cov.to_dict(),
                       outcomes=("fired", "not_fired", "not_evaluable"))

    @app.get(f"{PREFIX}/diff")
    async def diff(request: Request, old: str = "", new: str = "current") -> HTMLResponse:
        from pressor.engine.authoring.pack_diff import diff_packs

        ctx, _ = signed_in(request)
        choices = await run_in_threadpool(ctx.comparable_packs)
        result, problem = None, None
        if old:
            try:
                old_pack = await run_in_threadpool(ctx.pack_by_key, old)
                new_pack = await run_in_threadpool(ctx.pack_by_key, new)
                paths = [p for p in ctx.scenario_paths if Path(p).exists()]
                result = (await run_in_threadpool(diff_packs, old_pack, new_pack, paths)).to_dict()
            except KeyError:
                problem = "choose two packs from the lists"
            except PressorError as exc:
                problem = str(exc)
        return _render(request, "diff.html", choices=choices, old=old, new=new, diff=result, problem=problem)

    # -- auditor -----------------------------------------------------------------
    def open_log(ctx: UiContext) -> Any:
        from pressor.engine.audit import AuditLog

        return AuditLog.open(ctx.audit_path, create=False)

    @app.get(f"{PREFIX}/audit")
    async def audit(request: Request, since: str = "", until: str = "", user: str = "", rule: str = "",
                    version: str = "", patient: str = "") -> HTMLResponse:
        ctx, _ = signed_in(request)
        query = {"since": since, "until": until, "user": user, "rule": rule, "version": version, "patient": patient}
        try:
            start, end = _utc(since), _utc(until)
        except ValueError:
            return _render(request, "audit.html", 400, records=[], query=query, total=0,
                           problem="times must look like 2026-11-30T14:05")

        def select() -> tuple[list[Any], int]:
            filters = {"since": start, "until": end, "rule": rule.strip() or None, "user": user or None,
                       "version": version.strip() or None, "patient": patient_forms(patient.strip() or None,
                                                                          os.environ.get(PATIENT_KEY_ENV, "").encode() or None)}
            with open_log(ctx) as log:  # the filters, the newest page and the count all run in the database
                return list(log.records(**filters, newest_first=True, limit=AUDIT_PAGE)), log.count_records(**filters)

        try:
            records, total = await run_in_threadpool(select)
            problem = None
        except AuditError as exc:
            records, total, problem = [], 0, str(exc)
        return _render(request, "audit.html", records=records, total=total, query=query, problem=problem,
                       page=AUDIT_PAGE)

    @app.get(f"{PREFIX}/audit/export")
    async def audit_export(request: Request, kind: str = "records", format: str = "jsonl") -> Response:
        ctx, _ = signed_in(request)
        if kind not in ("records", "feedback") or format not in ("jsonl", "csv", "fhir-auditevent") or (
                format == "fhir-auditevent" and kind != "records"):
            return _render(request, "message.html", 400, title="Export", message="kind is records|feedback, format jsonl|csv (or fhir-auditevent for records)")

        def export() -> Any:
            # In memory up to 8 MB, then on disk: a large log is not held in memory whole.
            out = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, mode="w+", encoding="utf-8", newline="")
            try:
                with open_log(ctx) as log:
                    log.export(format, out, kind=kind)
            except BaseException:
                out.close()
                raise
            out.seek(0)
            return out

        def chunks(out: Any) -> Iterator[str]:
            with out:
                while block := out.read(64 * 1024):
                    yield block

        try:
            spooled = await run_in_threadpool(export)
        except AuditError as exc:
            return _render(request, "message.html", 404, title="Export", message=str(exc))
        media = "text/csv" if format == "csv" else "application/fhir+ndjson" if format == "fhir-auditevent" else "application/x-ndjson"
        suffix = "auditevent.ndjson" if format == "fhir-auditevent" else format
        return StreamingResponse(chunks(spooled), media_type=f"{media}; charset=utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="pressor-audit-{kind}.{suffix}"'})

    @app.get(f"{PREFIX}/audit/{{record_id}}")
    async def audit_record(request: Request, record_id: str) -> HTMLResponse:
        from pressor.service.cards import card_uuid

        ctx, _ = signed_in(request)

        def load() -> dict[str, Any]:
            with open_log(ctx) as log:
                rec = log.record(record_id)
                previous, following = log.neighbours(rec.seq)
                cards = []
                if rec.hook_instance:
                    for fired in rec.fired():
                        rule, _, version = fired.partition("@")
                        uid = card_uuid(rec.hook_instance, rule, version, rec.pack_sha256)
                        cards.append({"rule": fired, "uuid": uid, "feedback": [f.to_dict() for f in log.feedback(card=uid)]})
                return {"rec": rec, "previous": previous, "following": following, "cards": cards,
                        "database_id": log.database_id}

        try:
            data = await run_in_threadpool(load)
        except AuditError as exc:
            return _render(request, "message.html", 404, title="Audit record", message=str(exc))
        rec = data["rec"]
        result = rec.result
        profile = rec.profile
        # compared with the pack it was evaluated with: its stored pack under the site profile it names
        compare = stored_key(rec.pack_sha256, profile)
        serving = stored_key(ctx.pack.sha256, ctx.pack.profile.to_dict() if ctx.pack.profile else None)
        return _render(request, "audit_record.html", **data, result=result, input=rec.input, profile=profile,
                       compare=None if compare == serving else compare)

    @app.post(f"{PREFIX}/audit/verify")
    async def audit_verify(request: Request) -> HTMLResponse:
        ctx, _, _ = await posted(request)

        def verify() -> Any:
            with open_log(ctx) as log:
                return log.verify()

        try:
            verification, problem = await run_in_threadpool(verify), None
        except AuditError as exc:
            verification, problem = None, str(exc)
        return _render(request, "verify.html", verification=verification, problem=problem)

    @app.post(f"{PREFIX}/audit/{{record_id}}/replay")
    async def audit_replay(request: Request, record_id: str) -> HTMLResponse:
        ctx, _, _ = await posted(request)

        def replay() -> Any:
            with open_log(ctx) as log:
                return log.replay(record_id)

        try:
            outcome, problem = await run_in_threadpool(replay), None
        except AuditError as exc:
            outcome, problem = None, str(exc)
        return _render(request, "replay.html", replay=outcome, problem=problem)


def create_ui_app(ctx: UiContext) -> FastAPI:
    """The web app on its own (``pressor ui``); ``/`` leads to ``/ui/``."""
    app = FastAPI(title="pressor", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    mount_ui(app, lambda request: ctx)
    return app
