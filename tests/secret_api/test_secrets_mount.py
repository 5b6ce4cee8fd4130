"""The node's secrets tmpfs across an agent killed with SIGKILL: the next agent of the
node takes it over (files and all) and unmounts it when it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from nacl.public import PublicKey, SealedBox

from node.secretfiles import SecretFiles, secret_mounts, unmount
from protos import node_pb2

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs takes root")

_AGENT = """
import sys, time
from pathlib import Path
from nacl.public import PublicKey, SealedBox
from node.secretfiles import SecretFiles
from protos import node_pb2
files = SecretFiles(Path(sys.argv[1]))
sealed = SealedBox(PublicKey(files.public_key)).encrypt(b"s3cret")
files.open("web-1", [node_pb2.SealedSecret(path="/run/secrets/db", sealed=sealed)])
print(files.root, flush=True)
time.sleep(600)
"""


def _killed_agent(state: Path) -> Path:
    """An agent process that mounted the secrets tmpfs, wrote an instance's secret and
    was killed with SIGKILL (so it never unmounted): the tmpfs it left."""
    agent = subprocess.Popen(
        [sys.executable, "-c", _AGENT, str(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline().strip()
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
    assert line, "the agent did not start"
    return Path(line)


def test_a_restarted_agent_takes_over_its_stale_secrets_mount_and_unmounts_it(
    tmp_path: Path,
) -> None:
    root = _killed_agent(tmp_path)
    try:
        assert root == tmp_path / "secrets" and os.path.ismount(root)
        files = SecretFiles(tmp_path)  # the agent, restarted
        # One mount, not one stacked on the other; the running instance keeps its file.
        assert secret_mounts(tmp_path) == [root]
        (folder,) = (root / "web-1").iterdir()
        assert (folder / "db").read_bytes() == b"s3cret"
        # New secrets still open with the node's key (its seal key outlived the kill).
        sealed = SealedBox(PublicKey(files.public_key)).encrypt(b"next")
        files.open("web-2", [node_pb2.SealedSecret(path="/run/secrets/db", sealed=sealed)])
        files.close()
        assert not os.path.ismount(root)
        assert secret_mounts(tmp_path) == []
    finally:
        for mount in secret_mounts(tmp_path):
            unmount(mount)


def test_only_secrets_tmpfs_mounts_are_found(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "not-capstan", str(other)], check=True)
    try:
        (tmp_path / "node").mkdir()
        root = _killed_agent(tmp_path / "node")
        assert secret_mounts(tmp_path) == [root]
        assert secret_mounts(tmp_path / "node" / "secrets") == [root]
        assert secret_mounts(other) == []
        assert unmount(root) and secret_mounts(tmp_path) == []
    finally:
        subprocess.run(["umount", "-l", str(other)], check=False)
        for mount in secret_mounts(tmp_path):
            unmount(mount)
