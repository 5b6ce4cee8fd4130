"""Fixtures for the operator CLI: a private CAPSTAN_HOME, the real entry point, a real PKI."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.runtime import proc
from orchestrator.cli import main
from pki.authority import Authority


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh CAPSTAN_HOME; no context chosen from the environment."""
    path = tmp_path / "home"
    monkeypatch.setenv("CAPSTAN_HOME", str(path))
    monkeypatch.delenv("CAPSTAN_CONTEXT", raising=False)
    return path


@pytest.fixture
def capstan(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., Result]]:
    """Run ``capstan ARGS`` through the real entry point: exit code, stdout, stderr."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    yield run


@dataclass(frozen=True)
class UserCreds:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def user_creds(tmp_path_factory: pytest.TempPathFactory) -> UserCreds:
    """An admin user certificate from a real PKI (never trusted by any server here)."""
    root = tmp_path_factory.mktemp("cli-pki")
    authority = Authority.init(root / "pki", "cli-test.capstan")
    issued = authority.issue("user", "alice", role="admin")
    assert issued.key_pem is not None
    (root / "ca.crt").write_bytes(authority.trust_bundle())
    (root / "alice.crt").write_bytes(issued.chain_pem)
    key = root / "alice.key"
    key.write_bytes(issued.key_pem)
    key.chmod(0o600)
    return UserCreds(root / "ca.crt", root / "alice.crt", key)


def write_config(home: Path, endpoint: str, creds: UserCreds, name: str = "test") -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.yaml"
    path.write_text(
        f"current-context: {name}\n"
        "contexts:\n"
        f"  {name}:\n"
        f"    endpoint: {endpoint}\n"
        f"    ca: {creds.ca}\n"
        f"    cert: {creds.cert}\n"
        f"    key: {creds.key}\n"
    )
    return path


class Listener:
    """A loopback TCP listener that counts the connections it accepts (and drops them):
    it proves whether a command tried to reach the orchestrator at all."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    try:
        yield lst
    finally:
        lst.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line, environment or working
    directory contains ``text``.

    The environment matters: an unisolated process-runtime workload's HOME is its work
    directory under the node's state directory, whatever its command line says after
    an exec; a sandboxed one is held by an ``unshare`` whose working directory is its
    container directory there.
    """
    found = []
    needle = text.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            cwd = os.readlink(f"/proc/{entry}/cwd").encode()
        except OSError:
            continue
        st = proc.read_stat(int(entry))
        if st is not None and not st.gone and any(needle in b for b in (cmdline, environ, cwd)):
            found.append(int(entry))
    return found


def kill_mentioning(text: str) -> None:
    """Finalizer: SIGKILL every process session still mentioning ``text``."""
    for pid in processes_mentioning(text):
        proc.signal_session(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
