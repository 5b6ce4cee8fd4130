"""A parsed file that is re-read when it changes on disk: a node's JWKS, deny list and
credentials, the orchestrator's view of the PKI's revocations."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from pki.errors import CapstanError
from pki.files import read_file, write_counts

T = TypeVar("T")
log = logging.getLogger("capstan.pki")


class ReloadingFile(Generic[T]):
    """Holds ``parse(bytes)`` of a file and re-parses it when its size or mtime changes.

    The first load must succeed (a bad file at start is a configuration error). A later
    bad version is logged and the last good value is kept: an attacker who can corrupt
    the file must not be able to make a server forget a revocation or a key roll.

    Checking costs one ``stat``. With ``interval`` 0 that is done on every ``get``; with
    ``interval`` > 0 at most once per ``interval`` seconds of ``clock`` (a change made
    by another process counts within that bound), and at the first ``get`` after this
    process began an ``atomic_write`` of the file (a node's own trust update counts
    from its next call, as before). On a call's path a ``stat`` is not the cost: it
    releases the GIL, and under load getting it back is.
    """

    def __init__(
        self,
        path: Path,
        parse: Callable[[bytes], T],
        what: str,
        *,
        interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval >= 0:
            raise ValueError(f"interval must be >= 0, got {interval}")
        self._path = Path(path)
        self._parse = parse
        self._what = what
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._interval = interval
        self._clock = clock
        self._writes = write_counts(self._path)
        self._writes_seen = self._writes[1]
        self._checked = float("-inf")  # clock time of the last stat (interval > 0)
        self._value: T = self._load_initial()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load_initial(self) -> T:
        stamp = self._stat()
        value = self._parse(read_file(self._path, self._what))
        self._stamp = stamp
        return value

    def get(self) -> T:
        if self._interval:
            # Read before the stat: a write that starts after this is seen next time.
            started, finished = self._writes
            now = self._clock()
            if (
                started == self._writes_seen
                and self._checked <= now < self._checked + self._interval
            ):
                return self._value
            self._checked = now
            if started == finished:  # no write of ours in progress: this stat sees it
                self._writes_seen = started
        stamp = self._stat()
        if stamp == self._stamp:
            return self._value
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._value = self._parse(self._path.read_bytes())
                    log.info("reloaded %s %s", self._what, self._path)
                except (OSError, CapstanError, ValueError) as exc:
                    log.error(
                        "keeping the previous %s: %s cannot be used: %s",
                        self._what,
                        self._path,
                        exc,
                    )
                self._stamp = stamp
        return self._value
