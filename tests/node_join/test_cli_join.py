"""``capstan node join`` as a real process: the line the launcher waits for, SIGTERM, restart."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.liveness import NodeView
from tests.node_process.conftest import kill_recorded
from tests.waiting import wait_for

from .conftest import Orchestrator, Pki, Wiretap

LINE = re.compile(r"node (spiffe://\S+) listening on (127\.0\.0\.1:\d+) runtime=process\n\Z")


class Agent:
    def __init__(self, args: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("CAPSTAN_JOIN_TOKEN", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "node", "join", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.first_line = ""
        self._got = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        self.first_line = self.proc.stdout.readline()
        self._got.set()

    def line(self) -> str:
        wait_for(
            lambda: self._got.is_set() or self.proc.poll() is not None,
            timeout=60,
            what="the agent's first line",
        )
        self._got.wait(5)
        return self.first_line

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def why(self) -> str:
        """Everything the agent said, for a failure message (stops it first)."""
        self.kill()
        assert self.proc.stderr is not None
        return f"stdout: {self.first_line!r}; stderr: {self.proc.stderr.read()}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for a in started:
        a.kill()


def test_join_serve_report_stop_and_restart_without_token(
    orch: Orchestrator, pki: Pki, tmp_path: Path, agents: list[Agent]
) -> None:
    state = tmp_path / "state"
    args = [
        "--ca",
        str(pki.ca_file),
        "--name",
        "cli-1",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        str(state),
        "--runtime",
        "process",
        "--label",
        "zone=b",
    ]
    try:
        first = Agent([orch.join_address, "--token", orch.mint(), *args])
        agents.append(first)
        match = LINE.match(first.line())
        assert match, first.why()
        node_id, address = match.groups()
        assert node_id == f"spiffe://{pki.authority.trust_domain}/node/cli-1"
        record = orch.node("cli-1")
        assert record is not None and record.address == address and record.id == node_id
        wait_for(
            lambda: (orch.view("cli-1") or NodeView()).last_seen > 0,
            what="a heartbeat from the agent",
        )
        assert first.terminate() == 0
        wait_for(lambda: not orch.connected("cli-1"), what="the first Report stream to end")

        # Restart: no address, no token, same identity and address.
        second = Agent(["--state-dir", str(state), "--listen", "127.0.0.1:0"])
        agents.append(second)
        again = LINE.match(second.line())
        assert again, second.why()
        assert again.groups() == (node_id, address)
        assert len(orch.audit("node.joined")) == 1
        wait_for(lambda: orch.connected("cli-1"), what="a second Report stream")
        assert second.terminate() == 0
    finally:
        kill_recorded(state)


def test_a_refused_token_exits_1_with_one_line(
    orch: Orchestrator, pki: Pki, tmp_path: Path, agents: list[Agent]
) -> None:
    token = f"CJ1.{'A' * 43}.{pki.pin}"
    agent = Agent(
        [
            orch.join_address,
            "--token",
            token,
            "--ca",
            str(pki.ca_file),
            "--state-dir",
            str(tmp_path / "state"),
            "--runtime",
            "process",
        ]
    )
    agents.append(agent)
    assert agent.proc.wait(60) == 1
    assert agent.proc.stderr is not None
    err = agent.proc.stderr.read()
    assert err == f"error: orchestrator {orch.join_address} refused the join: join refused\n"
    assert token.split(".")[1] not in err
    assert not (tmp_path / "state").exists()


def test_a_token_from_the_environment_is_used(
    orch: Orchestrator, pki: Pki, tmp_path: Path
) -> None:
    """The token can stay out of the process list (argv is world-readable in /proc)."""
    state = tmp_path / "state"
    # No --name: the admin bound the name in the token.
    env = dict(os.environ, CAPSTAN_JOIN_TOKEN=orch.mint("env-1"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "node",
            "join",
            orch.join_address,
            "--ca",
            str(pki.ca_file),
            "--state-dir",
            str(state),
            "--runtime",
            "process",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert LINE.match(line), line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        kill_recorded(state)


def test_pin_mismatch_exits_1_before_contacting_the_orchestrator(
    orch: Orchestrator,
    wiretap: Wiretap,
    pki: Pki,
    evil_pki: Pki,
    tmp_path: Path,
    agents: list[Agent],
) -> None:
    agent = Agent(
        [
            wiretap.address,
            "--token",
            orch.mint(),
            "--ca",
            str(evil_pki.ca_file),
            "--state-dir",
            str(tmp_path / "state"),
        ]
    )
    agents.append(agent)
    assert agent.proc.wait(60) == 1
    assert agent.proc.stderr is not None
    err = agent.proc.stderr.read()
    assert err.count("\n") == 1 and "no certificate matching the join token's CA pin" in err
    assert wiretap.joins == []
