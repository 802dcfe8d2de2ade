"""Token replay detection: has this token id been used before it expired?

The one seam between the verifier and where used token ids are kept: an object with
``seen(jti, expires_at) -> bool``. :class:`MemoryReplayCache` keeps them in this process (enough
for one worker); a cache shared by several processes or machines implements the same method,
and :func:`open_replay_cache` chooses it.
"""
from __future__ import annotations

import heapq
import threading
import time
from typing import Protocol


class ReplayCache(Protocol):
    """Token ids seen and not yet expired."""

    def seen(self, jti: str, expires_at: float) -> bool:
        """True if ``jti`` was already recorded (a replay); otherwise record it until ``expires_at``
        (seconds since the epoch) and return False. Atomic: of two callers racing with one id,
        exactly one gets False."""
        ...


class MemoryReplayCache:
    """Per process: a set, and a heap of expiry times to forget ids in order."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def seen(self, jti: str, expires_at: float) -> bool:
        with self._lock:
            now = time.time()
            while self._expiry and self._expiry[0][0] < now:
                self._seen.discard(heapq.heappop(self._expiry)[1])
            if jti in self._seen:
                return True
            self._seen.add(jti)
            heapq.heappush(self._expiry, (expires_at, jti))
            return False


def open_replay_cache(target: str | None) -> ReplayCache:
    """The replay cache at ``target`` (config ``replay_cache``): None or "memory", this process's own;
    a ``postgresql://`` URL or a SQLite file, shared (``engine.audit.replay_cache``)."""
    if target is None or target == "memory":
        return MemoryReplayCache()
    from pressor.engine.audit.replay_cache import open_replay_cache as open_shared

    return open_shared(target)
