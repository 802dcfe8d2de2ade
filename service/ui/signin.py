"""The web app's sign-in routes: a one-time link or the OIDC code flow, SMART App Launch from the EHR, sign-out."""
from __future__ import annotations


from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool


from .auth import COOKIE, SIGN_IN_COOKIE, AuthFailure
from .oidc import ProviderUnavailable
from .context import UiContext
from .roles import allowed
from .smart import LAUNCH_SECONDS, SMART_COOKIE, LaunchRefused


from .pages import (PREFIX, render, context_of, posted, clinician_page, advise)

router = APIRouter()


# -- signing in -----------------------------------------------------------
@router.get(PREFIX, include_in_schema=False)
async def ui_root() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/", status_code=307)

def callback_url(request: Request, ctx: UiContext) -> str:
    return f"{ctx.base_url}{PREFIX}/login/callback" if ctx.base_url else str(request.url_for("ui_oidc_callback"))

def sign_in_failed(request: Request, ctx: UiContext, status: int, reason: str) -> HTMLResponse:
    from pressor.service.logs import auth_failure

    auth_failure(f"web app sign-in: {reason}", path=request.url.path, iss=None,
                 peer=request.client.host if request.client else None)
    response = render(request, "signin.html", status, ctx=ctx, session=None, message=reason)
    response.delete_cookie(SIGN_IN_COOKIE, path=f"{PREFIX}/login")
    return response

@router.get(f"{PREFIX}/login")
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
        return render(request, "signin.html", 401, ctx=ctx, session=None, message=str(exc))
    response = RedirectResponse(f"{PREFIX}/", status_code=303)
    response.set_cookie(COOKIE, ctx.auth.new_session_cookie(sub), **ctx.auth.cookie_options())
    return response

@router.get(f"{PREFIX}/login/callback", name="ui_oidc_callback")
async def oidc_callback(request: Request) -> Response:
    # Reached by the provider's redirect (cross-site): protected by the single-use signed state, the
    # sign-in cookie of the browser that started it, PKCE and the nonce.
    ctx = context_of(request)
    if ctx.auth.mode != "oidc":
        return render(request, "signin.html", 404, ctx=ctx, session=None, message="this server does not use an identity provider")
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
    response = render(request, "moving_on.html", ctx=ctx, session=None, title="Signed in", heading="Signed in",
                       next_url=home, link="Continue to pressor")
    response.set_cookie(COOKIE, ctx.auth.new_session_cookie(sub, id_token, roles), **ctx.auth.cookie_options())
    response.delete_cookie(SIGN_IN_COOKIE, path=f"{PREFIX}/login")
    return response

# -- SMART App Launch from the EHR (smart.py) ------------------------------------
def launch_callback_url(request: Request, ctx: UiContext) -> str:
    return f"{ctx.base_url}{PREFIX}/launch/callback" if ctx.base_url else str(request.url_for("ui_smart_callback"))

@router.get(f"{PREFIX}/launch")
async def smart_launch(request: Request, iss: str | None = None, launch: str | None = None) -> Response:
    ctx = context_of(request)
    if ctx.smart is None:
        return render(request, "signin.html", 404, ctx=ctx, session=None, message="SMART launch is not configured here (ui.smart)")
    try:
        url, browser = await run_in_threadpool(ctx.smart.begin, iss, launch, launch_callback_url(request, ctx))
    except LaunchRefused as exc:
        return render(request, "signin.html", 400, ctx=ctx, session=None, message=str(exc))
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(SMART_COOKIE, browser, httponly=True, samesite="lax", path=f"{PREFIX}/launch",
                        secure=ctx.auth.secure_cookies, max_age=LAUNCH_SECONDS)
    return response

@router.get(f"{PREFIX}/launch/callback", name="ui_smart_callback")
async def smart_callback(request: Request) -> Response:
    ctx = context_of(request)
    if ctx.smart is None:
        return render(request, "signin.html", 404, ctx=ctx, session=None, message="SMART launch is not configured here (ui.smart)")
    params = {k: v for k, v in request.query_params.items() if len(v) <= 8192}
    try:
        tokens = await run_in_threadpool(ctx.smart.finish, params, request.cookies.get(SMART_COOKIE),
                                         launch_callback_url(request, ctx), ctx.auth.marks.mark)
    except LaunchRefused as exc:
        return render(request, "signin.html", 401, ctx=ctx, session=None, message=str(exc))
    state, notes = await ctx.smart_record(tokens)
    # The EHR vouched for the launch, not for a named user (no ID token is verified yet): the session's
    # user is the EHR's launch, with the clinician role only.
    cookie = ctx.auth.new_session_cookie(f"{tokens['iss']}|smart-launch", None, ("clinician",))
    session = ctx.auth.session({COOKIE: cookie})
    if session is None:  # the session store failed (logged): nobody is let in
        return render(request, "signin.html", 503, ctx=ctx, session=None, message="the session store is not available; try again")
    request.state.ui_ctx, request.state.ui_session = ctx, session
    advice = await run_in_threadpool(advise, ctx, session, state, record=False) if state else None
    notice = f"Opened from the EHR for Patient/{tokens['patient']}; the record was read from {tokens['iss']}" + (
        f" ({'; '.join(notes)})" if notes else "")
    response = clinician_page(request, ctx, state=state, advice=advice, notice=notice)
    response.set_cookie(COOKIE, cookie, **ctx.auth.cookie_options())
    response.delete_cookie(SMART_COOKIE, path=f"{PREFIX}/launch")
    return response

@router.post(f"{PREFIX}/logout")
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
        response: Response = render(request, "moving_on.html", ctx=ctx, session=None, title="Signed out",
                                     heading="Signed out of pressor", next_url=at_provider,
                                     link="Sign out of your organisation's account too")
    else:
        response = RedirectResponse(f"{PREFIX}/", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response
