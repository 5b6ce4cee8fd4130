"""The node agent's commands load only what the agent uses: every module an idle agent
holds is resident memory on every node (docs/performance.md). Modules it needs only
sometimes (YAML config, image archives) are imported when used, and still work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import _command_path

#: Never loaded by ``capstan node serve|join``: the operator's commands and what only
#: rare node calls need.
NOT_IN_AGENT = ("orchestrator._cli", "orchestrator.client", "pki.cli", "pki.authority", "tarfile")


def _modules_after(*argv: str) -> set[str]:
    """The modules loaded by ``capstan ARGV`` (help only: nothing is started)."""
    code = (
        "import json, sys\n"
        "from orchestrator.cli import main\n"
        f"main({list(argv)!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize("command", ["serve", "join"])
def test_agent_command_loads_no_operator_command(command: str) -> None:
    loaded = _modules_after("--context", "x", "node", command, "--help")
    assert "node.cli" in loaded
    assert sorted(m for m in loaded if m.startswith(NOT_IN_AGENT)) == []


def test_serve_without_config_file_loads_no_yaml() -> None:
    assert "yaml" not in _modules_after("node", "serve", "--help")


def test_every_other_command_line_sees_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from orchestrator.cli import main

    assert main(["node", "serve", "--help"]) == 0  # registers the agent's commands only
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "apply" in top and "node" in top and "pki" in top
    assert main(["node", "--help"]) == 0
    assert "revoke" in capsys.readouterr().out  # added to the node group by the operator side


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (["node", "serve", "--listen", "x"], ("node", "serve")),
        (["--context", "prod", "node", "join", "addr"], ("node", "join")),
        (["--context=prod", "node", "join"], ("node", "join")),
        (["--help", "node", "serve"], ()),  # the root's help lists every command
        (["--version"], ()),
        (["node"], ("node", "")),
        ([], ()),
    ],
)
def test_command_path(argv: list[str], path: tuple[str, ...]) -> None:
    assert _command_path(argv) == path


def test_node_config_file_still_read_when_yaml_is_imported_late(tmp_path: Path) -> None:
    from node.config import NodeConfig
    from pki.errors import ConfigError

    good = tmp_path / "node.yaml"
    good.write_text("listen: 127.0.0.1:7000\nissuers: [spiffe://td/orchestrator/o]\n")
    assert NodeConfig.load(good).listen == "127.0.0.1:7000"
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        NodeConfig.load(bad)
