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
import os
import queue
import socket
import threading
from concurrent.futures import Future

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


def same_namespace(path: str) -> bool:
    """True when ``path`` is the agent's own network namespace."""
    try:
        return os.stat(path).st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False
