"""Commands started in running containers (``Runtime.exec``), one class per transport:

- ``PipeExec``: a local child process (the process runtime), through pipes or a
  pseudo-terminal;
- ``SocketExec``: a Docker exec instance, through the engine's hijacked attach
  socket (multiplexed frames without a tty, raw bytes with one).

Both end ``output()`` when the command's output ends or ``kill()`` is called (from
another thread: the gRPC call's end), so a handler thread never outlives its call.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from node.runtime import proc

CHUNK = 32 * 1024
STDOUT, STDERR = 1, 2


T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def in_network_of(netns: str, start: Callable[[], T]) -> T:
    """Run ``start`` (which forks the command) on a thread that joined the network
    namespace ``netns`` (``/proc/PID/ns/net``): the child is born in it. Namespaces
    are per thread; the agent's other threads stay where they are."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(start())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run, name="capstan-exec-netns", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class PipeExec:
    """A child process in its own session; ``master`` is the pty's side when ``tty``."""

    def __init__(self, child: subprocess.Popen[bytes], master: int | None = None) -> None:
        self._child = child
        self._master = master
        self._killed = threading.Event()

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self._master is not None:
                os.write(self._master, data)
            elif self._child.stdin is not None:
                self._child.stdin.write(data)
                self._child.stdin.flush()

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self._master is not None:
                os.write(self._master, b"\x04")  # end of file, as a terminal types it
            elif self._child.stdin is not None:
                self._child.stdin.close()

    def output(self) -> Iterator[tuple[int, bytes]]:
        sel = selectors.DefaultSelector()
        if self._master is not None:
            sel.register(self._master, selectors.EVENT_READ, STDOUT)
        else:
            for fh, stream in ((self._child.stdout, STDOUT), (self._child.stderr, STDERR)):
                if fh is not None:
                    sel.register(fh.fileno(), selectors.EVENT_READ, stream)
        try:
            while sel.get_map() and not self._killed.is_set():
                for key, _ in sel.select(timeout=0.25):
                    try:
                        data = os.read(key.fd, CHUNK)
                    except OSError:  # EIO: the pty's last user closed it
                        data = b""
                    if not data:
                        sel.unregister(key.fd)
                        continue
                    yield key.data, data
                if self._master is not None and self._child.poll() is not None:
                    # The command ended; what it wrote is still in the pty: drain it.
                    while True:
                        ready = sel.select(timeout=0)
                        if not ready:
                            break
                        try:
                            data = os.read(self._master, CHUNK)
                        except OSError:
                            data = b""
                        if not data:
                            break
                        yield STDOUT, data
                    break
        finally:
            sel.close()

    def wait(self) -> int:
        return _exit_code(self._child.wait())

    def kill(self) -> None:
        self._killed.set()
        if self._child.poll() is None:
            proc.signal_session(self._child.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self._child.kill()
        self._child.wait()
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = None
        for fh in (self._child.stdin, self._child.stdout, self._child.stderr):
            if fh is not None:
                with contextlib.suppress(OSError):
                    fh.close()


class SocketExec:
    """A Docker exec instance attached through ``sock`` (the engine's raw stream)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        tty: bool,
        inspect: Callable[[], dict[str, Any]],
        close: Callable[[], None],
    ) -> None:
        self._sock = sock
        self._tty = tty
        self._inspect = inspect
        self._close = close
        self._killed = threading.Event()

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(data)

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            if self._tty:
                self._sock.sendall(b"\x04")  # a terminal's end of file (half-close ends a tty)
            else:
                self._sock.shutdown(socket.SHUT_WR)

    def _recv(self, n: int) -> bytes:
        while not self._killed.is_set():
            try:
                return self._sock.recv(n)
            except TimeoutError:
                continue
            except OSError:
                return b""
        return b""

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            data = self._recv(n - len(out))
            if not data:
                return b""
            out += data
        return out

    def output(self) -> Iterator[tuple[int, bytes]]:
        self._sock.settimeout(0.25)
        if self._tty:
            while data := self._recv(CHUNK):
                yield STDOUT, data
            return
        while header := self._exact(8):
            stream, size = header[0], struct.unpack(">I", header[4:])[0]
            data = self._exact(size) if size else b""
            if size and not data:
                return
            yield (STDERR if stream == STDERR else STDOUT), data

    def wait(self) -> int:
        # The output ended; the engine records the exit code a moment later.
        deadline = time.monotonic() + 10
        while True:
            state = self._inspect()
            if not state.get("Running") and state.get("ExitCode") is not None:
                return int(state["ExitCode"])
            if time.monotonic() > deadline:
                return 137
            time.sleep(0.05)

    def kill(self) -> None:
        self._killed.set()
        with contextlib.suppress(Exception):
            state = self._inspect()
            pid = int(state.get("Pid") or 0)
            if state.get("Running") and pid > 0:
                # The exec's process, as the host sees it (no exec-kill in the engine API).
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self._sock.close()
        self._close()
