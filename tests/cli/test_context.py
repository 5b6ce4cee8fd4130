"""Context files: loading, selecting, refusing broken files with a message naming them."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.context import Context, ContextConfig, ContextError

from .conftest import Result, UserCreds, write_config

Run = Callable[..., Result]


def test_missing_file_is_one_line_naming_it(home: Path, capstan: Run) -> None:
    r = capstan("get", "nodes")
    assert r.code == 1
    assert r.err.strip() == (
        f"error: {home / 'config.yaml'}: no context file "
        "(run `capstan up`, or write one: see docs/cli.md)"
    )
    assert not home.exists()  # a read-only command creates nothing


def test_corrupt_yaml_names_file_and_line(home: Path, capstan: Run) -> None:
    home.mkdir()
    (home / "config.yaml").write_text("contexts:\n  a: [unclosed\n")
    r = capstan("get", "apps")
    assert r.code == 1
    assert r.err.startswith(f"error: {home / 'config.yaml'}:")
    assert "not valid YAML" in r.err
    assert len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "must be a mapping"),
        ("contexts: {}\nextra: 1\n", "unknown key 'extra'"),
        ("contexts: {a: {endpoint: 'h:1', ca: c, cert: c}}\n", "contexts.a.key: required"),
        ("contexts: {a: {endpoint: 'nohost', ca: c, cert: c, key: k}}\n",
         "contexts.a.endpoint: must be HOST:PORT"),
        ("contexts: {a: {endpoint: 'h:1', ca: c, cert: c, key: k, token: t}}\n",
         "contexts.a: unknown key 'token'"),
        ("current-context: [x]\n", "current-context must be a string"),
    ],
)
def test_malformed_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ContextError) as info:
        ContextConfig.load(path)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("contexts: {a: {endpoint: '127.0.0.1:7300', ca: x/ca.crt, "
                    "cert: /abs/u.crt, key: x/u.key}}\ncurrent-context: a\n")
    ctx = ContextConfig.load(path).resolve()
    assert ctx == Context("a", "127.0.0.1:7300", tmp_path / "x/ca.crt",
                          Path("/abs/u.crt"), tmp_path / "x/u.key")


def test_selection_order_flag_then_env_then_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    config = ContextConfig(path)
    for name in ("a", "b", "c"):
        config.set(Context(name, f"{name}:1", Path("ca"), Path("c"), Path("k")))
    config.current = "a"
    monkeypatch.delenv("CAPSTAN_CONTEXT", raising=False)
    assert config.resolve().name == "a"
    monkeypatch.setenv("CAPSTAN_CONTEXT", "b")
    assert config.resolve().name == "b"
    assert config.resolve("c").name == "c"
    with pytest.raises(ContextError, match=r"no context 'zz' \(known: a, b, c\)"):
        config.resolve("zz")


def test_save_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.yaml"
    config = ContextConfig.load(path, missing_ok=True)
    config.set(Context("x", "127.0.0.1:1", tmp_path / "ca", tmp_path / "c", tmp_path / "k"),
               select=True)
    config.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = ContextConfig.load(path)
    assert again.current == "x"
    assert again.contexts == config.contexts


def test_list_use_show(home: Path, capstan: Run, user_creds: UserCreds) -> None:
    path = write_config(home, "127.0.0.1:7300", user_creds, name="one")
    config = ContextConfig.load(path)
    config.set(Context("two", "10.0.0.1:7300", user_creds.ca, user_creds.cert, user_creds.key))
    config.save()

    r = capstan("context", "list")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0].split() == ["CURRENT", "NAME", "ENDPOINT", "CERT"]
    assert lines[1].split()[:3] == ["*", "one", "127.0.0.1:7300"]
    assert lines[2].split()[:2] == ["two", "10.0.0.1:7300"]

    assert capstan("context", "use", "two").code == 0
    assert ContextConfig.load(path).current == "two"
    r = capstan("context", "show")
    assert "endpoint:  10.0.0.1:7300" in r.out
    r = capstan("context", "show", "--context", "one")
    assert "endpoint:  127.0.0.1:7300" in r.out


def test_use_unknown_context_changes_nothing(
    home: Path, capstan: Run, user_creds: UserCreds
) -> None:
    path = write_config(home, "127.0.0.1:7300", user_creds, name="one")
    before = path.read_bytes()
    r = capstan("context", "use", "nope")
    assert r.code == 1
    assert r.err.strip() == f"error: {path}: no context 'nope' (known: one)"
    assert path.read_bytes() == before


def test_unknown_context_from_environment(
    home: Path, capstan: Run, user_creds: UserCreds, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(home, "127.0.0.1:7300", user_creds, name="one")
    monkeypatch.setenv("CAPSTAN_CONTEXT", "prod")
    r = capstan("get", "nodes")
    assert r.code == 1
    assert "no context 'prod' (known: one)" in r.err


def test_unreadable_certificate_is_named(home: Path, capstan: Run, user_creds: UserCreds) -> None:
    path = write_config(home, "127.0.0.1:7300", user_creds)
    path.write_text(path.read_text().replace(str(user_creds.key), str(home / "gone.key")))
    r = capstan("get", "nodes")
    assert r.code == 1
    assert f"key file {home / 'gone.key'} cannot be read" in r.err
