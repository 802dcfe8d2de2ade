"""Prometheus metrics of the CDS Hooks service (config ``metrics``; off by default): ``GET /metrics``.

What is counted carries no patient data: hook calls by service and status, their latency, the cards
returned by indicator and kind, and errors by kind (HTTP 4xx/5xx answers, advice not recorded in the
audit log, data that could not be fetched). With several uvicorn workers ``pressor serve`` gives them
one ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode), so a scrape of any worker
sums all of them. An optional bearer token (``metrics.bearer_token_env``) keeps the endpoint to the
monitoring system.
"""
from __future__ import annotations

import hmac
import os
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CALLS = Counter("pressor_hook_calls_total", "CDS Hooks calls answered", ["service", "status"])
LATENCY = Histogram("pressor_hook_latency_seconds", "Time to answer a CDS Hooks call", ["service"],
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30))
CARDS = Counter("pressor_cards_total", "Cards returned", ["service", "indicator", "kind"])
ERRORS = Counter("pressor_errors_total", "Errors: HTTP 4xx/5xx answers, advice not recorded, data not fetched",
                 ["service", "kind"])
#: A card's kind, from its topic system (rendering choices of service/cards.py).
_KINDS = {"urn:pressor:rule": "rule", "urn:pressor:rule-conditional": "conditional", "urn:pressor:ask-next": "question"}


def card_kind(card: dict[str, Any]) -> str:
    """``rule``, ``conditional``, ``question`` or ``notice`` (missing data, not recorded, deceased)."""
    system = ((card.get("source") or {}).get("topic") or {}).get("system")
    return _KINDS.get(system, "notice") if isinstance(system, str) else "notice"


class Middleware:
    """ASGI middleware observing every ``POST /cds-services/{id}`` (not feedback): count, latency, status, and
    what the handler left in ``request.state`` (``cards``, ``audit_recorded``, ``not_fetched``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") != "POST" or not path.startswith("/cds-services/") \
                or path.endswith("/feedback"):
            await self.app(scope, receive, send)
            return
        service = path.split("/")[2][:64]
        started = time.perf_counter()
        status = [500]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            state = scope.get("state") or {}
            if "hook" not in state and status[0] == 404:
                service = "unknown"  # never a label per made-up service id
            CALLS.labels(service, str(status[0])).inc()
            LATENCY.labels(service).observe(time.perf_counter() - started)
            for card in state.get("cards") or []:
                CARDS.labels(service, str(card.get("indicator")), card_kind(card)).inc()
            if status[0] >= 400:
                ERRORS.labels(service, f"http_{status[0] // 100}xx").inc()
            if state.get("audit_recorded") is False:
                ERRORS.labels(service, "audit_not_recorded").inc()
            if state.get("not_fetched"):
                ERRORS.labels(service, "fetch_failed").inc()


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format (summed over the workers in multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def token_ok(header: str | None, expected: str | None) -> bool:
    """Whether ``Authorization`` carries the configured bearer token (True when none is configured)."""
    if not expected:
        return True
    offered = header[7:] if header and header[:7].lower() == "bearer " else ""
    return hmac.compare_digest(offered.encode(), expected.encode())
