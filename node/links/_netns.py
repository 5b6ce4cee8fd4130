"""Sockets made inside another network namespace.

A socket belongs to the namespace of the thread that created it, for its whole life;
``connect``, ``bind`` and ``accept`` may then run on any thread. So each namespace
gets one worker thread that entered it once (``setns(2)`` on a handle opened from
``/proc/<pid>/ns/net``) and only creates sockets on request. Entering a network
namespace affects the calling thread alone, which is why a dedicated thread (never a
pool thread, never the main thread) does it. The open handle pins the namespace: a
recycled pid cannot swap it for another process's.

Python 3.11 has no ``os.setns``; the libc call is made through ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_setns = _libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_setns.restype = ctypes.c_int


class NamespaceError(OSError):
    """The namespace is gone or cannot be entered."""


def _enter(fd: int) -> None:
    if _setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(err, f"setns: {os.strerror(err)}")


class Namespace:
    """An open network namespace and the one thread that makes sockets in it."""

    def __init__(self, path: str) -> None:
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NamespaceError(exc.errno, f"{path}: {exc.strerror}") from None
        self.inode = os.fstat(self._fd).st_ino
        self._requests: queue.SimpleQueue[Future[socket.socket] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def _run(self, entered: Future[None]) -> None:
        try:
            _enter(self._fd)
        except NamespaceError as exc:
            entered.set_exception(exc)
            return
        entered.set_result(None)
        while (request := self._requests.get()) is not None:
            if request.set_running_or_notify_cancel():
                try:
                    request.set_result(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                except OSError as exc:
                    request.set_exception(exc)

    def enter(self) -> None:
        """Move the calling thread into this namespace (a thread of its own, never a pool's)."""
        _enter(self._fd)

    def socket(self) -> socket.socket:
        """A new TCP socket of this namespace."""
        with self._lock:
            if self._closed:
                raise NamespaceError(0, "namespace handle closed")
            if self._thread is None:
                entered: Future[None] = Future()
                self._thread = threading.Thread(
                    target=self._run, args=(entered,), name="capstan-netns", daemon=True
                )
                self._thread.start()
                try:
                    entered.result()
                except NamespaceError:
                    self._thread = None
                    raise
            request: Future[socket.socket] = Future()
            self._requests.put(request)
        return request.result(timeout=5)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._requests.put(None)
        os.close(self._fd)


# -- a namespace of its own (the benchmark's workloads; runtimes have their own) --------

T = TypeVar("T")
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _unshare_network() -> None:
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")


def loopback_up() -> None:
    """Bring ``lo`` up in the calling thread's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def in_new_network(start: Callable[[], T]) -> T:
    """Run ``start`` (which forks the workload) on a thread moved into a new network
    namespace with ``lo`` up; return what it returned or raise what it raised."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            _unshare_network()
            loopback_up()
            result.append(start())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run, name="capstan-netns-start", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
