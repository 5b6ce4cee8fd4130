"""container.exec on a real agent over real mTLS, both runtimes: the command a token
names runs once, for the caller it names; anything else is refused with the exact
status and runs nothing; the session ends with its token's grant or its caller's
certificate."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from pki.tokens import request_digest
from protos import node_pb2, ops
from tests.waiting import wait_for

from .conftest import Cluster, Node, meta

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


def _start(node: Node, name: str = "box") -> None:
    spec = node_pb2.ContainerSpec(
        name=name, workload_id=f"wl-{name}", image="local/busybox:1", command=["sleep", "600"]
    )
    stub = node.stub()
    stub.CreateContainer(spec, metadata=meta(node.create_token(spec)))
    stub.StartContainer(
        node_pb2.ContainerRef(name=name), metadata=meta(node.token("container.start", name))
    )


def _exec_token(node: Node, start: node_pb2.ExecStart, caller: str = "orch", **kw: Any) -> str:
    req = request_digest(ops.request_fields(node_pb2.ExecInput(start=start)))
    return node.token("container.exec", start.name, caller, req=req, **kw)


def _run(
    node: Node, start: node_pb2.ExecStart, token: str, inputs: list[bytes] | None = None,
    caller: str = "orch",
) -> tuple[bytes, bytes, int | None]:
    def messages() -> Iterator[node_pb2.ExecInput]:
        yield node_pb2.ExecInput(start=start)
        for data in inputs or []:
            yield node_pb2.ExecInput(stdin=data)
        if start.stdin:
            yield node_pb2.ExecInput(close_stdin=True)

    out, err, code = b"", b"", None
    for m in node.stub(caller).ExecContainer(messages(), metadata=meta(token), timeout=60):
        out += m.stdout
        err += m.stderr
        if m.exited:
            code = m.exit_code
    return out, err, code


def _marker_absent(node: Node) -> bool:
    """Whether the marker command never ran (it would have printed into the log)."""
    probe = node_pb2.ExecStart(name="box", command=["sh", "-c", "cat /tmp/marker 2>/dev/null"])
    out, _, _ = _run(node, probe, _exec_token(node, probe))
    return out == b""


MARK = ["sh", "-c", "echo ran > /tmp/marker"]


def test_the_named_command_runs_with_its_output_and_exit_code(any_node: Node) -> None:
    _start(any_node)
    start = node_pb2.ExecStart(
        name="box", command=["sh", "-c", "echo out; echo err >&2; exit 7"]
    )
    out, err, code = _run(any_node, start, _exec_token(any_node, start))
    assert (out, err, code) == (b"out\n", b"err\n", 7)

    start = node_pb2.ExecStart(name="box", command=["cat"], stdin=True)
    out, _, code = _run(any_node, start, _exec_token(any_node, start), [b"abc", b"def\n"])
    assert (out, code) == (b"abcdef\n", 0)

    start = node_pb2.ExecStart(
        name="box", command=["sh", "-c", "test -t 1 && echo tty"], tty=True
    )
    out, _, code = _run(any_node, start, _exec_token(any_node, start))
    assert (out.strip(), code) == (b"tty", 0)


def test_a_token_runs_only_its_own_command_once(any_node: Node) -> None:
    _start(any_node)
    granted = node_pb2.ExecStart(name="box", command=["true"])
    token = _exec_token(any_node, granted)
    # Another command line under the same token: refused, nothing ran.
    with pytest.raises(grpc.RpcError) as exc:
        _run(any_node, node_pb2.ExecStart(name="box", command=MARK), token)
    assert (exc.value.code(), exc.value.details()) == (DENIED, "wrong resource")
    assert _run(any_node, granted, _exec_token(any_node, granted))[2] == 0
    # Replayed: refused.
    fresh = _exec_token(any_node, granted)
    assert _run(any_node, granted, fresh)[2] == 0
    with pytest.raises(grpc.RpcError) as exc:
        _run(any_node, granted, fresh)
    assert exc.value.code() == UNAUTH and exc.value.details() == "replayed"
    # Another caller's token (bound to another certificate): refused.
    mark = node_pb2.ExecStart(name="box", command=MARK)
    with pytest.raises(grpc.RpcError) as exc:
        _run(any_node, mark, _exec_token(any_node, mark, caller="orch"), caller="node-b")
    assert exc.value.code() in (UNAUTH, DENIED)
    # Input in the first message would run something the token did not name.
    with pytest.raises(grpc.RpcError) as exc:
        list(any_node.stub().ExecContainer(
            iter([node_pb2.ExecInput(start=mark, stdin=b"x")]),
            metadata=meta(_exec_token(any_node, mark)), timeout=30,
        ))
    assert exc.value.code() == DENIED  # the digest covers the whole first message
    assert _marker_absent(any_node)


def test_exec_in_a_missing_or_stopped_container_runs_nothing(any_node: Node) -> None:
    start = node_pb2.ExecStart(name="nope", command=MARK)
    with pytest.raises(grpc.RpcError) as exc:
        _run(any_node, start, _exec_token(any_node, start))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


def _session(node: Node, token: str, start: node_pb2.ExecStart) -> tuple[
    threading.Event, list[Any], list[bytes]
]:
    stream = node.stub().ExecContainer(iter([node_pb2.ExecInput(start=start)]),
                                       metadata=meta(token))
    ended = threading.Event()
    errors: list[Any] = []
    chunks: list[bytes] = []

    def drain() -> None:
        try:
            for m in stream:
                chunks.append(m.stdout)
        except grpc.RpcError as exc:
            errors.append(exc)
        ended.set()

    threading.Thread(target=drain, daemon=True).start()
    return ended, errors, chunks


def _wait_output(chunks: list[bytes]) -> None:
    wait_for(lambda: any(chunks), 30, "the session's first output")


def test_the_session_ends_when_its_token_expires(any_node: Node) -> None:
    # Before: nothing bounded an exec session (kubectl's exec outlives its credentials).
    _start(any_node)
    start = node_pb2.ExecStart(name="box", command=["sh", "-c", "echo up; exec sleep 6011"])
    ended, errors, chunks = _session(any_node, _exec_token(any_node, start, ttl=30), start)
    _wait_output(chunks)
    assert not ended.wait(0.5), "the session ended while its token was good"
    any_node.clock.advance(31)
    assert ended.wait(30)
    assert [(e.code(), e.details()) for e in errors] == [(UNAUTH, "grant expired")]
    assert len(any_node.agent.reaper) == 0
    _no_sleeper(any_node, "6011")


def test_the_session_ends_when_the_callers_certificate_is_revoked(
    any_node: Node, cluster: Cluster
) -> None:
    _start(any_node)
    start = node_pb2.ExecStart(name="box", command=["sh", "-c", "echo up; exec sleep 6012"])
    ended, errors, chunks = _session(any_node, _exec_token(any_node, start, ttl=60), start)
    _wait_output(chunks)
    cluster.write_deny(f"{cluster.ids['orch'].serial:X}\n")
    try:
        assert ended.wait(30)
    finally:
        cluster.write_deny("")
    assert [(e.code(), e.details()) for e in errors] == [(UNAUTH, "certificate revoked")]
    _no_sleeper(any_node, "6012")


def _no_sleeper(node: Node, mark: str) -> None:
    """The cut session's command was killed, not left running (the process runtime's
    ``ps`` sees the host: the number is unique to the test)."""
    probe = node_pb2.ExecStart(
        name="box", command=["sh", "-c", f"ps -o args | grep -c '[s]leep {mark}'"]
    )
    wait_for(
        lambda: _run(node, probe, _exec_token(node, probe))[0].strip() == b"0",
        20,
        f"no process left running sleep {mark}",
        interval=0.2,
    )


def test_exec_joins_the_containers_own_network(any_node: Node) -> None:
    # An instance with network: none has only its loopback; a command exec'd into it
    # must not see the host's interfaces (it would reach what the instance cannot).
    spec = node_pb2.ContainerSpec(
        name="iso", workload_id="wl-iso", image="local/busybox:1", command=["sleep", "600"],
        network="none",
    )
    stub = any_node.stub()
    stub.CreateContainer(spec, metadata=meta(any_node.create_token(spec)))
    stub.StartContainer(
        node_pb2.ContainerRef(name="iso"), metadata=meta(any_node.token("container.start", "iso"))
    )
    probe = node_pb2.ExecStart(name="iso", command=["cat", "/proc/net/dev"])
    out, _, code = _run(any_node, probe, _exec_token(any_node, probe))
    names = sorted(line.split(":")[0].strip() for line in out.decode().splitlines()[2:])
    assert (code, names) == (0, ["lo"])


def test_exec_gets_the_instances_confinement_not_the_agents(any_node: Node) -> None:
    # Before the sandbox-aware exec, a process-runtime command ran as the agent (root,
    # every capability, the host's filesystem): an exec must be no stronger than the
    # instance it enters -- the same user, capabilities and no_new_privs as its workload.
    _start(any_node)
    fields = "^(Uid|Gid|CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):"
    probe = node_pb2.ExecStart(
        name="box",
        command=["sh", "-c", f"grep -E '{fields}' /proc/self/status; echo --; "
                 f"grep -E '{fields}' /proc/$(pidof sleep)/status"],
    )
    out, err, code = _run(any_node, probe, _exec_token(any_node, probe))
    assert code == 0, (out, err)
    mine, first = out.decode().split("--\n")
    assert mine.strip() and mine == first, out
    # The node's own files are out of sight (docker; the process runtime when isolated).
    runtime = any_node.agent.runtime
    if getattr(runtime, "isolated", True):
        hidden = str(getattr(runtime, "state_dir", "/etc/machine-id"))
        probe = node_pb2.ExecStart(name="box", command=["ls", hidden])
        _, _, code = _run(any_node, probe, _exec_token(any_node, probe))
        assert code != 0
