"""Crash-safe file writes: a temp file in the same directory, fsync, rename.

Private keys are created 0600 from the start (never chmod'ed after being written)
and are never overwritten silently.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pki.errors import ConfigError, PKIExistsError


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see the old content or the new, never half."""
    path = Path(path)
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
