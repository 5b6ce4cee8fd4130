"""Starting a workload in a network namespace of its own, holding only its loopback
interface, brought up before the workload runs.

Network namespaces are per thread in Linux, and a forked child inherits the forking
thread's. So a fresh thread moves itself into a new namespace (``unshare(2)``),
brings ``lo`` up, forks the workload and ends: the namespace lives on with the
workload, and the agent reaches in only through it (``node/links``). Python 3.11 has
no ``os.unshare``; the call is made through ctypes. The sandbox's other namespaces
are to wrap this same start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


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
