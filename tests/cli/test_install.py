"""Capstan installed as a user installs it (`pip install .`, not editable): what the
CLI reads at run time must come from the installed package, not from the checkout."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.runtime.images import busybox_binary
from orchestrator._cli.local import DEMO_NAME, demo_text

from .conftest import kill_mentioning
from .test_local_cluster import free_base_port

REPO = Path(__file__).resolve().parents[2]


def test_the_examples_demo_file_is_the_shipped_one() -> None:
    # examples/demo.yaml is for readers of the repository; the CLI reads the copy in
    # the package. They must not drift apart.
    assert (REPO / "examples" / DEMO_NAME).read_text() == demo_text()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding a wheel built from this checkout (no editable link).

    Offline: the wheel is built without build isolation and installed without
    dependencies; the dependencies come from this interpreter's site-packages through
    a plain path file (a path line does not run the editable install's finder).
    """
    root = tmp_path_factory.mktemp("install")
    # A copy of the sources: building in place would leave build/ in the checkout.
    source = root / "source"
    shutil.copytree(
        REPO, source,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                      "__pycache__", ".*_cache", "tests", "bench"),
    )
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True, timeout=300, cwd=root,
    )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    purelib = Path(
        subprocess.run(
            [venv / "bin" / "python", "-c",
             "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout.strip()
    )
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "capstan-test-deps.pth").write_text("\n".join(deps) + "\n")
    [wheel] = wheels.glob("capstan-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--target", str(purelib), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    # pip --target writes no console script: this is the one pip install would write.
    script = venv / "bin" / "capstan"
    script.write_text(
        f"#!{venv / 'bin' / 'python'}\n"
        "import sys\nfrom orchestrator.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    assert sysconfig.get_paths()["purelib"] != str(purelib)
    yield venv


def _run(
    venv: Path, home: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAPSTAN_CONTEXT")}
    env["CAPSTAN_HOME"] = str(home)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    return subprocess.run(
        [str(venv / "bin" / "capstan"), *args], capture_output=True, text=True,
        timeout=timeout, env=env, cwd=home.parent, check=False,
    )


def test_the_installed_package_is_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [installed / "bin" / "python", "-c",
         "import orchestrator._cli.local as m; print(m.__file__); print(m.demo_text()[:40])"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=True,
    ).stdout.splitlines()
    assert str(installed) in where[0] and str(REPO) not in where[0]
    assert where[1].startswith("# The `capstan up --demo` application")


@pytest.mark.slow
@pytest.mark.skipif(busybox_binary() is None, reason="needs a static busybox")
def test_up_demo_from_a_non_editable_install(installed: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    base = free_base_port(1)
    try:
        up = _run(installed, home, "up", "--demo", "--nodes", "1", "--runtime", "process",
                  "--base-port", str(base))
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"applied {DEMO_NAME}: default/demo generation 1" in up.stdout
        assert "hello.2" in up.stdout
    finally:
        down = _run(installed, home, "down")
        kill_mentioning(str(home))
    assert down.returncode == 0, down.stderr
