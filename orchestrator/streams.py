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

    def open(self, name: str) -> asyncio.Queue[Item]:
        """A new stream for node ``name``; it replaces an older one of the same node."""
        box: asyncio.Queue[Item] = asyncio.Queue()
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
