"""The replay cache: each capability token is accepted once.

Bounded and in memory. A jti is remembered until the verifier would refuse its
token as expired anyway; after that it can be forgotten safely. When the cache is
full of unexpired jtis it refuses new tokens (fail closed) instead of evicting one,
since evicting an unexpired jti would make its token replayable.
"""

from __future__ import annotations

import heapq
import threading

from pki.errors import ConfigError, ExpiredToken, InvalidToken, ReplayedToken

__all__ = ["ReplayCache"]


class ReplayCache:
    """Remembers accepted jtis until their expiry; thread-safe."""

    __slots__ = ("_expiry", "_heap", "_latest", "_lock", "max_entries")

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ConfigError("replay cache max_entries must be at least 1")
        self.max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        # Highest time seen. A jti forgotten at time T must not become usable again
        # if the clock later steps back, so anything expiring before T is refused.
        self._latest = float("-inf")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, jti: object) -> bool:
        return jti in self._expiry

    def check_and_add(self, jti: str, exp: float, now: float) -> None:
        """Accept ``jti`` once; remember it until ``exp`` (after which it is refused anyway).

        Raises ReplayedToken if seen, ExpiredToken if ``exp`` is not after the latest
        time this cache has seen, InvalidToken if the cache is full.
        """
        with self._lock:
            self._latest = max(self._latest, now)
            heap, expiry = self._heap, self._expiry
            latest = self._latest
            while heap and heap[0][0] <= latest:
                _, old = heapq.heappop(heap)
                del expiry[old]
            if jti in expiry:
                raise ReplayedToken(f"jti {jti} was already used")
            if exp <= latest:
                raise ExpiredToken("token expired by the replay cache's clock")
            if len(expiry) >= self.max_entries:
                raise InvalidToken(
                    f"replay cache full ({self.max_entries} unexpired tokens); refusing new ones",
                    reason="try again later",
                )
            expiry[jti] = exp
            heapq.heappush(heap, (exp, jti))
