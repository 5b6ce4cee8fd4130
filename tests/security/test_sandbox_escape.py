"""Escape attempts from inside a workload, on both runtimes (the agent as root, real
Docker): each must fail, and the test shows the attempt really ran.

A workload is a hostile tenant's program. It tries to read the agent's key and
state, another instance's files and volumes, ``/proc`` of other processes and the
Docker socket; to reach the node's other addresses and the orchestrator's port; to
fork without bound; to write its root filesystem; and to gain privileges through a
setuid-root binary and a binary with file capabilities.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from node.runtime.base import ContainerSpec, ContainerState, Runtime, VolumeMount
from node.runtime.docker import DockerRuntime
from node.runtime.process import ProcessRuntime, ensure_busybox_image
from node.volumes import VolumeStore
from tests.node_runtime.conftest import remove_node_containers
from tests.waiting import wait_for

IMAGE = "local/busybox:1"
SECRET = "agent-secret-" + uuid.uuid4().hex
VICTIM_SECRET = "victim-secret-" + uuid.uuid4().hex
PIDS_LIMIT = 1024
MiB = 1 << 20

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs the agent as root")


class Node:
    """One runtime with an agent's secrets planted in its state directory."""

    def __init__(self, runtime: Runtime, state: Path) -> None:
        self.runtime = runtime
        self.state = state
        self.volumes = VolumeStore.for_state_dir(state)
        (state / "node.key").write_text(SECRET)  # what a node's private key file holds
        os.chmod(state / "node.key", 0o600)

    def run(
        self,
        name: str,
        script: str,
        *,
        tenant: str = "evil",
        volumes: tuple[VolumeMount, ...] = (),
        memory: int = 128 * MiB,
        wait: bool = True,
    ) -> str:
        self.runtime.create(ContainerSpec(
            name=f"{tenant}.app.{name}", workload_id=f"{tenant}.app.{name}.0", image=IMAGE,
            command=("sh", "-c", script), volumes=volumes, memory=memory,
        ))
        self.runtime.start(f"{tenant}.app.{name}")
        if not wait:
            return ""
        return self.finish(f"{tenant}.app.{name}")

    def finish(self, full_name: str, timeout: float = 90.0) -> str:
        wait_for(
            lambda: self.runtime.inspect(full_name).state is not ContainerState.RUNNING,
            timeout,
            f"{full_name} to finish",
        )
        return b"".join(self.runtime.logs(full_name)).decode(errors="replace")


@pytest.fixture(params=["process", "docker"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    state = tmp_path / "state"
    state.mkdir()
    node_id = f"spiffe://escape.test/node/{request.param}-{uuid.uuid4().hex[:8]}"
    if request.param == "process":
        process = ProcessRuntime(node_id, state)
        assert process.isolated, process.unisolated_reason
        ensure_busybox_image(process, IMAGE)
        try:
            yield Node(process, state)
        finally:
            for status in process.list():
                process.remove(status.name, force=True)
            process.close()
        return
    client: docker.DockerClient = request.getfixturevalue("docker_client")
    image = request.getfixturevalue("busybox_image")
    engine = DockerRuntime(node_id, state, client=client)
    engine.adopt_image(image)
    try:
        yield Node(engine, state)
    finally:
        remove_node_containers(client, node_id)
        engine.forget_images()
        engine.close()


def test_agent_key_and_state_are_out_of_reach(node: Node) -> None:
    out = node.run("reader", f"""
        cat {node.state}/node.key; ls {node.state}; cat {node.state}/state.db
        find / -xdev -name node.key 2>/dev/null; find / -name state.db 2>/dev/null
        cat /proc/1/root{node.state}/node.key; cat /proc/1/environ
        echo attempted
    """)
    assert "attempted" in out
    assert SECRET not in out
    assert "state.db" not in out.replace(f"{node.state}/state.db", "")


def test_other_instances_files_volumes_and_processes_are_out_of_reach(node: Node) -> None:
    victim_volume = node.volumes.create("acme.app.data")
    (victim_volume / "secret").write_text(VICTIM_SECRET)
    node.run(
        "victim",
        f"echo {VICTIM_SECRET} > /tmp/s; echo {VICTIM_SECRET} > /data/mine; exec sleep 300",
        tenant="acme",
        volumes=(VolumeMount("acme.app.data", "/data"),),
        wait=False,
    )
    assert node.runtime.inspect("acme.app.victim").state is ContainerState.RUNNING
    out = node.run("attacker", f"""
        cat {victim_volume}/secret; ls {node.volumes.root}
        find / -name secret 2>/dev/null; find / -name mine 2>/dev/null
        for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null; echo; cat $p/root/tmp/s; done
        echo pids=$(ls -d /proc/[0-9]* | wc -l)
        kill -9 -1; echo attempted
    """)
    assert "attempted" in out
    assert VICTIM_SECRET not in out
    pids = int(out.rsplit("pids=", 1)[1].split()[0])
    assert pids <= 6  # its own init, shell and the pipeline's helpers only
    assert "sleep" not in out  # the victim's process is not among them
    # And the victim still runs: the attacker could not signal it.
    assert node.runtime.inspect("acme.app.victim").state is ContainerState.RUNNING


def test_docker_socket_is_not_there(node: Node) -> None:
    out = node.run("socket", """
        for s in /var/run/docker.sock /run/docker.sock /run/containerd/containerd.sock; do
            [ -e $s ] && echo FOUND $s
        done
        find / -type s 2>/dev/null | grep -v '^/proc' ; echo attempted
    """)
    assert "attempted" in out
    assert "FOUND" not in out
    assert "docker.sock" not in out and "containerd.sock" not in out


def _listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, 0))
    sock.listen(8)
    sock.setblocking(False)
    return sock


def test_node_addresses_and_orchestrator_port_are_unreachable(node: Node) -> None:
    # Stand-ins on the node: the orchestrator's port on 127.0.0.1 and another of the
    # node's addresses (each node of a local cluster has one of 127.0.0.x).
    orchestrator = _listener("127.0.0.1")
    other = _listener("127.0.0.2")
    try:
        p1, p2 = orchestrator.getsockname()[1], other.getsockname()[1]
        out = node.run("prober", f"""
            nc -w 2 127.0.0.1 {p1} </dev/null && echo REACHED-ORCHESTRATOR
            nc -w 2 127.0.0.2 {p2} </dev/null && echo REACHED-NODE
            ip -o addr; ip -o link; echo attempted
        """)
        assert "attempted" in out
        assert "REACHED" not in out
        interfaces = {line.split()[1].rstrip(":") for line in out.splitlines()
                      if line[:1].isdigit() and ": " in line}
        assert interfaces == {"lo"}, out  # loopback only
        for sock in (orchestrator, other):
            with pytest.raises(BlockingIOError):
                sock.accept()  # nobody connected
    finally:
        orchestrator.close()
        other.close()


def test_fork_without_bound_is_stopped_at_the_pids_limit(node: Node) -> None:
    # The loop runs in a subshell (a shell dies when it cannot fork); what follows
    # uses builtins only, since no fork is left once the limit is reached.
    out = node.run("forker", f"""
        (i=0; while [ $i -lt {PIDS_LIMIT + 400} ]; do sleep 120 & i=$((i + 1)); done) 2>/dev/null &
        wait $!
        set -- /proc/[0-9]*; echo live=$#; echo attempted; kill -9 -1
    """, memory=512 * MiB)
    assert "attempted" in out
    live = int(out.rsplit("live=", 1)[1].split()[0])
    assert 100 < live <= PIDS_LIMIT  # forks happened, and stopped at the limit
    # The node is fine: another workload still starts and runs.
    assert "alive" in node.run("after", "echo alive")


def test_root_filesystem_is_read_only_and_volumes_writable(node: Node) -> None:
    data = node.volumes.create("evil.app.data")
    out = node.run("writer", """
        echo x > /bin/evil && echo WROTE-BIN; echo x > /evil && echo WROTE-ROOT
        mkdir /etc2 && echo WROTE-DIR
        echo ok > /tmp/t && echo TMP-OK; echo ok > /data/t && echo VOLUME-OK
    """, volumes=(VolumeMount("evil.app.data", "/data"),))
    assert "WROTE" not in out
    assert "TMP-OK" in out and "VOLUME-OK" in out
    assert (data / "t").read_text() == "ok\n"
    assert (data / "t").stat().st_uid not in (0, os.geteuid())  # the tenant's uid


EUID_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("euid=%d egid=%d\n", (int)geteuid(), (int)getegid()); return 0; }
"""
CAP_DAC_READ_SEARCH = 2


@pytest.fixture(scope="module")
def euid_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static program printing its effective ids (busybox drops setuid itself, so it
    cannot show whether the kernel granted it)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the setuid probe")
    where = tmp_path_factory.mktemp("probe")
    (where / "euid.c").write_text(EUID_C)
    subprocess.run([gcc, "-static", "-O", "-o", str(where / "euid"), str(where / "euid.c")],
                   check=True, capture_output=True)
    return where / "euid"


def test_setuid_and_file_capabilities_grant_nothing(node: Node, euid_binary: Path) -> None:
    tools = node.volumes.create("evil.app.tools")
    node.run("owner", "true", volumes=(VolumeMount("evil.app.tools", "/tools"),))  # owns it
    suid = tools / "suid"
    shutil.copy(euid_binary, suid)
    os.chown(suid, 0, 0)
    os.chmod(suid, 0o4755)  # noqa: S103 - the setuid-root binary the workload tries
    (tools / "cap").mkdir()
    capped = tools / "cap" / "grep"  # busybox runs the applet its name says
    shutil.copy("/bin/busybox", capped)
    os.chown(capped, 0, 0)
    # security.capability v2: CAP_DAC_READ_SEARCH permitted and effective.
    os.setxattr(capped, "security.capability",
                struct.pack("<IIIII", 0x02000001, 1 << CAP_DAC_READ_SEARCH, 0, 0, 0))
    out = node.run("climber", """
        /tools/suid; id -u
        /tools/cap/grep -E '^(CapPrm|CapEff|NoNewPrivs)' /proc/self/status
        echo attempted
    """, volumes=(VolumeMount("evil.app.tools", "/tools", read_only=True),))
    assert "attempted" in out
    lines = out.splitlines()
    uid = int(next(line for line in lines if line.isdigit()))  # id -u
    assert uid != 0
    assert f"euid={uid} egid={uid}" in lines, out  # setuid root ignored
    # The capability binary either runs with nothing (nosuid volume: file capabilities
    # ignored) or is refused (no_new_privs with an empty bounding set: EPERM).
    if "Operation not permitted" not in out:
        assert "CapEff:\t0000000000000000" in out and "CapPrm:\t0000000000000000" in out
        assert "NoNewPrivs:\t1" in out
    assert not [line for line in lines if line.startswith("Cap") and line.strip()[-16:] != "0" * 16]


def test_control_the_probe_does_read_the_key_without_the_sandbox(tmp_path: Path) -> None:
    """The key test can fail: an unisolated process runtime (what a non-root agent has,
    and why such a node joins as unisolated) hands the same probe the key."""
    state = tmp_path / "state"
    state.mkdir()
    unisolated = ProcessRuntime("spiffe://escape.test/node/unisolated", state, isolated=False)
    try:
        ensure_busybox_image(unisolated, IMAGE)
        out = Node(unisolated, state).run("reader", f"cat {state}/node.key; echo attempted")
        assert SECRET in out
        assert unisolated.info().extra["isolation"] == "none"
    finally:
        for status in unisolated.list():
            unisolated.remove(status.name, force=True)
        unisolated.close()


def test_seccomp_filter_refuses_new_namespaces(node: Node) -> None:
    # A user namespace needs no privilege at all: only the seccomp profile stops it.
    out = node.run("nester", """
        grep '^Seccomp:' /proc/self/status
        unshare -U true && echo MADE-USERNS
        echo attempted
    """)
    assert "attempted" in out
    assert "Seccomp:\t2" in out  # a filter is installed
    assert "MADE-USERNS" not in out
