"""The replicated store: the ``Store`` interface over an etcd v3 cluster.

Design choices:

- **aetcd's generated etcd API on our own channel.** aetcd 1.0 carries the etcd v3
  protobuf API for the grpcio and protobuf this project pins; its ``Client`` opens
  plaintext channels only, so the store opens its own ``grpc.aio`` channel (mTLS
  from ``capstan pki`` when ``tls`` is given) and calls the stubs directly.
- **One error boundary.** Every RPC goes through ``_rpc``, which maps gRPC and etcd
  errors onto the project's store exceptions; nothing above sees a gRPC error.
- **A namespace.** Every key is stored under ``namespace`` (e.g. ``/capstan``), so
  several clusters or test runs can share one etcd without seeing each other.
  Revisions are etcd's: global to the etcd cluster, so another namespace's writes
  show as gaps between ours (the interface promises increase, not adjacency).
- **Leases on the cluster's clock.** etcd expires leases itself; the injected clock
  only dates ``Lease.expires_at``. ``expire_leases`` has nothing to drive.
- **Watches survive a broken stream.** A watch whose stream breaks (an etcd member
  restarts, a leader changes) reopens from the revision it had reached and skips
  what it already delivered, so the caller sees every event once, in order, or
  ``Compacted`` if the history it needs is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from aetcd import rpc

from orchestrator.errors import (
    Compacted,
    Conflict,
    LeaseNotFound,
    StoreClosed,
    StoreError,
    StoreUnavailable,
)
from orchestrator.store import (
    Compare,
    Delete,
    Entry,
    Event,
    EventType,
    Lease,
    Put,
    RangeResult,
    TxnOp,
    TxnResponse,
    TxnResult,
)
from orchestrator.store._checks import MAX_REQUEST, check_put, check_ttl, check_txn
from orchestrator.store.keys import check_key, prefix_end

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
_PAGE = 1000  # keys per range request: bounds one response well under gRPC's limit
_MAX_MESSAGE = 64 * 1024 * 1024
_RETRY_PAUSE = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0)

_TARGET = {
    "revision": rpc.Compare.CompareTarget.MOD,
    "create_revision": rpc.Compare.CompareTarget.CREATE,
    "version": rpc.Compare.CompareTarget.VERSION,
    "value": rpc.Compare.CompareTarget.VALUE,
    "lease": rpc.Compare.CompareTarget.LEASE,
}
_RESULT = {
    "==": rpc.Compare.CompareResult.EQUAL,
    "!=": rpc.Compare.CompareResult.NOT_EQUAL,
    "<": rpc.Compare.CompareResult.LESS,
    ">": rpc.Compare.CompareResult.GREATER,
}


@dataclass(frozen=True)
class EtcdTLS:
    """Client mTLS material for etcd, from ``capstan pki etcd``: PEM paths."""

    ca: Path
    cert: Path
    key: Path

    def credentials(self) -> grpc.ChannelCredentials:
        try:
            return grpc.ssl_channel_credentials(
                root_certificates=Path(self.ca).read_bytes(),
                private_key=Path(self.key).read_bytes(),
                certificate_chain=Path(self.cert).read_bytes(),
            )
        except OSError as exc:
            raise StoreError(f"etcd client certificate: {exc}") from None


@dataclass
class EtcdMemberHealth:
    name: str
    url: str
    healthy: bool
    leader: bool
    error: str


def parse_endpoints(text: str | Sequence[str]) -> tuple[str, ...]:
    """``HOST:PORT`` endpoints, comma-separated or a list; loopback or names only."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in parts:
        part = raw.strip().removeprefix("https://").removeprefix("http://")
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise StoreError(f"etcd endpoint must be HOST:PORT, got {part!r}")
        out.append(f"{host}:{port}")
    if not out:
        raise StoreError("no etcd endpoint given")
    return tuple(out)


class EtcdStore:
    """The ``Store`` interface on an etcd cluster. Bound to the event loop that opens it."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        namespace: str = "/capstan",
        tls: EtcdTLS | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.endpoints = parse_endpoints(endpoints)
        check_key(namespace)
        if namespace.endswith("/") and namespace != "/":
            raise StoreError("the namespace must not end with '/'")
        self._ns = "" if namespace == "/" else namespace
        self._tls = tls
        self._clock = clock
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[str, Any] = {}
        self._closed = False
        self._revision = 0  # highest revision any response told us of
        self._streams: set[grpc.aio.StreamStreamCall] = set()
        self._closing = asyncio.Event()

    async def __aenter__(self) -> EtcdStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing ----------------------------------------------------------------

    def _server_name(self) -> str:
        return self.endpoints[0].rpartition(":")[0].strip("[]")

    def _stub(self, name: str) -> Any:
        stub = self._stubs.get(name)
        if stub is None or self._closed:
            raise StoreClosed("the store is not open")
        return stub

    @property
    def _kv(self) -> Any:
        return self._stub("kv")

    @property
    def _lease(self) -> Any:
        return self._stub("lease")

    @property
    def _watch(self) -> Any:
        return self._stub("watch")

    @property
    def _maintenance(self) -> Any:
        return self._stub("maintenance")

    @property
    def _cluster(self) -> Any:
        return self._stub("cluster")

    def _key(self, key: str) -> bytes:
        return (self._ns + check_key(key)).encode()

    def _end(self, prefix: str) -> bytes:
        return (self._ns + prefix_end(prefix)).encode()

    def _unkey(self, raw: bytes) -> str:
        return raw.decode()[len(self._ns) :]

    def _seen(self, header: Any) -> int:
        self._revision = max(self._revision, int(header.revision))
        return int(header.revision)

    async def _rpc(
        self,
        call: Callable[[float], Awaitable[T]],
        *,
        lease: int | None = None,
        idempotent: bool,
    ) -> T:
        """Run one etcd RPC; the one place where gRPC errors become store errors.

        ``call`` gets the seconds it may take. Reads (and writes guarded by a compare,
        which cannot apply twice) are retried while the cluster is unreachable, all
        tries within one ``timeout``; a plain write is not, since a timed-out write
        may have been applied: its caller gets ``StoreUnavailable``."""
        deadline = time.monotonic() + self._timeout
        attempts = _RETRY_PAUSE if idempotent else ()
        for pause in (*attempts, None):
            if self._closed or self._channel is None:
                raise StoreClosed("the store is not open")
            try:
                return await call(max(0.05, deadline - time.monotonic()))
            except grpc.aio.AioRpcError as exc:
                error = _map_error(exc, lease)
                if (
                    pause is None
                    or not isinstance(error, StoreUnavailable)
                    or time.monotonic() + pause >= deadline
                ):
                    raise error from None
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _unary(
        self, method: Any, request: Any, *, lease: int | None = None, idempotent: bool
    ) -> Any:
        return await self._rpc(
            lambda timeout: method(request, timeout=timeout, wait_for_ready=True),
            lease=lease,
            idempotent=idempotent,
        )

    def _entry(self, kv: Any) -> Entry:
        return Entry(
            key=self._unkey(kv.key),
            value=bytes(kv.value),
            revision=int(kv.mod_revision),
            create_revision=int(kv.create_revision),
            version=int(kv.version),
            lease=int(kv.lease) or None,
        )

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        if self._channel is not None:
            raise StoreError("the store is already open")
        if self._closed:
            raise StoreClosed("a closed store cannot be reopened; make a new one")
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1_000),
        ]
        target = "ipv4:" + ",".join(self.endpoints) if _all_ipv4(self.endpoints) else ""
        if not target:
            if len(self.endpoints) > 1:
                raise StoreError("several etcd endpoints must be IPv4 addresses")
            target = self.endpoints[0]
        if self._tls is None:
            channel = grpc.aio.insecure_channel(target, options=options)
        else:
            # One name for every member (a list target has no single host name): the
            # first endpoint's host, which each member's certificate must carry.
            options.append(("grpc.ssl_target_name_override", self._server_name()))
            channel = grpc.aio.secure_channel(target, self._tls.credentials(), options=options)
        self._channel = channel
        self._stubs = {
            "kv": rpc.KVStub(channel),
            "lease": rpc.LeaseStub(channel),
            "watch": rpc.WatchStub(channel),
            "maintenance": rpc.MaintenanceStub(channel),
            "cluster": rpc.ClusterStub(channel),
        }
        try:
            await self.revision()
        except BaseException:
            await self._shutdown()
            raise

    async def close(self) -> None:
        self._closed = True
        self._closing.set()
        for stream in list(self._streams):
            stream.cancel()
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._stubs = {}
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    # -- reads -------------------------------------------------------------------

    async def revision(self) -> int:
        request = rpc.RangeRequest(key=self._key("/"), limit=1, keys_only=True)
        response = await self._unary(
            self._kv.Range,
            request,
            idempotent=True,
        )
        return self._seen(response.header)

    async def get(self, key: str) -> Entry | None:
        request = rpc.RangeRequest(key=self._key(key))
        response = await self._unary(
            self._kv.Range,
            request,
            idempotent=True,
        )
        self._seen(response.header)
        return self._entry(response.kvs[0]) if response.kvs else None

    async def range(self, prefix: str, *, limit: int | None = None) -> RangeResult:
        if limit is not None and limit < 1:
            raise StoreError("limit must be >= 1")
        start, end = self._key(prefix), self._end(prefix)
        entries: list[Entry] = []
        at = 0  # every page is read at the first page's revision: one snapshot
        while True:
            want = _PAGE if limit is None else min(_PAGE, limit - len(entries))
            request = rpc.RangeRequest(key=start, range_end=end, limit=want, revision=at)
            response = await self._unary(
                self._kv.Range,
                request,
                idempotent=True,
            )
            revision = at or self._seen(response.header)
            at = revision
            entries.extend(self._entry(kv) for kv in response.kvs)
            if not response.more or not response.kvs or len(entries) == limit:
                return RangeResult(tuple(entries), revision)
            start = bytes(response.kvs[-1].key) + b"\x00"

    # -- writes ------------------------------------------------------------------

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        check_put(key, value, lease)
        if expect_revision is not None and expect_revision < 0:
            raise StoreError("expect_revision must be >= 0")
        if expect_revision is None:
            request = rpc.PutRequest(key=self._key(key), value=value, lease=lease or 0)
            response = await self._unary(
                self._kv.Put,
                request,
                lease=lease,
                idempotent=False,
            )
            return self._seen(response.header)
        result = await self._cas(
            key,
            expect_revision,
            rpc.RequestOp(request_put=_put(self._key(key), value, lease)),
            lease,
        )
        return result

    async def _cas(self, key: str, expected: int, op: Any, lease: int | None) -> int:
        request = rpc.TxnRequest(
            compare=[_compare(self._key(key), "revision", "==", expected)],
            success=[op],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=self._key(key)))],
        )
        response = await self._unary(
            self._kv.Txn,
            request,
            lease=lease,
            idempotent=True,
        )
        revision = self._seen(response.header)
        if not response.succeeded:
            kvs = response.responses[0].response_range.kvs
            raise Conflict(key, expected, int(kvs[0].mod_revision) if kvs else 0)
        return revision

    async def delete(self, key: str, *, expect_revision: int | None = None) -> int | None:
        raw = self._key(key)
        if expect_revision is not None and expect_revision < 1:
            raise StoreError("expect_revision for a delete must be >= 1 (the key's revision)")
        if expect_revision is not None:
            op = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=raw))
            return await self._cas(key, expect_revision, op, None)
        request = rpc.DeleteRangeRequest(key=raw)
        response = await self._unary(
            self._kv.DeleteRange,
            request,
            idempotent=False,
        )
        revision = self._seen(response.header)
        return revision if response.deleted else None

    async def delete_prefix(self, prefix: str) -> int:
        request = rpc.DeleteRangeRequest(key=self._key(prefix), range_end=self._end(prefix))
        response = await self._unary(
            self._kv.DeleteRange,
            request,
            idempotent=False,
        )
        self._seen(response.header)
        return int(response.deleted)

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        check_txn(compares, success, failure)
        request = rpc.TxnRequest(
            compare=[_compare(self._key(c.key), c.target, c.op, c.operand) for c in compares],
            success=[self._op(op) for op in success],
            failure=[self._op(op) for op in failure],
        )
        leases = [op.lease for op in (*success, *failure) if isinstance(op, Put) and op.lease]
        # With compares, a retried txn whose first try applied fails its compares;
        # without any, a retry could apply twice, so it is not retried.
        response = await self._unary(
            self._kv.Txn,
            request,
            lease=leases[0] if leases else None,
            idempotent=bool(compares),
        )
        revision = self._seen(response.header)
        ops = success if response.succeeded else failure
        out: list[TxnResponse] = []
        for op, answer in zip(ops, response.responses, strict=True):
            if isinstance(op, Put):
                out.append(revision)
            elif isinstance(op, Delete):
                out.append(int(answer.response_delete_range.deleted))
            else:
                kvs = answer.response_range.kvs
                out.append(RangeResult(tuple(self._entry(kv) for kv in kvs), revision))
        return TxnResult(bool(response.succeeded), revision, tuple(out))

    def _op(self, op: TxnOp) -> Any:
        if isinstance(op, Put):
            return rpc.RequestOp(request_put=_put(self._key(op.key), op.value, op.lease))
        end = self._end(op.key) if op.prefix else b""
        if isinstance(op, Delete):
            return rpc.RequestOp(
                request_delete_range=rpc.DeleteRangeRequest(key=self._key(op.key), range_end=end)
            )
        return rpc.RequestOp(request_range=rpc.RangeRequest(key=self._key(op.key), range_end=end))

    # -- leases ------------------------------------------------------------------

    async def grant_lease(self, ttl: float) -> Lease:
        seconds = math.ceil(check_ttl(ttl))
        request = rpc.LeaseGrantRequest(TTL=seconds)
        response = await self._unary(
            self._lease.LeaseGrant,
            request,
            idempotent=False,
        )
        if response.error:
            raise StoreError(f"etcd refused the lease: {response.error}")
        granted = float(response.TTL)
        return Lease(int(response.ID), granted, self._clock() + granted)

    async def keepalive(self, lease: int) -> Lease:
        async def once(timeout: float) -> Any:
            call = self._lease.LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease)]),
                timeout=timeout,
                wait_for_ready=True,
            )
            async for reply in call:
                return reply
            return None

        reply = await self._rpc(once, lease=lease, idempotent=True)
        if reply is None or reply.TTL <= 0:
            raise LeaseNotFound(lease)
        return Lease(lease, float(reply.TTL), self._clock() + float(reply.TTL))

    async def revoke(self, lease: int) -> int:
        info = await self._lease_info(lease, keys=True)
        if info is None:
            raise LeaseNotFound(lease)
        request = rpc.LeaseRevokeRequest(ID=lease)
        response = await self._unary(
            self._lease.LeaseRevoke,
            request,
            lease=lease,
            idempotent=False,
        )
        self._seen(response.header)
        return len(info.keys)

    async def _lease_info(self, lease: int, *, keys: bool) -> Any:
        request = rpc.LeaseTimeToLiveRequest(ID=lease, keys=keys)
        info = await self._unary(self._lease.LeaseTimeToLive, request, lease=lease, idempotent=True)
        return None if info.TTL < 0 else info

    async def get_lease(self, lease: int) -> Lease | None:
        info = await self._lease_info(lease, keys=False)
        if info is None:
            return None
        return Lease(lease, float(info.grantedTTL), self._clock() + float(info.TTL))

    async def expire_leases(self) -> list[int]:
        return []  # etcd expires leases on its own clock

    # -- history -----------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        request = rpc.CompactionRequest(revision=revision)
        try:
            await self._unary(
                self._kv.Compact,
                request,
                idempotent=True,
            )
        except Compacted:
            return  # already compacted at or beyond it: nothing to do

    def watch(
        self, prefix: str, *, start_revision: int | None = None
    ) -> AsyncGenerator[Event, None]:
        start, end = self._key(prefix), self._end(prefix)
        if start_revision is not None and start_revision < 1:
            raise StoreError("start_revision must be >= 1")
        if self._closed or self._channel is None:
            raise StoreClosed("the store is not open")
        begin = self._revision + 1 if start_revision is None else start_revision
        return self._watch_from(start, end, begin)

    async def _watch_from(self, key: bytes, end: bytes, begin: int) -> AsyncGenerator[Event, None]:
        position = begin  # the lowest revision not wholly delivered
        delivered = 0  # events of ``position`` already delivered
        failures = 0
        while True:
            if self._closed:
                raise StoreClosed("the store was closed")
            create = rpc.WatchCreateRequest(key=key, range_end=end, start_revision=position)
            call = self._watch.Watch(
                _requests(rpc.WatchRequest(create_request=create), self), wait_for_ready=True
            )
            self._streams.add(call)
            try:
                async for response in _responses(call):
                    if response.compact_revision:
                        raise Compacted(position, int(response.compact_revision))
                    if response.canceled:
                        raise StoreError(f"etcd cancelled the watch: {response.cancel_reason}")
                    failures = 0
                    skip = delivered
                    for ev in response.events:
                        revision = int(ev.kv.mod_revision)
                        if revision == position and skip:
                            skip -= 1
                            continue
                        if revision != position:
                            position, delivered = revision, 0
                        delivered += 1
                        yield self._event(ev)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed and task is not None and not task.cancelling():
                    raise StoreClosed("the store was closed") from None
                raise
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    raise StoreClosed("the store was closed") from None
                error = _map_error(exc, None)
                if not isinstance(error, StoreUnavailable):
                    raise error from None
                failures += 1
            finally:
                self._streams.discard(call)
                call.cancel()
            if self._closed:
                raise StoreClosed("the store was closed")
            # The stream ended or broke: reopen from where we are, after a pause.
            pause = _RETRY_PAUSE[min(failures, len(_RETRY_PAUSE) - 1)]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), pause)

    def _event(self, ev: Any) -> Event:
        kind = EventType.DELETE if ev.type == rpc.Event.EventType.DELETE else EventType.PUT
        value = b"" if kind is EventType.DELETE else bytes(ev.kv.value)
        return Event(kind, self._unkey(ev.kv.key), value, int(ev.kv.mod_revision))

    # -- cluster -----------------------------------------------------------------

    async def members(self) -> list[EtcdMemberHealth]:
        """Every etcd member, each asked for its status on its own (one second)."""
        response = await self._unary(
            self._cluster.MemberList, rpc.MemberListRequest(), idempotent=True
        )
        return list(await asyncio.gather(*(self._health(m) for m in response.members)))

    async def _health(self, member: Any) -> EtcdMemberHealth:
        url = member.clientURLs[0] if member.clientURLs else ""
        endpoint = url.split("://", 1)[-1]
        out = EtcdMemberHealth(member.name or f"{member.ID:x}", url, False, False, "")
        if not endpoint:
            out.error = "no client URL yet"
            return out
        if self._tls is None:
            channel = grpc.aio.insecure_channel(endpoint)
        else:
            channel = grpc.aio.secure_channel(
                endpoint,
                self._tls.credentials(),
                options=[("grpc.ssl_target_name_override", self._server_name())],
            )
        try:
            status = await rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=1.0)
            out.healthy = not status.errors
            out.leader = int(status.leader) == int(member.ID)
            out.error = "; ".join(status.errors)
        except grpc.aio.AioRpcError as exc:
            out.error = str(_map_error(exc, None))
        finally:
            await channel.close()
        return out


async def _requests(first: Any, store: EtcdStore) -> AsyncIterator[Any]:
    """The request side of a watch stream: the create request, then stay open."""
    yield first
    await store._closing.wait()


async def _responses(call: Any) -> AsyncIterator[Any]:
    """A watch's responses, without the bare acknowledgement of its creation."""
    async for response in call:
        if response.created and not (response.events or response.canceled):
            continue
        yield response


def _put(key: bytes, value: bytes, lease: int | None) -> Any:
    return rpc.PutRequest(key=key, value=value, lease=lease or 0)


def _compare(key: bytes, target: str, op: str, operand: int | bytes) -> Any:
    compare = rpc.Compare(key=key, target=_TARGET[target], result=_RESULT[op])
    if target == "value":
        compare.value = operand
    elif target == "revision":
        compare.mod_revision = operand
    elif target == "create_revision":
        compare.create_revision = operand
    elif target == "version":
        compare.version = operand
    else:
        compare.lease = operand
    return compare


def _all_ipv4(endpoints: Sequence[str]) -> bool:
    import ipaddress

    try:
        for endpoint in endpoints:
            ipaddress.IPv4Address(endpoint.rpartition(":")[0])
    except ValueError:
        return False
    return True


def _map_error(exc: grpc.aio.AioRpcError, lease: int | None) -> StoreError:
    """etcd's answers, as the store interface names them."""
    code, details = exc.code(), exc.details() or ""
    if "lease not found" in details:
        return LeaseNotFound(lease or 0)
    if "required revision has been compacted" in details:
        return Compacted(0, 0)
    if "future revision" in details:
        return StoreError("cannot compact beyond the current revision")
    if "too many operations in txn" in details:
        return StoreError("etcd refused a transaction over its --max-txn-ops (Capstan needs 10000)")
    if "request is too large" in details or code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return StoreError(f"etcd refused a request over its size limit ({MAX_REQUEST} bytes)")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or any(
        why in details for why in ("no leader", "leader changed", "timed out", "too many requests")
    ):
        return StoreUnavailable(f"etcd unavailable: {details or code.name}")
    if code == grpc.StatusCode.CANCELLED:
        return StoreUnavailable("etcd call cancelled")
    return StoreError(f"etcd: {code.name}: {details}")
