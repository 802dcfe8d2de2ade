"""What every page of the web app shares: templates and rendering, the request limits, the errors a
route raises, who is signed in (and the CSRF check of a POST), and the clinician's page and advice
(both the clinician's routes and the SMART launch show it)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from pressor.engine.errors import AuditError, PressorError
from pressor.engine.report import because_text, citations, dose_lines, ordered_evidence, quantity

from .auth import CSRF_FIELD, CSRF_HEADER, Session
from .context import UiContext
from .roles import RECORDERS, allowed


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


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("session", getattr(request.state, "ui_session", None))
    context.setdefault("ctx", request.state.ui_ctx if hasattr(request.state, "ui_ctx") else None)
    context.setdefault("htmx", request.headers.get("hx-request") == "true")
    return templates.TemplateResponse(request, name, context, status_code=status)


async def read_body(request: Request) -> bytes:
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


def utc(text: str | None) -> datetime | None:
    """A datetime-local / ISO text as an aware UTC datetime (None when empty)."""
    if not text:
        return None
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)

def context_of(request: Request) -> UiContext:
    """The web app's context for this request: :func:`.app.mount_ui` keeps how to find it on the app."""
    context: UiContext = request.app.state.pressor_ui_context_of(request)
    return context


def signed_in(request: Request) -> tuple[UiContext, Session]:
    ctx = context_of(request)
    session = ctx.auth.session(request.cookies)
    if session is None:
        raise NotSignedIn()
    request.state.ui_ctx, request.state.ui_session = ctx, session
    if not allowed(request.url.path, session.roles):
        raise Forbidden(request.url.path)
    return ctx, session


async def posted(request: Request) -> tuple[UiContext, Session, list[tuple[str, str]]]:
    """A signed-in POST with its CSRF token checked; the urlencoded form pairs."""
    ctx, session = signed_in(request)
    body = await read_body(request)
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


# -- the clinician's page --------------------------------------------------------------
def clinician_page(request: Request, ctx: UiContext, *, state: Any = None, form_errors: dict[str, str] | None = None,
                   advice: dict[str, Any] | None = None, document: str = "", document_kind: str = "state",
                   notice: str | None = None, explanation: Any = None, status: int = 200) -> HTMLResponse:
    values = ctx.form.values(state) if isinstance(state, dict) else {}
    return render(request, "clinician.html", status, values=values, form_errors=form_errors or {}, advice=advice,
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
