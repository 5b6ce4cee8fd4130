"""The orchestrator's calls to nodes (push): one token per call, minted for exactly
that call, over an mTLS channel per node whose handshake accepts only that node's
identity (an address now served by another node gets nothing, not even the
request). Failures raise ``NodeCallError``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from orchestrator.minter import Minter
from pki.tokens import request_digest
from protos import node_pb2_grpc, ops
from protos.wire.channel import NODE_CHANNEL_OPTIONS, expecting
from protos.wire.errors import NodeCallError
from protos.wire.nodeclient import token_metadata

CHANNEL_GRACE = 60.0  # seconds an old channel may finish its calls after a renewal


class NodeCaller:
    def __init__(
        self,
        minter: Minter,
        *,
        identity: str,
        thumbprint: str,
        credentials: grpc.ChannelCredentials,
        ttl: float,
    ) -> None:
        self._minter = minter
        self.identity = identity
        self._thumbprint = thumbprint
        self._credentials = credentials
        self._ttl = ttl
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def set_credentials(self, credentials: grpc.ChannelCredentials, thumbprint: str) -> None:
        """New client certificate (renewal): new channels use it; the old ones are
        closed after a grace period, once calls already on them have finished."""
        self._credentials = credentials
        self._thumbprint = thumbprint
        old = list(self._channels.values())
        self._channels.clear()
        if old:
            task = asyncio.get_running_loop().create_task(self._close_later(old))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close_later(self, channels: list[grpc.aio.Channel]) -> None:
        await asyncio.sleep(CHANNEL_GRACE)
        for channel in channels:
            await channel.close()

    def _stub(self, address: str, node_id: str) -> Any:
        channel = self._channels.get((address, node_id))
        if channel is None:
            channel = grpc.aio.secure_channel(
                address, self._credentials, options=[*NODE_CHANNEL_OPTIONS, *expecting(node_id)]
            )
            self._channels[address, node_id] = channel
        return node_pb2_grpc.NodeServiceStub(channel)

    async def _token(
        self, node_id: str, op: ops.Operation, request: Any, why: str, cnf: str
    ) -> str:
        req = request_digest(ops.request_fields(request)) if op.binds_request else None
        return await self._minter.mint(
            sub=self.identity,
            cnf=cnf,
            aud=node_id,
            op=op.op,
            res=op.resource(request),
            req=req,
            ttl=self._ttl,
            why=why,
        )

    async def call(
        self,
        address: str,
        node_id: str,
        op_name: str,
        request: Any,
        *,
        timeout: float = 10.0,
        why: str = "",
    ) -> Any:
        op = ops.BY_OP[op_name]
        # Channel and thumbprint taken together, before the await: a certificate
        # renewal meanwhile must not pair a token for one certificate with the other.
        stub, cnf = self._stub(address, node_id), self._thumbprint
        token = await self._token(node_id, op, request, why, cnf)
        try:
            return await getattr(stub, op.method)(
                request, metadata=token_metadata(token), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise NodeCallError.of(op.method, exc) from None

    async def stream(
        self,
        address: str,
        node_id: str,
        op_name: str,
        request: Any,
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[Any]:
        op = ops.BY_OP[op_name]
        stub, cnf = self._stub(address, node_id), self._thumbprint
        token = await self._token(node_id, op, request, "", cnf)
        try:
            async for msg in getattr(stub, op.method)(
                request, metadata=token_metadata(token), timeout=timeout
            ):
                yield msg
        except grpc.aio.AioRpcError as exc:
            raise NodeCallError.of(op.method, exc) from None

    async def close(self) -> None:
        for task in list(self._closing):
            task.cancel()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
