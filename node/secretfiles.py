"""Secrets on the node: the node's seal key, and each instance's secret files.

The orchestrator seals every secret of an instance to this node's X25519 key
(libsodium sealed box) inside the command that creates the instance; only this
node can open it. Opened values are written to files of mode 0400 on a
memory-backed filesystem (a tmpfs the agent mounts, or /dev/shm where it cannot
mount), one directory per instance and secret directory, bind-mounted read-only
into the instance. Nothing is written to the node's disk, and the directory goes
when the instance goes.

Layout (``<root>`` is the tmpfs)::

    <root>/<container>/<n>/<file>   one directory per distinct parent path, n = 0, 1, ...
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import logging
import os
import posixpath
import re
import shutil
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox

from node.errors import FailedPrecondition, InvalidArgument, RuntimeFailure
from node.runtime.base import SecretMount
from protos import node_pb2
from protos.wire import rules

log = logging.getLogger("capstan.node.secrets")

SEAL_KEY_FILE = "seal.key"
_KEY_BYTES = 32


def seal_key_for_join(state_dir: Path) -> tuple[PrivateKey, bool]:
    """The seal key a join registers: the one in ``state_dir``, else a new one that is
    only in memory until ``write_seal_key`` (a refused join leaves nothing behind)."""
    path = Path(state_dir) / SEAL_KEY_FILE
    if path.exists():
        return load_or_create_seal_key(state_dir), False
    return PrivateKey.generate(), True


def write_seal_key(state_dir: Path, key: PrivateKey) -> None:
    fd = os.open(Path(state_dir) / SEAL_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(bytes(key))


def load_or_create_seal_key(state_dir: Path) -> PrivateKey:
    """The node's X25519 key (created 0600 on first use); it never leaves the node."""
    path = Path(state_dir) / SEAL_KEY_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        key = PrivateKey.generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(bytes(key))
        return key
    if len(raw) != _KEY_BYTES:
        raise RuntimeFailure(f"{path} is not a 32-byte X25519 key")
    return PrivateKey(raw)


def _libc_mount() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


_MNT_DETACH = 2
_SOURCE = "capstan-secrets"  # the device name of every tmpfs an agent mounts for secrets


def _unescaped(field: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def secret_mounts(under: Path) -> list[Path]:
    """Every secrets tmpfs an agent mounted at or below ``under``, deepest first."""
    base = os.path.realpath(under)
    found: list[Path] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if "-" not in fields:
            continue
        tail = fields[fields.index("-") + 1 :]
        point = _unescaped(fields[4])
        if tail[:2] != ["tmpfs", _SOURCE]:
            continue
        if point == base or point.startswith(base.rstrip("/") + "/"):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount(path: Path) -> bool:
    """Detach the secrets tmpfs at ``path`` (instances that still run keep their own
    bind mounts of it until they end); True when it was unmounted."""
    libc = _libc_mount()
    return libc is not None and libc.umount2(str(path).encode(), _MNT_DETACH) == 0


def _memory_root(state_dir: Path) -> tuple[Path, bool]:
    """A tmpfs for this node's secret files, and whether this agent owns its mount (it
    unmounts it when it stops): mounted by the agent where it may, else a private
    directory under /dev/shm (memory-backed too). A secrets tmpfs already there was
    mounted by an earlier process of this node's agent that was killed before it could
    unmount it: it is taken over, files and all (instances still running use them, and
    the first report prunes those of instances gone), and unmounted at this agent's stop."""
    root = Path(state_dir) / "secrets"
    root.mkdir(mode=0o700, exist_ok=True)
    if os.path.ismount(root):
        return root, Path(os.path.realpath(root)) in secret_mounts(root)
    if os.geteuid() == 0:
        libc = _libc_mount()
        if libc is not None:
            ok = libc.mount(
                _SOURCE.encode(), str(root).encode(), b"tmpfs", 0, b"mode=0700,size=16m"
            )
            if ok == 0:
                return root, True
            log.warning("cannot mount a tmpfs on %s (errno %d)", root, ctypes.get_errno())
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    shm = Path("/dev/shm") / f"capstan-secrets-{digest}"  # noqa: S108 - memory-backed
    shm.mkdir(mode=0o700, exist_ok=True)
    return shm, False


class SecretFiles:
    """Opens sealed secrets and keeps each instance's files; removes them with it."""

    def __init__(self, state_dir: Path, key: PrivateKey | None = None) -> None:
        self._key = key or load_or_create_seal_key(state_dir)
        self._box = SealedBox(self._key)
        self.root, self._mounted = _memory_root(state_dir)
        # Instances whose files are written and whose create is still under way:
        # prune() must not take their files before the runtime lists them.
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.public_key)

    def _dir(self, container: str) -> Path:
        return self.root / rules_name(container)

    def open(
        self, container: str, sealed: Sequence[node_pb2.SealedSecret], uid: int = 0, gid: int = 0
    ) -> tuple[tuple[SecretMount, ...], tuple[tuple[str, str], ...]]:
        """Write ``container``'s secrets; returns its mounts and the env it asked for.

        Every secret is opened before anything is written: one that does not open
        (sealed to another key, tampered) refuses the whole set.
        """
        values = self._opened(sealed)
        top = self._dir(container)
        with self._lock:
            self._pending.add(container)
        staging = top.with_name(top.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o500)
        parents: dict[str, int] = {}
        env: list[tuple[str, str]] = []
        try:
            for s, value in values:
                parent, base = posixpath.split(s.path)
                index = parents.setdefault(parent, len(parents))
                folder = staging / str(index)
                if not folder.exists():
                    folder.mkdir(mode=0o500)
                    os.chown(folder, uid, gid)
                target = folder / base
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(value)
                os.chown(target, uid, gid)
                if s.env:
                    env.append((s.env, value.decode("utf-8", "replace")))
            os.chown(staging, uid, gid)
            self._swap(top, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        mounts = tuple(SecretMount(str(top / str(i)), parent) for parent, i in parents.items())
        return mounts, tuple(env)

    def _swap(self, top: Path, staging: Path) -> None:
        old = top.with_name(top.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if top.exists():
            os.rename(top, old)
        os.rename(staging, top)
        shutil.rmtree(old, ignore_errors=True)

    def close(self, *, unmount_any: bool = False) -> None:
        """The agent stops: its tmpfs goes with every file on it (instances that keep
        running keep their own mounts of it until they end). ``unmount_any``: also one
        an earlier process mounted (``capstan run --down`` after ``-d``)."""
        if (self._mounted or (unmount_any and os.path.ismount(self.root))) and unmount(
            self.root
        ):
            self._mounted = False

    def _opened(
        self, sealed: Sequence[node_pb2.SealedSecret]
    ) -> list[tuple[node_pb2.SealedSecret, bytes]]:
        """Every secret opened, or InvalidArgument naming the first that does not
        open (sealed to another key, tampered) before anything is written."""
        out = []
        for i, s in enumerate(sealed):
            problem = rules.check_mount_path(s.path)
            if problem:
                raise InvalidArgument(f"secrets[{i}].path", problem)
            try:
                out.append((s, self._box.decrypt(s.sealed)))
            except CryptoError:
                raise InvalidArgument(
                    f"secrets[{i}].sealed", "does not open with this node's seal key"
                ) from None
        return out

    def update(self, container: str, sealed: Sequence[node_pb2.SealedSecret]) -> None:
        """Replace a running instance's files with new versions, each atomically (a
        reader sees the old value or the new, never a mix); the paths must be the ones
        it was created with, since they are mounted."""
        values = self._opened(sealed)
        top = self._dir(container)
        if not top.is_dir():
            raise FailedPrecondition(f"container {container!r} holds no secrets here")
        parents: dict[str, int] = {}
        for s, _ in values:
            parents.setdefault(posixpath.split(s.path)[0], len(parents))
        for s, _ in values:
            parent, base = posixpath.split(s.path)
            if not (top / str(parents[parent]) / base).is_file():
                raise FailedPrecondition(f"{s.path}: not a secret this instance was created with")
        for s, value in values:
            parent, base = posixpath.split(s.path)
            folder = top / str(parents[parent])
            owner = os.lstat(folder / base)  # the instance's uid, as at creation
            tmp = folder / f".{base}.new"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
            with os.fdopen(fd, "wb") as fh:
                fh.write(value)
            os.chown(tmp, owner.st_uid, owner.st_gid)
            os.replace(tmp, folder / base)

    def created(self, container: str) -> None:
        """The runtime holds ``container`` now (or never will): prune() may judge it."""
        with self._lock:
            self._pending.discard(container)

    def remove(self, container: str) -> None:
        """Forget ``container``'s secrets (its instance left this node)."""
        self.created(container)
        shutil.rmtree(self._dir(container), ignore_errors=True)

    def prune(self, present: Iterable[str]) -> list[str]:
        """Remove the files of every instance the runtime no longer holds -- fenced,
        removed behind the agent's back, gone in a crash; returns whose went."""
        keep = set(present)
        with self._lock:
            keep |= self._pending
        gone = []
        for entry in self.root.iterdir():
            if entry.name in keep:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            gone.append(entry.name)
        if gone:
            log.info("removed the secret files of %s: no longer on this node", gone)
        return gone

    def wipe(self) -> None:
        """Every secret file goes (this node was revoked: nothing it holds is its own)."""
        self.prune(())


def rules_name(container: str) -> str:
    problem = rules.check_name(container)
    if problem:
        raise InvalidArgument("name", problem)
    return container
