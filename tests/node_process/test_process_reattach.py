"""A new ProcessRuntime re-attaches to what a killed agent left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.runtime import proc
from node.runtime.base import ContainerState
from node.runtime.process import STATE_DB, ProcessRuntime
from node.state import NodeState
from tests.waiting import wait_for

from .conftest import gone, kill_session, log_text, spec

HELPER = Path(__file__).with_name("agent_helper.py")


@pytest.fixture
def killed_agent(
    state_dir: Path, busybox_archive: bytes, tmp_path: Path
) -> Iterator[dict[str, int]]:
    """Run the helper agent, let it start workloads, then SIGKILL it."""
    archive = tmp_path / "busybox.tar"
    archive.write_bytes(busybox_archive)
    agent = subprocess.Popen(
        [sys.executable, str(HELPER), str(state_dir), str(archive)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline()
        if not line:
            pytest.fail(f"helper agent failed: {agent.communicate(timeout=10)[1].decode()}")
        pids: dict[str, int] = json.loads(line)
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=10)
        yield pids
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        # Its workloads are killed by the state_dir fixture (pid and start time checked).


@pytest.mark.timeout(60)
def test_reattach_after_agent_sigkill(state_dir: Path, killed_agent: dict[str, int]) -> None:
    pids = killed_agent
    # The workloads outlived their agent.
    assert not gone(pids["keep"]) and not gone(pids["victim"])
    # One dies while no agent is watching.
    kill_session(pids["victim"])
    wait_for(lambda: gone(pids["victim"]), what="victim gone")

    rt = ProcessRuntime("node-agent", state_dir)
    try:
        listed = {s.name: s for s in rt.list()}
        assert sorted(listed) == ["idle", "job", "keep", "victim"]  # no duplicates
        keep = listed["keep"]
        assert keep.state is ContainerState.RUNNING and keep.pid == pids["keep"]
        victim = listed["victim"]
        assert victim.state is ContainerState.DEAD
        assert victim.exit_code is None and victim.finished_at is not None
        assert (listed["job"].state, listed["job"].exit_code) == (ContainerState.EXITED, 3)
        assert listed["idle"].state is ContainerState.CREATED
        assert rt.record("victim").desired == "running"  # died, was not stopped

        # A re-attached workload can be measured, its logs read, and stopped.
        assert rt.stats("keep").memory_bytes > 0
        assert log_text(rt, "keep").startswith("started\n")
        status = rt.stop("keep", timeout=5)
        assert gone(pids["keep"])
        assert proc.session_members(pids["keep"]) == []
        # Not our child: nobody can tell us its exit code.
        assert status.state is ContainerState.DEAD and status.exit_code is None
        assert rt.record("keep").desired == "stopped"
        # Follow on an ended re-attached workload returns the file and ends.
        assert b"".join(rt.logs("keep", follow=True)).startswith(b"started\n")

        # The dead one starts again as a child of the new runtime.
        again = rt.start("victim")
        assert again.state is ContainerState.RUNNING and again.pid != pids["victim"]
        assert len(rt.list()) == 4
        rt.remove("victim", force=True)
        assert again.pid is not None and gone(again.pid)
    finally:
        rt.close()


def test_recycled_pid_is_not_mistaken_for_the_workload(
    runtime: ProcessRuntime, state_dir: Path
) -> None:
    runtime.create(spec("svc", "sleep", "1000"))
    runtime.start("svc")
    runtime.close()
    # A stranger holds the recorded pid from now on: same pid, other start time.
    stranger = subprocess.Popen(["/bin/busybox", "sleep", "1000"], start_new_session=True)
    try:
        state = NodeState(state_dir / STATE_DB)
        real = state.get("svc")
        assert real.pid is not None and real.start_ticks is not None
        kill_session(real.pid)
        wait_for(lambda: gone(real.pid or 0), what="svc gone")
        ticks = proc.start_ticks(stranger.pid)
        assert ticks is not None
        state.record_started("svc", pid=stranger.pid, start_ticks=ticks + 1)
        state.close()

        rt = ProcessRuntime("node-test", state_dir)
        try:
            status = rt.inspect("svc")
            assert status.state is ContainerState.DEAD
            assert rt.stop("svc", timeout=1).state is ContainerState.DEAD
            rt.remove("svc", force=True)
            assert stranger.poll() is None  # never signalled
            assert not gone(stranger.pid)
        finally:
            rt.close()
    finally:
        os.killpg(stranger.pid, signal.SIGKILL)
        stranger.wait()
