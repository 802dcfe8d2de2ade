"""The service's JSON log: one line per request and one per authentication failure, never patient data.

A request line holds the time, method, path, status, latency, and, for hook calls, the hook,
``hookInstance``, the client (``iss|sub``) and the rules that fired. What a handler learns about
the call it puts in ``scope["state"]`` (``request.state``); :class:`RequestLog` (a plain ASGI
middleware, so it sees every answer, even those made outside the app's handlers) writes the line.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any

REQUEST_LOGGER = "pressor.serve.requests"
#: request.state attributes copied into the request line when a handler set them
LOGGED_STATE = ("hook", "hookInstance", "client", "rules_fired", "fetched", "reason", "suppressed")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _JsonLines(logging.Formatter):
    """Records given as a dict (``log.info({...})``) become one JSON line; others become
    ``{"time", "level", "logger", "message"}`` (no traceback: server errors carry their own one-line reason)."""

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict):
            line = {"time": _now(), **{k: _capped(v) for k, v in record.msg.items()}}
        else:
            line = {"time": _now(), "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
            if record.exc_info and record.exc_info[1] is not None:
                line["error"] = repr(record.exc_info[1])
        return json.dumps(line, separators=(",", ":"), default=str)


#: Longest string written for one field: a caller cannot make a line huge (hookInstance, a claimed iss).
MAX_FIELD = 300


def _capped(value: Any) -> Any:
    return value[:MAX_FIELD] + "…" if isinstance(value, str) and len(value) > MAX_FIELD else value


def configure(log_file: str | None) -> None:
    """Send the service's logs (``pressor.serve*``) to ``log_file`` (appended) or stderr, as JSON lines."""
    handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8") if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    logger = logging.getLogger("pressor.serve")
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def auth_failure(reason: str, *, path: str, iss: str | None, peer: str | None) -> None:
    """One line for a refused token: why, on which path, the issuer it claimed (unverified), and from where."""
    logging.getLogger(REQUEST_LOGGER).warning(
        {"event": "auth_failed", "path": path, "reason": reason, "claimed_iss": iss, "peer": peer})


class RequestLog:
    """ASGI middleware writing one JSON line per HTTP request when its answer has been sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log = logging.getLogger(REQUEST_LOGGER)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            state = scope.get("state") or {}
            line: dict[str, Any] = {"event": "request", "method": scope["method"], "path": scope["path"],
                                    "status": status[0] or 500,
                                    "latency_ms": round((time.perf_counter() - started) * 1000, 1)}
            line.update({k: state[k] for k in LOGGED_STATE if k in state})
            self.log.info(line)
