"""Token replay detection: has this ``jti`` been used before it expired?

The one seam between the verifier and where used token ids are kept. :class:`MemoryReplayCache`
keeps them in this process (enough for one worker); a cache shared by several processes or
machines implements the same one method, and :func:`open_replay_cache` chooses it.
"""
from __future__ import annotations

import heapq
import threading
import time
from typing import Protocol


class ReplayCache(Protocol):
    """Where the ids of accepted tokens are kept until they expire."""

    def first_use(self, key: str, expires_at: float) -> bool:
        """Record ``key`` (``iss`` and ``jti``) as used until ``expires_at`` (epoch seconds);
        False if it was already recorded and has not expired since."""
        ...


class MemoryReplayCache:
    """Token ids in this process: a set, and a heap of expiry times to forget them in order."""

    def __init__(self, grace_s: float = 0.0) -> None:
        self._grace_s = grace_s
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def first_use(self, key: str, expires_at: float) -> bool:
        now = time.time()
        with self._lock:
            while self._expiry and self._expiry[0][0] < now - self._grace_s:
                self._seen.discard(heapq.heappop(self._expiry)[1])
            if key in self._seen:
                return False
            self._seen.add(key)
            heapq.heappush(self._expiry, (expires_at, key))
            return True


def open_replay_cache(audit_db: str | None, *, grace_s: float) -> ReplayCache:
    """The replay cache for this configuration (the process's own; ``audit_db`` may name a shared one)."""
    return MemoryReplayCache(grace_s)
