"""Fixtures for the PKI tests: a fresh CA per test and the bad-certificate corpus."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pki.authority import Authority

HERE = Path(__file__).resolve().parent
TRUST_DOMAIN = "capstan.test"


@pytest.fixture
def now() -> float:
    # Real time, whole seconds: openssl checks validity against the wall clock,
    # and tests move time only by passing later values explicitly.
    return float(int(time.time()))


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    return tmp_path / "pki"


@pytest.fixture
def authority(pki_dir: Path, now: float) -> Authority:
    return Authority.init(pki_dir, TRUST_DOMAIN, now=now)


@pytest.fixture(scope="session")
def bad_certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the checked-in corpus script once; return its manifest with an absolute dir."""
    out = tmp_path_factory.mktemp("bad-certs")
    subprocess.run(
        [sys.executable, str(HERE / "make_bad_certs.py"), str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    manifest["dir"] = str(out)
    return manifest


def _tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, bytes]]:
    """Every file under a directory with its content: to show that nothing changed."""
    return _tree
