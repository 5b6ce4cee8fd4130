"""Revocation on a running orchestrator.

Every call's certificate check reads the revoked serials through ``RevokedSerials``:
a revocation this orchestrator writes counts from the next call, and one written by
another process (``capstan pki revoke``) within ``CHECK_EVERY`` seconds (one ``stat``
per interval, not per call). ``Revoker`` acts on a revocation everywhere: the deny
list is pushed to every connected node, a revoked node's Report stream ends, the node
is marked revoked (its workloads are placed elsewhere) and the CRL files are
regenerated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.apply import InvalidApplication
from orchestrator.audit import AuditLog
from orchestrator.ca import CurrentAuthority
from orchestrator.errors import NotFound
from orchestrator.state import ClusterState
from orchestrator.streams import NodeStreams
from orchestrator.trustpush import TrustPush
from pki.authority import REVOCATION_REASONS
from pki.errors import CapstanError, PKIError
from pki.reloading import ReloadingFile
from pki.rotation import write_crls
from pki.state import STATE_FILE, parse_state
from protos import control_pb2
from protos.wire.grants import Bell

log = logging.getLogger("capstan.orchestrator.lifecycle")

Revoked = Callable[[], frozenset[int]]
#: Seconds between checks of the PKI state file for a revocation by another process.
CHECK_EVERY = 0.05


class RevokedSerials:
    """The PKI's revoked serials, re-read whenever its state file changes; a damaged
    file keeps the last good list (it must not un-revoke anything). ``bell`` rings when
    the list changes: held streams then end at once (protos.wire.grants.guarded)."""

    def __init__(
        self,
        pki_dir: Path,
        *,
        interval: float = CHECK_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        path = Path(pki_dir) / STATE_FILE

        def parse(raw: bytes) -> frozenset[int]:
            return frozenset(c.serial for c in parse_state(raw, path).certificates if c.revoked)

        self._file = ReloadingFile(path, parse, "PKI state", interval=interval, clock=clock)
        self._serials = self._file.get()
        self.bell = Bell()

    def __call__(self) -> frozenset[int]:
        serials = self._file.get()
        if serials != self._serials:
            self._serials = serials
            self.bell.ring()
        return serials


class Revoker:
    def __init__(
        self,
        *,
        pki_dir: Path,
        ca: CurrentAuthority,
        revoked: Revoked,
        trust: TrustPush,
        streams: NodeStreams,
        state: ClusterState,
        audit: AuditLog,
        wake: Callable[[], None],
        events: list[tuple[str, float]],
    ) -> None:
        self._pki_dir = pki_dir
        self._ca = ca
        self._revoked = revoked
        self._trust = trust
        self._streams = streams
        self._state = state
        self._audit = audit
        self._wake = wake
        self._events = events
        self._pushed = revoked()

    def revoked(self) -> frozenset[int]:
        """The serials revoked now."""
        return self._revoked()

    async def revoke_node(
        self, name: str, *, by: str, reason: str = "key-compromise"
    ) -> control_pb2.NodeRecord:
        """Revoke every live certificate of node ``name`` and act on it everywhere."""
        if reason not in REVOCATION_REASONS:
            raise InvalidApplication(
                f"reason: {reason!r} is not one of {', '.join(REVOCATION_REASONS)}"
            )
        node = self._state.node(name)
        if node is None:
            raise NotFound(f"node {name} not found")
        try:
            serials = await asyncio.to_thread(self._ca.authority.revoke, f"node/{name}", reason)
        except PKIError as exc:
            if node.state != "revoked" and "no unrevoked" not in str(exc):
                raise
            serials = []  # nothing live left to revoke: still make sure it is shut out
        await self._audit.record(
            "node.revoked", by=by, node=name, serials=[f"{s:X}" for s in serials], reason=reason
        )
        await self.apply(force=True)
        record = self._state.node(name)
        assert record is not None  # noqa: S101 - looked up above, nodes are never deleted
        return record

    async def apply(self, *, force: bool = False) -> None:
        """Act on revocations made since the last call (also by ``capstan pki revoke``)."""
        revoked = self._revoked()
        if revoked == self._pushed and not force:
            return
        started = time.monotonic()
        self._pushed = revoked
        self._trust.broadcast()
        changed = False
        async with self._state.lock:
            for node in self._state.all_nodes():
                if node.state == "revoked" or not node.cert_serial:
                    continue
                if int(node.cert_serial, 16) in revoked:
                    node.state = "revoked"
                    await self._state.save_node(node)
                    changed = True
                    # Ends its Report stream now (PERMISSION_DENIED), not at reconnect.
                    self._streams.end(node.name, PermissionError("certificate revoked"))
                    log.warning("node %s revoked: its workloads move elsewhere", node.name)
        if changed:
            self._wake()
        try:
            await asyncio.to_thread(write_crls, self._pki_dir)
        except CapstanError as exc:
            log.error("cannot regenerate the CRL: %s", exc)
        self._events.append(("revocation pushed", time.monotonic() - started))
