"""Runs etcd members on loopback (Debian's ``etcd`` binary): one for tests that must
break a stream or lose quorum without touching the shared etcd, three for
``capstan up --ha``. Client and peer traffic use mTLS when certificates are given.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pki.errors import ConfigError

ETCD_BINARY = "etcd"


@dataclass(frozen=True)
class MemberTLS:
    """PEM paths for one member: its serving/peer pair and the CA it trusts."""

    ca: Path
    cert: Path
    key: Path


@dataclass
class Member:
    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    host: str = "127.0.0.1"
    tls: MemberTLS | None = None
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def client_endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.peer_port}"

    def command(self, cluster: Sequence[Member], *, state: str = "new") -> list[str]:
        binary = shutil.which(ETCD_BINARY)
        if binary is None:
            raise ConfigError("etcd is not installed (Debian: apt-get install etcd-server)")
        client_url = f"{self.scheme}://{self.host}:{self.client_port}"
        args = [
            binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", ",".join(f"{m.name}={m.peer_url}" for m in cluster),
            "--initial-cluster-state", state,
            "--initial-cluster-token", "capstan-" + "-".join(m.name for m in cluster),
            # An apply writes an app and all its workloads in one transaction.
            "--max-txn-ops", "10000",
            # Elections in about a second on loopback: takeover time is bounded by it.
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        if self.tls is not None:
            args += [
                "--client-cert-auth",
                "--trusted-ca-file", str(self.tls.ca),
                "--cert-file", str(self.tls.cert),
                "--key-file", str(self.tls.key),
                "--peer-client-cert-auth",
                "--peer-trusted-ca-file", str(self.tls.ca),
                "--peer-cert-file", str(self.tls.cert),
                "--peer-key-file", str(self.tls.key),
            ]  # fmt: skip
        return args

    def start(self, cluster: Sequence[Member]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        state = "existing" if (self.data_dir / "member").exists() else "new"
        log = open(self.log or os.devnull, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                self.command(cluster, state=state),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()

    def wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ConfigError(f"etcd member {self.name} exited ({self.process.returncode})")
            try:
                socket.create_connection((self.host, self.client_port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise ConfigError(f"etcd member {self.name} did not listen within {timeout:g} s")

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL and reap: what a crashed host looks like to the others."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out on ``host`` (free unless someone races us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def cluster(
    root: Path,
    size: int,
    *,
    host: str = "127.0.0.1",
    ports: Sequence[tuple[int, int]] | None = None,
    tls: Sequence[MemberTLS] | None = None,
) -> list[Member]:
    """``size`` members under ``root`` (data and logs), not started."""
    members = []
    for i in range(size):
        client, peer = ports[i] if ports else (free_port(host), free_port(host))
        members.append(
            Member(
                name=f"etcd-{i + 1}",
                data_dir=root / f"etcd-{i + 1}",
                client_port=client,
                peer_port=peer,
                host=host,
                tls=tls[i] if tls else None,
                log=root / f"etcd-{i + 1}.log",
            )
        )
    return members


def start_all(members: Sequence[Member], timeout: float = 20.0) -> None:
    for member in members:
        member.start(members)
    for member in members:
        member.wait_listening(timeout)


def stop_all(members: Sequence[Member]) -> None:
    for member in members:
        member.stop()
