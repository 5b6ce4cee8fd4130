"""Logs of process workloads: whole file, tail, follow until the workload ends."""

from __future__ import annotations

import threading

import pytest

from node.errors import InvalidArgument
from node.runtime.base import ContainerState
from node.runtime.process import ProcessRuntime
from tests.waiting import wait_for

from .conftest import log_text, spec


@pytest.mark.timeout(30)
def test_follow_returns_every_line_and_ends(runtime: ProcessRuntime) -> None:
    script = "for i in 1 2 3 4 5 6 7 8; do echo line$i; echo err$i >&2; sleep 0.05; done"
    runtime.create(spec("talker", "sh", "-c", script))
    runtime.start("talker")
    data = b"".join(runtime.logs("talker", follow=True))  # returns only once it exited
    lines = data.decode().splitlines()
    assert [x for x in lines if x.startswith("line")] == [f"line{i}" for i in range(1, 9)]
    assert [x for x in lines if x.startswith("err")] == [f"err{i}" for i in range(1, 9)]
    assert runtime.inspect("talker").state is ContainerState.EXITED


@pytest.mark.timeout(30)
def test_follow_ends_when_the_workload_is_stopped(runtime: ProcessRuntime) -> None:
    runtime.create(spec("server", "sh", "-c", "echo up; while :; do sleep 0.05; done"))
    runtime.start("server")
    got: list[bytes] = []
    follower = threading.Thread(target=lambda: got.extend(runtime.logs("server", follow=True)))
    follower.start()
    wait_for(lambda: b"up" in b"".join(got), what="first line")
    assert follower.is_alive()
    runtime.stop("server", timeout=5)
    follower.join(timeout=10)
    assert not follower.is_alive()
    assert b"".join(got) == b"up\n"


def test_tail(runtime: ProcessRuntime) -> None:
    runtime.create(spec("counter", "seq", "1", "1000"))
    runtime.start("counter")
    wait_for(lambda: runtime.inspect("counter").state is ContainerState.EXITED, what="exit")
    assert b"".join(runtime.logs("counter", tail=3)) == b"998\n999\n1000\n"
    assert b"".join(runtime.logs("counter", tail=1)) == b"1000\n"
    everything = "".join(f"{i}\n" for i in range(1, 1001)).encode()
    assert b"".join(runtime.logs("counter")) == everything
    assert b"".join(runtime.logs("counter", tail=5000)) == everything
    assert b"".join(runtime.logs("counter", tail=2, follow=True)) == b"999\n1000\n"
    with pytest.raises(InvalidArgument) as bad:
        runtime.logs("counter", tail=-1)
    assert bad.value.field == "tail"


def test_logs_before_start_are_empty_and_runs_append(runtime: ProcessRuntime) -> None:
    runtime.create(spec("hello", "echo", "hello"))
    assert b"".join(runtime.logs("hello")) == b""
    assert b"".join(runtime.logs("hello", follow=True)) == b""  # not running: ends at once
    for _ in range(2):
        runtime.start("hello")
        wait_for(lambda: runtime.inspect("hello").state is ContainerState.EXITED, what="exit")
    assert log_text(runtime, "hello") == "hello\nhello\n"
