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
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from . import auditor, clinician, informaticist, signin
from .context import UiContext
from .pages import (CSP, HERE, MAX_DOCUMENT_BYTES, PREFIX, CsrfRefused, Forbidden, NotSignedIn, RepeatedField, TooLarge,  # noqa: F401 (re-exported)
                    render, templates)


def mount_ui(app: FastAPI, context_of: Callable[[Request], UiContext]) -> None:
    """Add the web app under ``/ui`` to ``app`` (its routes, static files and security headers)."""

    app.state.pressor_ui_context_of = context_of
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
        return render(request, "signin.html", 401, ctx=ctx, session=None, message=str(exc) or None)

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

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> HTMLResponse:
        session = getattr(request.state, "ui_session", None)
        have = ", ".join(session.roles) if session and session.roles else "none"
        return render(request, "message.html", 403, ctx=getattr(request.state, "ui_ctx", None), title="Not allowed",
                       message=f"Your role ({have}) does not open this page. Ask whoever administers pressor's "
                               "roles at your site if you need it.")


    for routes in (signin, clinician, informaticist, auditor):
        app.include_router(routes.router)


def create_ui_app(ctx: UiContext) -> FastAPI:
    """The web app on its own (``pressor ui``); ``/`` leads to ``/ui/``."""
    app = FastAPI(title="pressor", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    mount_ui(app, lambda request: ctx)
    return app
