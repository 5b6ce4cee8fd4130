"""A parsed file that is re-read when it changes on disk: a node's JWKS, deny list and
credentials, the orchestrator's view of the PKI's revocations."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from pki.errors import CapstanError
from pki.files import read_file

T = TypeVar("T")
log = logging.getLogger("capstan.pki")


class ReloadingFile(Generic[T]):
    """Holds ``parse(bytes)`` of a file and re-parses it when its size or mtime changes.

    The first load must succeed (a bad file at start is a configuration error). A later
    bad version is logged and the last good value is kept: an attacker who can corrupt
    the file must not be able to make a server forget a revocation or a key roll.
    Checking costs one ``stat`` per call, so it can sit on every call's path.
    """

    def __init__(self, path: Path, parse: Callable[[bytes], T], what: str) -> None:
        self._path = Path(path)
        self._parse = parse
        self._what = what
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
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
