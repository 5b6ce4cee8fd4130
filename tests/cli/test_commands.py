"""Operator commands before and around the wire: parsing, refusals, exit codes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from node.errors import NotFound
from orchestrator._cli.logs import parse_target
from orchestrator.client import ControlError, exit_code
from orchestrator.errors import TopologyError
from protos.wire.errors import NodeCallError

from .conftest import Listener, Result, UserCreds, closed_port, write_config

Run = Callable[..., Result]

GOOD = """\
apiVersion: capstan/v1
kind: Application
name: shop
services:
  web:
    image: local/busybox:1
    command: ["sleep", "600"]
    replicas: 2
"""

BAD = """\
apiVersion: capstan/v1
kind: Application
name: shop
services:
  web:
    image: local/busybox:1
    replicas: -1
    placment: {spread: node}
"""


def test_bad_topology_names_field_and_line_and_sends_nothing(
    home: Path, capstan: Run, user_creds: UserCreds, listener: Listener, tmp_path: Path
) -> None:
    write_config(home, listener.endpoint, user_creds)
    path = tmp_path / "app.yaml"
    path.write_text(BAD)
    r = capstan("apply", "-f", str(path))
    assert r.code == 1
    assert r.out == ""
    assert f"error: {path}:7: services.web.replicas: must be >= 0, got -1" in r.err
    assert f"{path}:8: services.web.placment: unknown field (did you mean placement?)" in r.err
    assert listener.accepted == 0


def test_good_topology_does_reach_the_endpoint(
    home: Path, capstan: Run, user_creds: UserCreds, listener: Listener, tmp_path: Path
) -> None:
    # The counterpart of the test above: the same setup with a valid file connects
    # (and fails, since the listener speaks no TLS): exit 5, unavailable.
    write_config(home, listener.endpoint, user_creds)
    path = tmp_path / "app.yaml"
    path.write_text(GOOD)
    r = capstan("apply", "-f", str(path), "--no-wait")
    assert r.code == 5
    assert r.err.startswith("error: Apply: unavailable:")
    assert listener.accepted >= 1


def test_missing_topology_file(home: Path, capstan: Run, tmp_path: Path) -> None:
    r = capstan("apply", "-f", str(tmp_path / "nope.yaml"))
    assert r.code == 1
    assert r.err.strip() == f"error: {tmp_path / 'nope.yaml'}: does not exist"


def test_unreachable_orchestrator_exit_5(
    home: Path, capstan: Run, user_creds: UserCreds
) -> None:
    write_config(home, f"127.0.0.1:{closed_port()}", user_creds)
    for args in (("get", "nodes"), ("get", "apps", "-o", "json"), ("describe", "app", "x"),
                 ("delete", "app", "x"), ("cordon", "n1"), ("orchestrator", "join-token")):
        r = capstan(*args)
        assert r.code == 5, (args, r)
        assert ": unavailable:" in r.err
        assert len(r.err.strip().splitlines()) == 1
        assert r.out == ""


@pytest.mark.parametrize(
    "args",
    [
        ("get", "nodes", "-o", "xml"),
        ("get", "pods"),
        ("apply", "-f", "x.yaml", "--timeout", "soon"),
        ("apply",),
        ("logs", "shop"),
        ("logs", "shop/web.x"),
        ("logs", "shop/web.0", "--tail", "-1"),
        ("up", "--nodes", "0"),
        ("up", "--base-port", "80"),
        ("orchestrator", "join-token", "--label", "novalue"),
        ("orchestrator", "join-token", "--memory", "lots"),
        ("orchestrator", "join-token", "--cpus", "-1"),
        ("image", "seed", "node-1"),
        ("delete", "node", "n1"),
    ],
)
def test_usage_errors_exit_2(home: Path, capstan: Run, args: tuple[str, ...]) -> None:
    r = capstan(*args)
    assert r.code == 2, r
    assert r.out == ""
    assert not (home / "config.yaml").exists()


def test_logs_target_parsing() -> None:
    assert parse_target("shop/web.1") == ("shop", "web.1")
    assert parse_target("shop/web") == ("shop", "web.0")
    assert parse_target("shop/my-svc.12") == ("shop", "my-svc.12")


def test_exit_codes() -> None:
    assert exit_code(ControlError("GetApp", "NOT_FOUND", "x")) == 3
    assert exit_code(ControlError("Apply", "PERMISSION_DENIED", "x")) == 4
    assert exit_code(ControlError("Apply", "UNAUTHENTICATED", "x")) == 4
    assert exit_code(ControlError("Apply", "UNAVAILABLE", "x")) == 5
    assert exit_code(ControlError("Apply", "DEADLINE_EXCEEDED", "x")) == 5
    assert exit_code(ControlError("Apply", "INVALID_ARGUMENT", "x")) == 1
    assert exit_code(NodeCallError("ContainerLogs", grpc.StatusCode.NOT_FOUND, "x")) == 3
    assert exit_code(NodeCallError("ContainerLogs", grpc.StatusCode.PERMISSION_DENIED, "x")) == 4
    assert exit_code(NotFound("image")) == 3
    assert exit_code(TopologyError("f", [])) == 1
    assert str(ControlError("GetApp", "NOT_FOUND", "no app")) == "GetApp: not found: no app"


def test_every_command_loads_under_the_name_it_is_listed_by() -> None:
    import click

    from orchestrator.cli import _register, cli

    _register()
    ctx = click.Context(cli)
    names = cli.list_commands(ctx)
    assert {"apply", "up", "node", "pki", "token", "get"} <= set(names)
    for name in names:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name, name
    pki = cli.get_command(ctx, "pki")
    assert isinstance(pki, click.Group) and "rotate-ca" in pki.commands  # lifecycle hook ran


def test_one_command_imports_no_other_command() -> None:
    # Start-up is on the clock of every command (and of every timed `apply --wait`).
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from orchestrator.cli import main\n"
        "main(['apply', '--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('node', 'orchestrator._cli.'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    loaded = out.strip().splitlines()[-1]
    for other in ("orchestrator._cli.local", "orchestrator._cli.serve", "node.cli", "'node'"):
        assert other not in loaded, loaded
