"""Crash-safe file writes: a temp file in the same directory, fsync, rename.

Private keys are created 0600 from the start (never chmod'ed after being written)
and are never overwritten silently.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from pki.errors import ConfigError, PKIExistsError

_writes_lock = threading.Lock()
# Absolute path -> [atomic writes started, finished] in this process, for the paths a
# ReloadingFile watches (a node's trust files): it re-reads one at the next call after
# a write began instead of waiting for its periodic check. Only watched paths are
# counted, so the table stays as small as the set of watched files.
_writes: dict[str, list[int]] = {}


def write_counts(path: Path) -> list[int]:
    """The live ``[started, finished]`` counts of ``atomic_write`` calls on ``path`` in
    this process from now on (the same list each time: read it, never change it)."""
    with _writes_lock:
        return _writes.setdefault(os.path.abspath(path), [0, 0])


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see the old content or the new, never half."""
    with _writes_lock:
        counts = _writes.get(os.path.abspath(path))
        if counts is not None:
            counts[0] += 1  # before the new content can be seen
    try:
        _atomic_write(Path(path), data, mode, overwrite)
    finally:
        if counts is not None:
            with _writes_lock:
                counts[1] += 1


def _atomic_write(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    if not overwrite and path.exists():
        raise PKIExistsError(f"{path} already exists; refusing to overwrite it")
    directory = path.parent
    if not directory.is_dir():
        raise ConfigError(f"directory {directory} does not exist")
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if not overwrite:
            # link() fails if the target appeared meanwhile: no silent overwrite race.
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_private_key(path: Path, pem: bytes, *, overwrite: bool = False) -> None:
    """Write a private key with mode 0600; refuse to replace an existing one unless told."""
    atomic_write(path, pem, mode=0o600, overwrite=overwrite)


def read_file(path: Path, what: str) -> bytes:
    """Read a file or raise ConfigError naming ``what`` and the path."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, not a file") from None
    except PermissionError:
        raise ConfigError(f"{what} {path} is not readable") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None
