"""The trailing-slash redirect, as plain ASGI middleware.

Starlette's own redirect takes its host from the Host header (anyone's to choose): this one points at the
configured ``base_url``, or is relative (the host the client already chose). Plain ASGI rather than
``@app.middleware("http")``, whose ``BaseHTTPMiddleware`` runs every call through a task group and memory
streams (issue 21: a tenth of a call's CPU in the event loop, for a check that is one string test).
"""
from __future__ import annotations

from typing import Any

from starlette.responses import RedirectResponse
from starlette.routing import Match, Router


class TrailingSlash:
    """Redirects (307) a path ending in "/" to the same path without it, only where the path itself is not
    served and the path without the slash is (as Starlette's); everything else goes on untouched."""

    def __init__(self, app: Any, *, router: Router, base_url: str | None) -> None:
        self.app, self.router, self.base_url = app, router, base_url

    def _found(self, scope: dict[str, Any]) -> bool:
        return any(route.matches(scope)[0] == Match.FULL for route in self.router.routes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path != "/" and path.endswith("/"):
            stripped = {**scope, "path": path.rstrip("/") or "/"}
            if not self._found(scope) and self._found(stripped):
                query = scope.get("query_string", b"").decode("latin-1")
                target = f"{self.base_url or ''}{stripped['path']}{'?' + query if query else ''}"
                await RedirectResponse(target, 307)(scope, receive, send)
                return
        await self.app(scope, receive, send)
