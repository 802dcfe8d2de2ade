"""Idle connections are closed: uvicorn's keep-alive timeout, applied from the moment a connection opens.

uvicorn times out a connection only between requests, after a response; one that opens and never sends
a whole request was held for ever (1,100 such connections held a worker's open files). This protocol
arms the same timer (``timeout_keep_alive``: ``idle_timeout_s`` in the config) when a connection opens
and after each response, and disarms it once a request's headers have arrived.
"""
from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class IdleClosingH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection that sends no request for ``timeout_keep_alive`` seconds."""

    _idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # a request is being answered: the app's own limits apply

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._idle = self.loop.call_later(self.timeout_keep_alive, self._close_idle)

    def _disarm(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _close_idle(self) -> None:
        self._idle = None
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()
