"""Lifecycle of real workloads under the process runtime."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from node.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from node.runtime import proc
from node.runtime.base import ContainerState, Runtime, VolumeMount
from node.runtime.process import ProcessRuntime
from node.volumes import VolumeStore
from tests.waiting import wait_for

from .conftest import gone, host_pid_of, log_text, spec


def test_implements_the_runtime_protocol(runtime: ProcessRuntime) -> None:
    assert isinstance(runtime, Runtime)
    assert runtime.name == "process"
    assert runtime.node_id == "node-test"


def test_full_lifecycle(runtime: ProcessRuntime, state_dir: Path) -> None:
    created = runtime.create(spec("web", "sleep", "1000"), generation=3)
    assert created.state is ContainerState.CREATED
    assert created.runtime_id.startswith("proc-")
    assert created.pid is None
    assert runtime.record("web").generation == 3
    assert runtime.record("web").desired == "created"

    running = runtime.start("web")
    assert running.state is ContainerState.RUNNING
    assert running.pid is not None and not gone(running.pid)
    # Its own session and process group: stop can reach everything it forks.
    st = proc.read_stat(running.pid)
    assert st is not None and st.session == running.pid and st.pgrp == running.pid
    assert runtime.start("web").pid == running.pid  # idempotent
    assert [s.name for s in runtime.list()] == ["web"]
    assert runtime.record("web").desired == "running"

    stopped = runtime.stop("web", timeout=5)
    assert stopped.state is ContainerState.EXITED
    assert stopped.exit_code == 128 + 15
    assert stopped.finished_at is not None
    assert gone(running.pid)
    assert runtime.record("web").desired == "stopped"
    assert runtime.stop("web").state is ContainerState.EXITED  # stopping twice is fine

    again = runtime.restart("web", timeout=5)
    assert again.state is ContainerState.RUNNING
    assert again.pid is not None and again.pid != running.pid
    assert again.runtime_id == created.runtime_id

    runtime.remove("web", force=True)
    assert gone(again.pid)
    assert runtime.list() == []
    assert not (state_dir / "containers" / "web").exists()
    with pytest.raises(NotFound):
        runtime.inspect("web")


def test_exit_code_is_reported(runtime: ProcessRuntime) -> None:
    runtime.create(spec("job", "sh", "-c", "exit 7"))
    runtime.start("job")
    wait_for(lambda: runtime.inspect("job").state is ContainerState.EXITED, what="exit")
    status = runtime.inspect("job")
    assert status.exit_code == 7
    assert status.pid is None
    assert runtime.record("job").desired == "running"  # a crash, not a requested stop


def test_create_refusals_leave_nothing(runtime: ProcessRuntime, state_dir: Path) -> None:
    runtime.create(spec("one", "sleep", "1000"))
    with pytest.raises(AlreadyExists):
        runtime.create(spec("one", "sleep", "5"))
    assert runtime.record("one").spec.command == ("sleep", "1000")

    with pytest.raises(NotFound, match="image"):
        runtime.create(replace(spec("two", "sleep", "1"), image="local/nope:1"))
    with pytest.raises(InvalidArgument) as bad_name:
        runtime.create(spec("Bad/Name", "sleep", "1"))
    assert bad_name.value.field == "name"
    with pytest.raises(InvalidArgument) as no_exe:
        runtime.create(spec("three", "no-such-program"))
    assert no_exe.value.field == "command"
    with pytest.raises(InvalidArgument) as host_abs:
        runtime.create(spec("four", "/usr/bin/python3", "-c", "1"))
    assert host_abs.value.field == "command"  # absolute paths name image files only
    with pytest.raises(NotFound, match="volume"):
        runtime.create(spec("five", "true", volumes=(VolumeMount("missing", "/data"),)))
    with pytest.raises(InvalidArgument) as bad_user:
        runtime.create(spec("six", "true", user="root"))
    assert bad_user.value.field == "user"

    assert [s.name for s in runtime.list()] == ["one"]
    assert sorted(p.name for p in (state_dir / "containers").iterdir()) == ["one"]


def test_unisolated_refuses_read_only_volumes(unisolated: ProcessRuntime) -> None:
    VolumeStore.for_state_dir(unisolated.state_dir).create("data")
    with pytest.raises(InvalidArgument) as ro:
        unisolated.create(spec("six", "true", volumes=(VolumeMount("data", "/data", True),)))
    assert ro.value.field == "volumes[0].read_only"
    assert unisolated.list() == []


def test_unknown_container_is_not_found(runtime: ProcessRuntime) -> None:
    for call in (
        lambda: runtime.inspect("ghost"),
        lambda: runtime.start("ghost"),
        lambda: runtime.stop("ghost"),
        lambda: runtime.restart("ghost"),
        lambda: runtime.remove("ghost"),
        lambda: runtime.logs("ghost"),
        lambda: runtime.stats("ghost"),
    ):
        with pytest.raises(NotFound):
            call()
    assert runtime.list() == []


def test_remove_running_needs_force(runtime: ProcessRuntime) -> None:
    runtime.create(spec("db", "sleep", "1000"))
    pid = runtime.start("db").pid
    assert pid is not None
    with pytest.raises(FailedPrecondition):
        runtime.remove("db")
    assert runtime.inspect("db").state is ContainerState.RUNNING
    assert not gone(pid)
    runtime.remove("db", force=True)
    assert gone(pid)
    assert runtime.list() == []


def test_stop_escalates_to_sigkill(runtime: ProcessRuntime) -> None:
    # An ignored SIGTERM stays ignored in the loop's children too: only SIGKILL ends it.
    script = "trap '' TERM; echo ready; while :; do sleep 0.05; done"
    runtime.create(spec("stubborn", "sh", "-c", script))
    pid = runtime.start("stubborn").pid
    assert pid is not None
    wait_for(lambda: "ready" in log_text(runtime, "stubborn"), what="trap installed")
    status = runtime.stop("stubborn", timeout=0.3)
    assert status.state is ContainerState.EXITED
    assert status.exit_code == 128 + 9
    assert gone(pid)
    assert proc.session_members(pid) == []


def test_stop_kills_the_workloads_children(runtime: ProcessRuntime) -> None:
    runtime.create(spec("tree", "sh", "-c", "sleep 1000 & wait"))
    pid = runtime.start("tree").pid
    assert pid is not None
    wait_for(lambda: host_pid_of(pid, "sleep") is not None, what="child")
    child = host_pid_of(pid, "sleep")
    assert child is not None and not gone(child)
    runtime.stop("tree", timeout=5)
    assert gone(child)


def test_leftovers_die_with_the_first_process(runtime: ProcessRuntime) -> None:
    # The first process exits soon and leaves a background child behind (inside the
    # sandbox pids are its own, so the host pid is looked up in the session).
    runtime.create(spec("orphaner", "sh", "-c", "sleep 1000 & sleep 0.5"))
    pid = runtime.start("orphaner").pid
    assert pid is not None
    wait_for(lambda: host_pid_of(pid, "sleep") is not None, what="child")
    children = [st.pid for st in proc.session_members(pid)]
    wait_for(lambda: runtime.inspect("orphaner").state is ContainerState.EXITED, what="exit")
    assert runtime.inspect("orphaner").exit_code == 0
    wait_for(lambda: all(gone(c) for c in children), what="leftover child killed")


def test_unisolated_leftovers_die_with_the_first_process(unisolated: ProcessRuntime) -> None:
    unisolated.create(spec("orphaner", "sh", "-c", "sleep 1000 & echo $! > child.pid"))
    unisolated.start("orphaner")
    pid_file = unisolated.work_dir("orphaner") / "child.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "", what="child")
    child = int(pid_file.read_text())
    wait_for(lambda: unisolated.inspect("orphaner").state is ContainerState.EXITED, what="exit")
    assert unisolated.inspect("orphaner").exit_code == 0
    wait_for(lambda: gone(child), what="leftover child killed")


def test_memory_limit_makes_a_big_allocation_fail(runtime: ProcessRuntime) -> None:
    alloc = ("dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1")
    runtime.create(spec("small", *alloc, memory=64 << 20))
    runtime.create(spec("large", *alloc))
    runtime.start("small")
    runtime.start("large")
    for name in ("small", "large"):
        wait_for(lambda n=name: runtime.inspect(n).state is ContainerState.EXITED, what=name)
    # A memory cgroup kills it (137); an rlimit makes the allocation fail.
    assert runtime.inspect("small").exit_code != 0
    assert runtime.inspect("large").exit_code == 0  # the same program fits without a limit
    assert runtime.stats("small").memory_limit == 64 << 20


def test_unisolated_memory_rlimit(unisolated: ProcessRuntime) -> None:
    alloc = ("dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1")
    unisolated.create(spec("small", *alloc, memory=64 << 20))
    unisolated.start("small")
    wait_for(lambda: unisolated.inspect("small").state is ContainerState.EXITED, what="exit")
    assert unisolated.inspect("small").exit_code != 0
    assert "out of memory" in log_text(unisolated, "small")


def test_env_and_cwd(runtime: ProcessRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_SECRET", "must-not-leak")
    script = 'echo "foo=$FOO"; echo "cwd=$(pwd)"; echo "path=$PATH"; env'
    runtime.create(spec("env", "sh", "-c", script, env=(("FOO", "bar baz"),)))
    runtime.start("env")
    wait_for(lambda: runtime.inspect("env").state is ContainerState.EXITED, what="exit")
    out = log_text(runtime, "env")
    assert "foo=bar baz\n" in out
    assert "cwd=/\n" in out  # the image is the root
    assert "path=/bin\n" in out  # the image's own PATH
    assert "AGENT_SECRET" not in out
    assert "HOME=/\n" in out


def test_unisolated_env_and_cwd(
    unisolated: ProcessRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_SECRET", "must-not-leak")
    script = 'echo "foo=$FOO"; echo "cwd=$(pwd)"; echo "path=$PATH"; env'
    unisolated.create(spec("env", "sh", "-c", script, env=(("FOO", "bar baz"),)))
    unisolated.start("env")
    wait_for(lambda: unisolated.inspect("env").state is ContainerState.EXITED, what="exit")
    out = log_text(unisolated, "env")
    assert "foo=bar baz\n" in out
    assert f"cwd={unisolated.work_dir('env')}\n" in out
    path_line = next(line for line in out.splitlines() if line.startswith("path="))
    first = path_line.removeprefix("path=").split(":")[0]
    assert first.startswith(str(unisolated.state_dir / "images" / "rootfs"))
    assert first.endswith("/bin")
    assert "AGENT_SECRET" not in out
    assert f"HOME={unisolated.work_dir('env')}" in out


def test_volumes_are_mounted_and_named_in_env(runtime: ProcessRuntime, state_dir: Path) -> None:
    store = VolumeStore.for_state_dir(state_dir)
    data = store.create("data")
    cache = store.create("cache")
    conf = store.create("conf")
    (data / "seed.txt").write_text("seeded\n")
    (conf / "app.conf").write_text("setting\n")
    script = (
        "cat /data/seed.txt; echo written > /data/out.txt; echo x > /var/lib/cache/c.txt;"
        " cat /etc/app/app.conf; (echo no > /etc/app/app.conf) 2>/dev/null || echo conf-ro;"
        ' echo "env=$CAPSTAN_VOLUME_DATA"'
    )
    mounts = (VolumeMount("data", "/data"), VolumeMount("cache", "/var/lib/cache"),
              VolumeMount("conf", "/etc/app", read_only=True))
    runtime.create(spec("vol", "sh", "-c", script, volumes=mounts))
    runtime.start("vol")
    wait_for(lambda: runtime.inspect("vol").state is ContainerState.EXITED, what="exit")
    out = log_text(runtime, "vol")
    assert runtime.inspect("vol").exit_code == 0, out
    assert "seeded\n" in out
    assert "setting\nconf-ro\n" in out
    assert "env=/data\n" in out
    assert (data / "out.txt").read_text() == "written\n"
    assert (cache / "c.txt").read_text() == "x\n"
    assert (conf / "app.conf").read_text() == "setting\n"
    # The instance's uid owns what it wrote: never root, never the agent's.
    assert (data / "out.txt").stat().st_uid not in (0, os.geteuid())
    runtime.start("vol")
    wait_for(lambda: runtime.inspect("vol").state is ContainerState.EXITED, what="second exit")
    assert runtime.inspect("vol").exit_code == 0
    runtime.remove("vol")
    assert (data / "out.txt").exists()  # removing a container keeps its volumes


def test_unisolated_volumes_are_linked(unisolated: ProcessRuntime) -> None:
    store = VolumeStore.for_state_dir(unisolated.state_dir)
    data = store.create("data")
    (data / "seed.txt").write_text("seeded\n")
    script = 'cat data/seed.txt; echo written > data/out.txt; echo "env=$CAPSTAN_VOLUME_DATA"'
    unisolated.create(spec("vol", "sh", "-c", script, volumes=(VolumeMount("data", "/data"),)))
    unisolated.start("vol")
    wait_for(lambda: unisolated.inspect("vol").state is ContainerState.EXITED, what="exit")
    out = log_text(unisolated, "vol")
    assert unisolated.inspect("vol").exit_code == 0, out
    assert "seeded\n" in out
    assert f"env={data}\n" in out
    assert (data / "out.txt").read_text() == "written\n"


def test_stats_of_a_busy_loop(runtime: ProcessRuntime) -> None:
    runtime.create(spec("busy", "sh", "-c", "while :; do :; done", memory=256 << 20))
    runtime.start("busy")
    wait_for(lambda: runtime.stats("busy").cpu_seconds > 0.05, what="cpu time")
    stats = runtime.stats("busy")
    assert stats.cpu_fraction > 0.0
    assert stats.memory_bytes > 0
    assert stats.memory_limit == 256 << 20
    runtime.stop("busy", timeout=5)
    assert runtime.stats("busy").cpu_seconds == 0.0


def test_info(runtime: ProcessRuntime) -> None:
    info = runtime.info()
    assert info.runtime == "process"
    assert info.cpus >= 1
    assert info.memory > 0
    assert info.cpus <= (os.cpu_count() or 1)


def test_one_agent_per_state_dir(runtime: ProcessRuntime, state_dir: Path) -> None:
    with pytest.raises(FailedPrecondition, match="in use"):
        ProcessRuntime("node-test", state_dir)
    runtime.close()
    with pytest.raises(FailedPrecondition, match="belongs to node"):
        ProcessRuntime("node-other", state_dir)
    again = ProcessRuntime("node-test", state_dir)
    again.close()


@pytest.mark.timeout(60)
def test_observers_do_not_corrupt_concurrent_restarts(runtime: ProcessRuntime) -> None:
    runtime.create(spec("flappy", "sh", "-c", "echo run; sleep 1000"))
    errors: list[BaseException] = []
    done = threading.Event()

    def observe() -> None:
        try:
            while not done.is_set():
                for status in runtime.list():
                    assert status.state in (
                        ContainerState.CREATED,
                        ContainerState.RUNNING,
                        ContainerState.EXITED,
                    )
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    observers = [threading.Thread(target=observe) for _ in range(3)]
    for t in observers:
        t.start()
    try:
        for i in range(5):
            pid = runtime.start("flappy").pid
            assert pid is not None
            # Stopped once it ran: a stop that comes first ends it before its echo.
            wait_for(lambda i=i: log_text(runtime, "flappy") == "run\n" * (i + 1), what="run")
            assert runtime.stop("flappy", timeout=5).exit_code == 128 + 15
            assert gone(pid)
        final = runtime.restart("flappy", timeout=5)
    finally:
        done.set()
        for t in observers:
            t.join(timeout=10)
    assert errors == []
    assert final.state is ContainerState.RUNNING
    assert runtime.inspect("flappy").pid == final.pid
    wait_for(lambda: log_text(runtime, "flappy") == "run\n" * 6, what="sixth run")


def _status_fields(pid: int, *names: str) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        rows = dict(line.split(":", 1) for line in fh.read().splitlines() if ":" in line)
    return {n: rows[n].strip() for n in names}


def test_sandbox_init_keeps_no_capability_after_switching_user(runtime: ProcessRuntime) -> None:
    # Regression: the init that stays as pid 1 of a sandbox kept nearly every capability
    # (CapEff 000001fffeffffff) after its setresuid, since the securebits it sets also
    # stop the kernel from clearing them; the workload had none, its supervisor all.
    runtime.create(spec("capcheck", "sleep", "60"))
    runtime.start("capcheck")
    try:
        rec = runtime.record("capcheck")
        assert rec.pid is not None
        wait_for(lambda: host_pid_of(rec.pid, "sleep") is not None, what="the workload")
        workload = host_pid_of(rec.pid, "sleep")
        assert workload is not None
        with open(f"/proc/{workload}/status", encoding="ascii") as fh:
            ppid = int(next(x for x in fh if x.startswith("PPid:")).split()[1])
        # The init drops its privileges only after the workload's exec has closed its
        # pipe (so that it can always signal the workload): a moment after `sleep` shows.
        wait_for(
            lambda: _status_fields(ppid, "Uid")["Uid"].split()[0] != "0",
            what="the sandbox init to switch user",
        )
        init = _status_fields(ppid, "Uid", "CapEff", "CapPrm", "CapInh", "CapBnd")
        for field in ("CapEff", "CapPrm", "CapInh", "CapBnd"):
            assert init[field] == "0000000000000000", (field, init)
        workload_caps = _status_fields(workload, "CapEff", "CapPrm")
        assert set(workload_caps.values()) == {"0000000000000000"}
    finally:
        runtime.remove("capcheck", force=True)
