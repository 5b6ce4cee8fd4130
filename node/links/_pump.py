"""Copying bytes between two connected TCP sockets, both ways, half-closes kept."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

CHUNK = 256 * 1024


def _copy(src: socket.socket, dst: socket.socket, count: list[int], i: int) -> None:
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
            count[i] += len(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)  # the other side reads EOF, may still answer
    except OSError:
        # One side failed: tear both down so the other copier ends too.
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def splice(
    a: socket.socket, b: socket.socket, on_done: Callable[[int, int], None] | None = None
) -> threading.Thread:
    """Copy a->b and b->a until both directions ended, then close both and call
    ``on_done(bytes a->b, bytes b->a)``. Returns at once (threads do the work)."""
    count = [0, 0]

    def run() -> None:
        other = threading.Thread(target=_copy, args=(b, a, count, 1), daemon=True)
        other.start()
        _copy(a, b, count, 0)
        other.join()
        a.close()
        b.close()
        if on_done is not None:
            on_done(count[0], count[1])

    thread = threading.Thread(target=run, name="capstan-link", daemon=True)
    thread.start()
    return thread
