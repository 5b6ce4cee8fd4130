"""The Report streams of connected nodes: what the orchestrator sends each node, and
what each node last said it trusts.

The gateway opens and closes a node's stream; everything else that must reach a
connected node (trust updates, fences, tasks, renewal requests, link plans) goes
through here, never through the gateway's internals.
"""

from __future__ import annotations

import asyncio

from protos import gateway_pb2

#: What a stream's queue carries: a message to send; an exception to end the stream
#: (PermissionError: with PERMISSION_DENIED; any other: quietly); None: the node closed.
Item = gateway_pb2.GatewayMessage | BaseException | None


class NodeStreams:
    def __init__(self) -> None:
        self._boxes: dict[str, asyncio.Queue[Item]] = {}
        self._digests: dict[str, str] = {}
        # Renewal requests not yet fulfilled, by node: asked again on every stream the
        # node opens until it has renewed (``renewal_done``).
        self._renewals: dict[str, gateway_pb2.GatewayMessage] = {}

    def open(self, name: str, *first: gateway_pb2.GatewayMessage) -> asyncio.Queue[Item]:
        """A new stream for node ``name``, starting with ``first`` and any renewal
        request it has not fulfilled; it replaces an older one of the same node."""
        box: asyncio.Queue[Item] = asyncio.Queue()
        for message in first:
            box.put_nowait(message)
        pending = self._renewals.get(name)
        if pending is not None:
            box.put_nowait(pending)
        self._boxes[name] = box
        return box

    def close(self, name: str, box: asyncio.Queue[Item]) -> None:
        if self._boxes.get(name) is box:
            del self._boxes[name]

    def get(self, name: str) -> asyncio.Queue[Item] | None:
        return self._boxes.get(name)

    def connected(self) -> list[str]:
        return sorted(self._boxes)

    def send(self, name: str, message: gateway_pb2.GatewayMessage) -> bool:
        """Queue ``message`` for node ``name``; False when it is not connected."""
        box = self._boxes.get(name)
        if box is None:
            return False
        box.put_nowait(message)
        return True

    def ask_renewal(self, name: str, message: gateway_pb2.GatewayMessage) -> bool:
        """Send node ``name`` a renewal request (``message``, with ``renew_now``) and
        hold it until ``renewal_done``: a request sent while the node's stream was
        reconnecting (to no stream, or to the one ending) is not lost, the next stream
        it opens starts with it. False when it is not connected now."""
        self._renewals[name] = message
        return self.send(name, message)

    def renewal_done(self, name: str) -> None:
        """Node ``name`` renewed as asked (or no longer needs to): stop asking."""
        self._renewals.pop(name, None)

    def renewal_asked(self, name: str) -> bool:
        """Whether node ``name`` has a renewal request it has not fulfilled."""
        return name in self._renewals

    def broadcast(self, message: gateway_pb2.GatewayMessage) -> None:
        for box in self._boxes.values():
            box.put_nowait(message)

    def end(self, name: str, why: BaseException) -> bool:
        """End node ``name``'s stream now (see ``Item``); False when not connected."""
        box = self._boxes.get(name)
        if box is None:
            return False
        box.put_nowait(why)
        return True

    def end_all(self, why: BaseException) -> None:
        for box in list(self._boxes.values()):
            box.put_nowait(why)

    def acknowledge(self, name: str, digest: str) -> None:
        """Record the trust digest node ``name`` reported (what it holds now)."""
        self._digests[name] = digest

    def acknowledged(self, name: str) -> str | None:
        return self._digests.get(name)
