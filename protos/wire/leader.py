"""How a follower orchestrator sends a caller to the leader, for both sides: the
status is UNAVAILABLE (nothing was done: retrying elsewhere is safe) and the
trailing metadata ``capstan-leader`` holds the leader's address when it is known.

``Endpoints`` is the caller's side: every orchestrator address it knows, the one it
believes leads first; a refusal naming the leader, or a failure to connect, moves
it on. A redirect can only name where to connect: the server found there is still
checked for the exact orchestrator identity, so a hostile redirect gains nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import grpc

LEADER_METADATA = "capstan-leader"
NOT_LEADER = "not the leader"


def leader_of(error: BaseException) -> str:
    """The leader address a follower's refusal names, or ``""``."""
    code = getattr(error, "code", None)
    trailing = getattr(error, "trailing_metadata", None)
    if not callable(code) or not callable(trailing) or code() != grpc.StatusCode.UNAVAILABLE:
        return ""
    for key, value in trailing() or ():
        if key == LEADER_METADATA:
            return str(value)
    return ""


class Endpoints:
    """Thread-safe list of orchestrator addresses with the current one first."""

    def __init__(self, addresses: Iterable[str]) -> None:
        self._addresses: list[str] = []
        for address in addresses:
            if address and address not in self._addresses:
                self._addresses.append(address)
        if not self._addresses:
            raise ValueError("at least one orchestrator address is needed")
        self._current = 0
        self._lock = threading.Lock()
        self._moved = False  # since take_move()
        self._moves = 0  # since settled()

    def __len__(self) -> int:
        return len(self._addresses)

    @property
    def all(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._addresses)

    def current(self) -> str:
        with self._lock:
            return self._addresses[self._current]

    def failed(self, address: str, leader: str = "") -> str:
        """``address`` did not serve: go to ``leader`` if named, else to the next one.
        Returns the address to use now."""
        with self._lock:
            before = self._current
            if leader:
                if leader not in self._addresses:
                    self._addresses.append(leader)
                self._current = self._addresses.index(leader)
            elif self._addresses[self._current] == address:
                self._current = (self._current + 1) % len(self._addresses)
            if self._current != before:
                self._moved = True
                self._moves += 1
            return self._addresses[self._current]

    def take_move(self) -> bool:
        """Whether the last failure moved to another orchestrator, at most once per
        address between two good streams: the caller then retries without backing
        off (a leader change must not cost a node its backoff, but orchestrators that
        all refuse must not be hammered either)."""
        with self._lock:
            moved, self._moved = self._moved, False
            return moved and self._moves <= len(self._addresses)

    def settled(self) -> None:
        """A stream lasted: moves count from zero again."""
        with self._lock:
            self._moves = 0


def endpoints_of(addresses: str | Endpoints) -> Endpoints:
    """An ``Endpoints`` as given, or one made of a single address."""
    return addresses if isinstance(addresses, Endpoints) else Endpoints([addresses])
