"""The tunnel: TCP connections multiplexed on one NodeService.Tunnel stream.

Both ends run the same multiplexer. The source numbers the connections; each
direction of each connection is DATA frames then one EOF (a TCP half close, so a
client that shuts its side down still gets its answer), and RESET ends a connection
at once (refused, failed, or the tunnel closing). A connection is done when both
directions have ended. Frames for one connection are written to its local socket
in the order they came; one reader thread per connection feeds the stream through
a bounded queue, so a slow tunnel slows the local senders down (TCP backpressure)
instead of buffering without bound.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from protos import node_pb2

log = logging.getLogger("capstan.node.links")

Frame = node_pb2.TunnelFrame
CHUNK = 128 * 1024  # under the 1 MiB message limit with room to spare
QUEUE_FRAMES = 256
MAX_CONNECTIONS = 4096


@dataclass
class _Conn:
    sock: socket.socket
    sent_eof: bool = False  # the local side ended; the peer was told
    got_eof: bool = False  # the peer ended; the local socket was shut for writing


@dataclass
class Counters:
    bytes_in: int = 0  # from the peer into local sockets
    bytes_out: int = 0  # from local sockets to the peer
    connections: int = 0
    refused: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Mux:
    """One end of a tunnel. ``out`` holds frames for the peer (None ends the stream)."""

    def __init__(self) -> None:
        self.out: queue.Queue[Frame | None] = queue.Queue(maxsize=QUEUE_FRAMES)
        self.counters = Counters()
        self._conns: dict[int, _Conn] = {}
        self._lock = threading.Lock()
        self.closed = threading.Event()
        self.reason = ""

    # -- local side ---------------------------------------------------------------------

    def _send(self, frame: Frame) -> bool:
        while not self.closed.is_set():
            try:
                self.out.put(frame, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def attach(self, conn_id: int, sock: socket.socket) -> None:
        """Carry ``sock`` as connection ``conn_id``; a thread reads it."""
        with self._lock:
            if self.closed.is_set():
                sock.close()
                return
            self._conns[conn_id] = _Conn(sock)
            self.counters.connections += 1
        threading.Thread(
            target=self._read_local, args=(conn_id, sock), name="capstan-tunnel-conn", daemon=True
        ).start()

    def _read_local(self, conn_id: int, sock: socket.socket) -> None:
        try:
            while data := sock.recv(CHUNK):
                if not self._send(Frame(conn=conn_id, data=data)):
                    return
                self.counters.bytes_out += len(data)
        except OSError:
            if self._forget(conn_id):
                self._send(Frame(conn=conn_id, kind=Frame.RESET))
            return
        with self._lock:
            conn = self._conns.get(conn_id)
            if conn is None:
                return
            conn.sent_eof = True
        self._send(Frame(conn=conn_id, kind=Frame.EOF))
        self._finish_if_done(conn_id)

    def _forget(self, conn_id: int) -> bool:
        with self._lock:
            conn = self._conns.pop(conn_id, None)
        if conn is None:
            return False
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
        conn.sock.close()
        return True

    def _finish_if_done(self, conn_id: int) -> None:
        with self._lock:
            conn = self._conns.get(conn_id)
            if conn is None or not (conn.sent_eof and conn.got_eof):
                return
            del self._conns[conn_id]
        conn.sock.close()

    # -- frames from the peer -----------------------------------------------------------

    def dispatch(self, frame: Frame) -> None:
        if frame.kind == Frame.OPEN:
            self.on_open(frame.conn)
            return
        with self._lock:
            conn = self._conns.get(frame.conn)
        if conn is None:
            return  # already gone (a RESET crossed this frame)
        if frame.kind == Frame.DATA:
            try:
                conn.sock.sendall(frame.data)
                self.counters.bytes_in += len(frame.data)
            except OSError:
                if self._forget(frame.conn):
                    self._send(Frame(conn=frame.conn, kind=Frame.RESET))
        elif frame.kind == Frame.EOF:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
            with self._lock:
                conn.got_eof = True
            self._finish_if_done(frame.conn)
        else:
            self._forget(frame.conn)

    def on_open(self, conn_id: int) -> None:
        """Only the target side accepts OPEN; the source ignores one."""

    def close(self, reason: str) -> None:
        """End every connection and the stream."""
        with self._lock:
            if self.closed.is_set():
                return
            self.reason = reason
            self.closed.set()
            conns = list(self._conns.items())
            self._conns.clear()
        for _, conn in conns:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
            conn.sock.close()
        # Wake the stream's sender; a full queue is drained by it or dropped with it.
        with contextlib.suppress(queue.Full):
            self.out.put_nowait(None)

    def drain(self) -> Iterator[Frame]:
        """The frames for the peer, until the tunnel closes."""
        while True:
            try:
                frame = self.out.get(timeout=0.25)
            except queue.Empty:
                if self.closed.is_set():
                    return
                continue
            if frame is None or self.closed.is_set():
                return
            yield frame

    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)


class InboundTunnel(Mux):
    """The target's end: OPEN connects to a local instance through ``connect``."""

    def __init__(
        self,
        *,
        peer: str,
        serial: int,
        res: str,
        connect: Callable[[], socket.socket | None],
    ) -> None:
        super().__init__()
        self.peer = peer
        self.serial = serial
        self.res = res
        self._connect = connect

    def on_open(self, conn_id: int) -> None:
        with self._lock:
            taken = conn_id in self._conns or len(self._conns) >= MAX_CONNECTIONS
        sock = None if taken else self._connect()
        if sock is None:
            self.counters.refused += 1
            self._send(Frame(conn=conn_id, kind=Frame.RESET))
            return
        self.attach(conn_id, sock)

    def pump_requests(self, requests: Iterator[Frame]) -> None:
        """Read the source's frames until the stream or the tunnel ends."""
        try:
            for frame in requests:
                if self.closed.is_set():
                    break
                self.dispatch(frame)
        except Exception as exc:  # the RPC ended under us (cancelled, peer gone)
            log.debug("tunnel %s from %s: %s", self.res, self.peer, exc)
        self.close(self.reason or "source closed the tunnel")

    def responses(self) -> Iterator[Frame]:
        yield Frame(res=self.res)  # accepted: the source may carry connections now
        yield from self.drain()


class OutboundTunnel(Mux):
    """The source's end of one link tunnel to one target node."""

    def __init__(self, res: str, node_id: str) -> None:
        super().__init__()
        self.res = res
        self.node_id = node_id
        self._next = 0
        self.call: object | None = None

    def requests(self) -> Iterator[Frame]:
        yield Frame(res=self.res)
        yield from self.drain()

    def carry(self, sock: socket.socket) -> bool:
        """Carry a newly accepted local connection; False when the tunnel is closed."""
        with self._lock:
            if self.closed.is_set():
                return False
            self._next += 1
            conn_id = self._next
        if not self._send(Frame(conn=conn_id, kind=Frame.OPEN)):
            return False
        self.attach(conn_id, sock)
        return True

    def pump_responses(self, responses: Iterator[Frame], accepted: threading.Event) -> None:
        try:
            for frame in responses:
                if frame.res:
                    accepted.set()
                    continue
                self.dispatch(frame)
            reason = "target ended the tunnel"
        except Exception as exc:  # grpc.RpcError: refused, revoked, withdrawn, node gone
            reason = _describe(exc)
        self.close(reason)


def _describe(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return str(exc)
