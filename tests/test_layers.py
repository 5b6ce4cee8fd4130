"""The import boundaries of DESIGN.md §2: neither side imports the other; what both
need lives in pki/ and protos/ (which import neither); only launchers, which start
both sides in one process, import the node from the orchestrator."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Orchestrator modules that launch node agents or run workloads themselves.
LAUNCHERS = {"orchestrator/cli.py", "orchestrator/local.py", "orchestrator/standalone.py"}

#: package -> the top-level packages of this project it must not import.
FORBIDDEN = {
    "pki": {"node", "orchestrator", "protos"},
    "protos": {"node", "orchestrator"},
    "node": {"orchestrator"},
    "orchestrator": {"node"},
}


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_their_layer_may(package: str) -> None:
    crossings = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in LAUNCHERS:
            continue
        bad = _imported(path) & FORBIDDEN[package]
        if bad:
            crossings.append(f"{rel} imports {', '.join(sorted(bad))}")
    assert crossings == []
