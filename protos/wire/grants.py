"""Long-lived streams end with their grant (DESIGN.md §5 "Grants end").

A stream is opened under a grant: a capability token until its ``exp``, or a peer
certificate until its ``notAfter``; either way while the peer's certificate serial is
not revoked. ``END_WITHIN`` bounds how long a stream outlives its grant.

Two forms of one rule, for the two kinds of server:

- ``Reaper`` (threaded gRPC servers, the node agent): one thread per server watches
  every held stream and ends a call whose grant is over with the exact status, from
  outside the handler. A handler blocked waiting for data is woken through the call's
  callbacks (``context.add_callback``) and must not keep the thread afterwards.
- ``guarded`` (grpc.aio servers, the orchestrator): wraps a response stream and
  ends it between messages, or while it waits for the next one.

The same ``Reaper`` also bounds how long a client stream may wait for its first
message (``hold`` with a short ``Grant`` and ``DEADLINE_EXCEEDED``). Time is the
injected ``clock``; the real-time ``tick`` only decides how often it is looked at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

__all__ = ["END_WITHIN", "TICK", "Bell", "Grant", "Lease", "Reaper", "guarded", "refusal_of"]

log = logging.getLogger("capstan.grants")

#: A stream ends at most this long after its grant does (the promise, in seconds).
END_WITHIN = 2.0
#: How often a grant is looked at; well inside END_WITHIN.
TICK = 0.25

T = TypeVar("T")


@dataclass(frozen=True)
class Grant:
    """What keeps a stream open: the clock before ``expires_at``, and ``serial`` (the
    peer certificate's, if any) not revoked."""

    expires_at: float
    serial: int | None = None
    code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED
    expired: str = "grant expired"


def refusal_of(
    grant: Grant, now: float, revoked: Collection[int]
) -> tuple[grpc.StatusCode, str] | None:
    """Why a stream under ``grant`` must end now, or None while it may go on."""
    if grant.serial is not None and grant.serial in revoked:
        return grpc.StatusCode.UNAUTHENTICATED, "certificate revoked"
    if now >= grant.expires_at:
        return grant.code, grant.expired
    return None


class Lease:
    """One held stream. ``ended`` is set when the reaper ended the call; producers
    that wait may wait on it (``wait``) instead of sleeping."""

    __slots__ = ("_context", "_reaper", "code", "ended", "grant", "reason")

    def __init__(self, reaper: Reaper, context: Any, grant: Grant) -> None:
        self._reaper = reaper
        self._context = context
        self.grant = grant
        self.ended = threading.Event()
        self.code: grpc.StatusCode | None = None
        self.reason = ""

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout``; True at once if the stream was ended meanwhile."""
        return self.ended.wait(timeout)

    def release(self) -> None:
        """The stream is over (or the wait it bounded is): stop watching it."""
        self._reaper.forget(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def end(self, code: grpc.StatusCode, reason: str) -> None:
        if self.ended.is_set():
            return
        self.code, self.reason = code, reason
        self.ended.set()
        end_call(self._context, code, reason)


def end_call(context: Any, code: grpc.StatusCode, details: str) -> None:
    """End a call of a threaded gRPC server from outside its handler, with a status.

    grpc's public ``context.cancel()`` can only say CANCELLED; the call object
    underneath can say why (UNAUTHENTICATED "grant expired"). The handler's callbacks
    run either way, so a handler blocked on data is woken.
    """
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        if call is not None:
            call.cancel(code.value[0], details)
            return
    except Exception:
        log.debug("ending a call with a status failed; cancelling it", exc_info=True)
    context.cancel()


class Reaper:
    """Ends held calls whose grant is over, from one thread per server."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        revoked: Callable[[], frozenset[int]] = frozenset,
        tick: float = TICK,
    ) -> None:
        self._clock = clock
        self._revoked = revoked
        self._tick = tick
        self._held: set[Lease] = set()
        self._lock = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="capstan-grants", daemon=True)
        self._thread.start()

    def hold(self, context: Any, grant: Grant) -> Lease:
        """Watch one call under ``grant`` until ``release``; ended at once if already over."""
        lease = Lease(self, context, grant)
        why = refusal_of(grant, self._clock(), self._revoked_now())
        if why is not None:
            lease.end(*why)
            return lease
        with self._lock:
            self._held.add(lease)
            self._lock.notify()
        return lease

    def forget(self, lease: Lease) -> None:
        with self._lock:
            self._held.discard(lease)

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def check(self) -> None:
        """Look at every held grant now (the thread does this every tick)."""
        with self._lock:
            held = list(self._held)
        if not held:
            return
        now, revoked = self._clock(), self._revoked_now()
        for lease in held:
            why = refusal_of(lease.grant, now, revoked)
            if why is not None:
                self.forget(lease)
                log.info("ending a stream: %s", why[1])
                lease.end(*why)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify()
        self._thread.join(timeout=2)

    def _revoked_now(self) -> frozenset[int]:
        try:
            return self._revoked()
        except Exception:
            log.exception("deny list unreadable; grants are checked for expiry only")
            return frozenset()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    return
                self._lock.wait(self._tick if self._held else None)
                if self._stopped:
                    return
            try:
                self.check()
            except Exception:
                log.exception("grant check failed")


class Bell:
    """Wakes every waiting ``guarded`` stream at once (rung when the revocation list
    changes), so that thousands of idle streams need not each poll it every tick."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def ring(self) -> None:
        """Wake the waiters; safe from any thread."""
        future, self._future = self._future, None
        if future is not None:
            future.get_loop().call_soon_threadsafe(_set_once, future)

    def future(self) -> asyncio.Future[None]:
        if self._future is None or self._future.done():
            self._future = asyncio.get_running_loop().create_future()
        return self._future


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def guarded(
    stream: AsyncIterator[T],
    *,
    context: Any,
    grant: Grant | Callable[[], Grant],
    clock: Callable[[], float],
    revoked: Callable[[], Collection[int]],
    tick: float = TICK,
    bell: Bell | None = None,
) -> AsyncIterator[T]:
    """Yield from ``stream`` until it ends or ``grant`` does; then abort the call with
    the grant's status. Also ends while the stream waits for its next message.

    ``grant`` may be a callable, re-read every tick (a node's report stream is held
    by its certificate, which a renewal replaces). With a ``bell`` rung on every
    revocation, a waiting stream wakes at once on a revocation and otherwise only
    every ``END_WITHIN / 2`` to look at its grant's time: an orchestrator holds one
    such stream per node, and a wake-up per tick each is most of an idle cluster's cost.
    """
    every = tick if bell is None else max(tick, END_WITHIN / 2)
    current: Callable[[], Grant] = grant if callable(grant) else (lambda: grant)
    pending: asyncio.Future[T] | None = None
    why: tuple[grpc.StatusCode, str] | None = None
    try:
        while True:
            why = refusal_of(current(), clock(), revoked())
            if why is not None:
                break
            if pending is None:
                pending = asyncio.ensure_future(stream.__anext__())
            waiting: set[asyncio.Future[Any]] = {pending}
            if bell is not None:
                waiting.add(bell.future())
            done, _ = await asyncio.wait(
                waiting, timeout=every, return_when=asyncio.FIRST_COMPLETED
            )
            if pending not in done:
                continue
            item, pending = pending, None
            try:
                value = item.result()
            except StopAsyncIteration:
                return
            yield value
    finally:
        if pending is not None:
            pending.cancel()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            # Still running (its next was just cancelled): then it is simply dropped.
            with contextlib.suppress(RuntimeError, asyncio.CancelledError):
                await aclose()
    if why is not None:
        log.info("ending a stream: %s", why[1])
        await context.abort(why[0], why[1])
