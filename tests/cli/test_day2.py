"""The day-2 verbs against a real local cluster (an orchestrator and two node agents
on loopback, process runtime): tenants, get NAME / -o name / -o jsonpath / -w,
apply -f - / DIR, delete -f, scale, top, events, version, drain --wait, describe
node events, status and up when the orchestrator died, completion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node.runtime.images import busybox_binary
from orchestrator.cli import main
from orchestrator.context import Context, ContextConfig
from orchestrator.local import LocalCluster
from pki.authority import Authority
from tests.waiting import wait_for

from .conftest import Result, closed_port, kill_mentioning
from .test_local_cluster import free_base_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(busybox_binary() is None, reason="needs a static busybox"),
]

Run = Callable[..., Result]

SHOP = """\
apiVersion: capstan/v1
kind: Application
name: shop
tenant: acme
services:
  web:
    image: local/busybox:1
    command: ["sh", "-c", "echo web says hello; while true; do sleep 1; done"]
    replicas: 1
    resources: {cpu: 0.1, memory: 32Mi}
"""


def _app(name: str, tenant: str = "default", replicas: int = 1) -> str:
    return SHOP.replace("name: shop", f"name: {name}").replace(
        "tenant: acme", f"tenant: {tenant}"
    ).replace("replicas: 1", f"replicas: {replicas}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("day2") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAPSTAN_HOME", str(home))
        mp.delenv("CAPSTAN_CONTEXT", raising=False)
        base = free_base_port(2)
        code = main(["up", "--nodes", "2", "--runtime", "process", "--base-port", str(base)])
        assert code == 0
        try:
            yield home
        finally:
            LocalCluster(home / "local").down()
            kill_mentioning(str(home))


@pytest.fixture
def run(cluster: Path, capstan: Run, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.setenv("CAPSTAN_HOME", str(cluster))
    monkeypatch.delenv("CAPSTAN_CONTEXT", raising=False)
    return capstan


def _cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CAPSTAN_HOME=str(home))
    env.pop("CAPSTAN_CONTEXT", None)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], input=stdin, capture_output=True,
        text=True, timeout=180, env=env, check=False,
    )


def _spawn(home: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, CAPSTAN_HOME=str(home), PYTHONUNBUFFERED="1")
    env.pop("CAPSTAN_CONTEXT", None)
    # Its SIGINT is a terminal's whatever started the suite (tests/conftest.py).
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )


def _interrupt(child: subprocess.Popen[str], until: Callable[[list[str]], bool]) -> list[str]:
    """Read the child's lines until ``until`` holds, then Ctrl-C it; every line read."""
    assert child.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    try:
        while not until(lines) and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
        child.send_signal(signal.SIGINT)
        rest, _ = child.communicate(timeout=30)
        lines.extend(rest.splitlines())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return lines


def test_global_context_and_the_unreachable_message(run: Run, cluster: Path) -> None:
    r = run("--context", "local", "get", "nodes")
    assert r.code == 0, r.err
    assert r.out.count(" ready ") == 2
    r = run("--context", "nope", "get", "nodes")
    assert r.code == 1 and "no context 'nope' (known: local)" in r.err
    # After the subcommand wins over before it.
    assert run("--context", "nope", "get", "nodes", "--context", "local").code == 0

    config = ContextConfig.load()
    local = config.contexts["local"]
    config.set(Context("dead", f"127.0.0.1:{closed_port()}", local.ca, local.cert, local.key))
    config.save()
    r = run("--context", "dead", "get", "nodes")
    assert r.code == 5
    assert "cannot reach the orchestrator of context 'dead' at 127.0.0.1:" in r.err
    assert "`capstan status`" in r.err and r.err.count("\n") == 1


def test_tenants_get_name_formats_and_stdin(run: Run, cluster: Path) -> None:
    r = _cli(cluster, "apply", "-f", "-", "--timeout", "90s", stdin=SHOP)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "acme/shop generation 1" in r.stdout

    # The listed app's tenant is found: describe, logs work without --tenant.
    r = run("get", "workloads")
    assert r.out.splitlines()[0].split()[:3] == ["TENANT", "APP", "INSTANCE"]
    assert any(line.split()[:3] == ["acme", "shop", "web.0"] for line in r.out.splitlines())
    assert run("get", "workloads", "-A").out == r.out
    r = run("describe", "app", "shop")
    assert r.code == 0, r.err
    assert "Tenant:      acme" in r.out
    events = r.out.split("Events:")[1].split()
    assert events[0].endswith("Z") and events[0][:2] == "20"  # events carry their time
    wait_for(lambda: "web says hello" in run("logs", "shop/web.0").out, 60, "the output")

    # get KIND NAME; -o name; -o jsonpath.
    r = run("get", "workloads", "shop/web.0", "-o", "jsonpath={.tenant}/{.state}")
    assert (r.code, r.out.strip()) == (0, "acme/running")
    assert run("get", "nodes", "-o", "name").out.split() == ["node/node-1", "node/node-2"]
    assert run("get", "apps", "shop", "-o", "name").out.strip() == "app/shop"
    r = run("get", "nodes", "-o", "jsonpath={.items[*].name}")
    assert r.out.split() == ["node-1", "node-2"]
    r = run("get", "apps", "nope")
    assert r.code == 3 and "no app named 'nope'" in r.err
    assert run("get", "nodes", "-o", "xml").code == 2

    # The same name in a second tenant: the CLI asks which one.
    r = _cli(cluster, "apply", "-f", "-", "--no-wait", stdin=_app("shop", "beta"))
    assert r.returncode == 0, r.stderr
    r = run("describe", "app", "shop")
    assert r.code == 1 and "exists in tenants acme, beta: give --tenant" in r.err
    assert run("describe", "app", "shop", "--tenant", "beta").code == 0
    assert run("delete", "app", "shop", "--tenant", "beta").code == 0


def test_apply_a_directory_scale_top_and_delete_by_file(
    run: Run, cluster: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "apps"
    folder.mkdir()
    (folder / "a.yaml").write_text(_app("alpha"))
    (folder / "b.yml").write_text(_app("bravo"))
    (folder / "notes.txt").write_text("not a topology")
    r = run("apply", "-f", str(folder), "--timeout", "90s")
    assert r.code == 0, r.out + r.err
    assert "default/alpha is running" in r.out and "default/bravo is running" in r.out

    # A wrong file in the directory: nothing at all is sent.
    (folder / "c.yaml").write_text(_app("charlie").replace("replicas: 1", "replicas: -1"))
    r = run("apply", "-f", str(folder))
    assert r.code == 1 and "c.yaml:" in r.err and "replicas" in r.err
    assert run("get", "apps", "charlie").code == 3
    (folder / "c.yaml").unlink()

    r = run("scale", "alpha/web", "3")
    assert r.code == 0, r.err
    assert "default/alpha/web scaled 1 -> 3 (generation 2)" in r.out
    wait_for(
        lambda: run("get", "workloads", "--app", "alpha", "-o", "jsonpath={.items[*].state}")
        .out.split() == ["running"] * 3,
        60,
        "three instances",
    )
    assert run("scale", "alpha/nope", "2").code == 3
    assert run("scale", "alpha", "2").code == 2

    def usage_reported() -> bool:
        out = run("top", "instances", "--app", "alpha").out.splitlines()
        return len(out) == 4 and all(line.split()[6] != "0" for line in out[1:])

    wait_for(usage_reported, 60, "usage reports for alpha")
    r = run("top", "nodes")
    assert r.out.splitlines()[0].split() == [
        "NAME", "CPU(cores)", "CPU%", "MEMORY", "MEMORY%", "INSTANCES"]
    assert sum(int(line.split()[-1]) for line in r.out.splitlines()[1:]) >= 4

    r = run("delete", "-f", str(folder / "a.yaml"))
    assert (r.code, r.out.strip()) == (0, "default/alpha deleted")
    states = run("get", "workloads", "--app", "alpha", "-o", "jsonpath={.items[*].desired}")
    assert set(states.out.split()) <= {"removed"}
    assert run("delete", "-f", str(folder / "b.yml")).code == 0
    assert run("delete").code == 2  # neither NAME nor -f


def test_events_version_describe_node_drain_wait(run: Run, cluster: Path) -> None:
    r = run("version")
    assert r.code == 0, r.err
    assert r.out.startswith("client:        0.1.0")
    assert ", epoch 1)" in r.out
    rows = [line.split() for line in r.out.splitlines()[3:]]
    assert [row[:2] for row in rows] == [["node-1", "0.1.0"], ["node-2", "0.1.0"]]
    doc = json.loads(run("version", "-o", "json").out)
    assert doc["orchestrator"]["epoch"] == 1

    r = _cli(cluster, "apply", "-f", "-", "--timeout", "90s", stdin=_app("delta", replicas=2))
    assert r.returncode == 0, r.stderr
    r = run("drain", "node-2", "--wait", "--timeout", "120s")
    assert r.code == 0, r.out + r.err
    assert r.out.strip().endswith("node node-2 drained")
    left = run("get", "workloads", "--node", "node-2", "-o", "jsonpath={.items[*].state}")
    assert set(left.out.split()) <= {"removed"}

    r = run("describe", "node", "node-2")
    events = r.out.split("Events:")[1]
    assert "node.updated" in events and "Z node.updated" in events

    r = run("events", "--node", "node-2")
    assert r.code == 0 and "node.updated" in r.out
    first = r.out.splitlines()[0].split()
    assert first[0].endswith("Z")

    # events -w follows: an uncordon appears, then Ctrl-C exits 130.
    child = _spawn(cluster, "events", "-w", "--node", "node-2", "-n", "1")
    assert child.stdout is not None
    # Its past read is printed (-n 1: node-2's last event, which other tests sharing the
    # cluster may have made), so the uncordon comes after it, in the followed part.
    printed = child.stdout.readline().rstrip("\n")
    assert " node-2" in printed, printed
    assert run("uncordon", "node-2").code == 0
    followed = _interrupt(child, lambda seen: any("node.updated" in s for s in seen))
    assert child.returncode == 130, [printed, *followed]
    assert any("node.updated" in s for s in followed), [printed, *followed]

    # get -w prints a change as it happens.
    child = _spawn(cluster, "get", "workloads", "--app", "delta", "-w")
    time.sleep(1.5)
    assert run("scale", "delta/web", "3").code == 0
    lines = _interrupt(child, lambda seen: any("web.2" in s for s in seen))
    assert child.returncode == 130, lines
    assert any("web.2" in s for s in lines)
    assert run("delete", "app", "delta").code == 0


def test_completion_scripts(run: Run) -> None:
    r = run("completion", "bash")
    assert r.code == 0 and "_CAPSTAN_COMPLETE=bash_complete" in r.out
    r = run("completion", "zsh")
    assert r.code == 0 and "#compdef capstan" in r.out
    assert run("completion", "fish").code == 2
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli"],
        env=dict(os.environ, _CAPSTAN_COMPLETE="bash_complete", COMP_WORDS="capstan to",
                 COMP_CWORD="1"),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert "top" in proc.stdout and "token" in proc.stdout


def test_context_add_use_delete(run: Run, cluster: Path) -> None:
    local = ContextConfig.load().contexts["local"]
    r = run("context", "add", "other", "--endpoint", "127.0.0.1:1", "--ca", str(local.ca),
            "--cert", str(local.cert), "--key", str(local.key))
    assert r.code == 0, r.err
    assert run("context", "add", "other", "--endpoint", "127.0.0.1:1", "--ca", str(local.ca),
               "--cert", str(local.cert), "--key", str(local.key)).code == 1
    assert run("context", "add", "x", "--endpoint", "nohost", "--ca", str(local.ca),
               "--cert", str(local.cert), "--key", str(local.key)).code == 1
    assert run("context", "add", "x", "--endpoint", "h:1", "--ca", "/nonexistent",
               "--cert", str(local.cert), "--key", str(local.key)).code == 2
    r = run("context", "add", "ha", "--endpoint", "127.0.0.1:1", "--endpoint", "127.0.0.1:2",
            "--ca", str(local.ca), "--cert", str(local.cert), "--key", str(local.key))
    assert r.code == 0, r.err
    assert ContextConfig.load().contexts["ha"].endpoints == ("127.0.0.1:1", "127.0.0.1:2")
    assert run("context", "delete", "ha").code == 0
    assert run("context", "use", "other").code == 0
    assert ContextConfig.load().current == "other"
    assert run("get", "nodes").code == 5
    r = run("context", "delete", "other")
    assert r.code == 0 and "no current context now" in r.out
    assert "other" not in ContextConfig.load().contexts
    assert run("context", "delete", "other").code == 1
    assert run("context", "use", "local").code == 0


def test_status_fails_and_up_resumes_when_the_orchestrator_died(
    run: Run, cluster: Path
) -> None:
    r = _cli(cluster, "apply", "-f", "-", "--timeout", "90s", stdin=_app("echo"))
    assert r.returncode == 0, r.stderr
    before = json.loads(run("get", "workloads", "--app", "echo", "-o", "json").out)
    record = LocalCluster(cluster / "local").load()
    assert record is not None
    orch = next(p for p in record.processes if p.role == "orchestrator")
    os.killpg(orch.pid, signal.SIGKILL)
    wait_for(lambda: not orch.alive(), 60, "the orchestrator to die")

    r = run("status")
    assert r.code == 5, r.out + r.err
    assert "`capstan up` restarts what died" in r.out

    r = run("up", "--nodes", "2", "--runtime", "process")
    assert r.code == 0, r.out + r.err
    assert "local cluster resumed: restarted orchestrator" in r.out
    assert run("status").code == 0
    after = json.loads(run("get", "workloads", "--app", "echo", "-o", "json").out)
    # The same instance, never restarted: the workload outlived its orchestrator.
    assert [(w["container"], w["restarts"], w["created_at"]) for w in after] == [
        (w["container"], w["restarts"], w["created_at"]) for w in before
    ]
    wait_for(
        lambda: run("get", "workloads", "--app", "echo", "-o", "jsonpath={.items[*].state}")
        .out.split() == ["running"],
        60,
        "the instance reported running again",
    )


def test_viewer_sees_no_audit_based_events_but_a_clear_refusal(
    run: Run, cluster: Path
) -> None:
    home = cluster
    tenant = Authority.open(home / "local" / "pki").issue("user", "carol", role="tenant:acme")
    assert tenant.key_pem is not None
    (home / "carol.crt").write_bytes(tenant.chain_pem)
    (home / "carol.key").write_bytes(tenant.key_pem)
    config = ContextConfig.load()
    local = config.contexts["local"]
    config.set(Context("carol", local.endpoint, local.ca, home / "carol.crt", home / "carol.key"))
    config.save()
    r = run("--context", "carol", "events")
    assert r.code == 4 and "permission denied" in r.err
    r = run("--context", "carol", "describe", "node", "node-1")
    assert r.code == 0 and "<not shown: the audit log is for admins and viewers>" in r.out


def _user_context(home: Path, name: str, role: str) -> str:
    issued = Authority.open(home / "local" / "pki").issue("user", name, role=role)
    assert issued.key_pem is not None
    (home / f"{name}.crt").write_bytes(issued.chain_pem)
    (home / f"{name}.key").write_bytes(issued.key_pem)
    config = ContextConfig.load()
    local = config.contexts["local"]
    config.set(Context(name, local.endpoint, local.ca, home / f"{name}.crt",
                       home / f"{name}.key"))
    config.save()
    return name


def test_exec_runs_on_the_node_audited_and_refused_to_others(run: Run, cluster: Path) -> None:
    r = _cli(cluster, "apply", "-f", "-", "--timeout", "90s", stdin=_app("ex", "acme"))
    assert r.returncode == 0, r.stderr
    r = _cli(cluster, "exec", "ex/web.0", "--", "sh", "-c", "echo secret-output; exit 3")
    assert (r.returncode, r.stdout) == (3, "secret-output\n"), r.stderr
    r = _cli(cluster, "exec", "-i", "ex/web", "--", "cat", stdin="typed\n")
    assert (r.returncode, r.stdout) == (0, "typed\n"), r.stderr

    entries = [json.loads(line) for line in run("audit", "tail", "-n", "0", "-o", "json")
               .out.splitlines()]
    granted = [e for e in entries if e["event"] == "exec.granted"]
    assert [e["command"] for e in granted] == [
        ["sh", "-c", "echo secret-output; exit 3"], ["cat"]]
    assert granted[0]["by"].endswith("/user/admin") and granted[0]["tenant"] == "acme"
    assert not any("secret-output\n" in json.dumps(e) and e["event"] != "exec.granted"
                   for e in entries)  # the command line is audited, never its output

    marker = ["sh", "-c", "echo ran >> /tmp/capstan-exec-marker"]
    for who, role in (("vic", "viewer"), ("eve", "tenant:evil")):
        ctx = _user_context(cluster, who, role)
        r = _cli(cluster, "--context", ctx, "exec", "ex/web.0", "--tenant", "acme", "--", *marker)
        assert r.returncode == 4, (who, r.stderr)
        assert r.stderr.startswith("error: Exec: permission denied:"), r.stderr
    # A tenant's own instance: allowed.
    ctx = _user_context(cluster, "ann", "tenant:acme")
    r = _cli(cluster, "--context", ctx, "exec", "ex/web.0", "--", "echo", "mine")
    assert (r.returncode, r.stdout) == (0, "mine\n"), r.stderr
    r = _cli(cluster, "exec", "ex/web.0", "--", "cat", "/tmp/capstan-exec-marker")
    assert r.returncode == 1 and r.stdout == ""  # the refused commands never ran
    entries = [json.loads(line) for line in run("audit", "tail", "-n", "0", "-o", "json")
               .out.splitlines()]
    assert len([e for e in entries if e["event"] == "exec.granted"]) == 4
    refused = [e for e in entries if e["event"] == "control.refused" and e["method"] == "Exec"]
    assert len(refused) == 2

    # The session ends with its grant, whatever the command wants.
    started = time.monotonic()
    r = _cli(cluster, "exec", "ex/web.0", "--timeout", "2s", "--", "sleep", "60")
    assert r.returncode == 4, r.stderr
    assert "exec session ended" in r.stderr and "grant expired" in r.stderr
    assert time.monotonic() - started < 30
    assert _cli(cluster, "exec", "ex/web.0", "--timeout", "10m", "--", "true").returncode == 1
    assert run("delete", "app", "ex").code == 0


def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The endpoint's samples by name, parsed by prometheus_client's own text parser."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback http
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def test_metrics_endpoints_are_named_by_status_and_scraped(run: Run, cluster: Path) -> None:
    r = run("status", "-o", "json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    procs = {p["name"]: p for p in doc["processes"]}
    assert set(procs) == {"orchestrator", "node-1", "node-2"}
    for p in procs.values():
        assert p["metrics"].startswith("http://127.0.0.") and p["metrics"].endswith("/metrics")
    # Something to count: a refused call and an exec token.
    viewer = _user_context(cluster, "mia", "viewer")
    assert run("--context", viewer, "cordon", "node-1").code == 4
    r = _cli(cluster, "apply", "-f", "-", "--timeout", "90s", stdin=_app("metered"))
    assert r.returncode == 0, r.stderr
    assert run("logs", "metered/web.0").code == 0

    orch = _scrape(procs["orchestrator"]["metrics"])
    calls = {s[0]["method"]: s[1] for s in orch["capstan_orchestrator_calls_total"]}
    assert calls["Apply"] >= 1 and calls["ListNodes"] >= 1
    refusals = {
        (s[0]["method"], s[0]["reason"]) for s in orch["capstan_orchestrator_refusals_total"]
    }
    assert ("Cordon", "role") in refusals
    minted = {s[0]["op"] for s in orch["capstan_tokens_minted_total"]}
    assert {"container.create", "container.logs"} <= minted
    beats = {s[0]["node"]: s[1] for s in orch["capstan_node_heartbeats_total"]}
    assert beats["node-1"] > 0 and beats["node-2"] > 0
    expiry = {(s[0]["kind"], s[0]["name"]): s[1]
              for s in orch["capstan_certificate_expiry_seconds"]}
    assert 3600 < expiry[("node", "node-1")] <= 86400 and ("orchestrator", "local") in expiry
    assert any(s[1] > 0 for s in orch["capstan_store_seconds_count"])
    assert orch["capstan_placement_seconds_count"][0][1] >= 1
    assert "capstan_reconcile_queue" in orch

    nodes = [_scrape(procs[n]["metrics"]) for n in ("node-1", "node-2")]
    # The instance's node verified the orchestrator's tokens and the user's logs token.
    verified = sum(s[1] for m in nodes for s in m.get("capstan_token_verifications_total", [])
                   if s[0]["result"] == "ok")
    assert verified >= 2
    assert sum(s[1] for m in nodes for s in m.get("capstan_node_calls_total", [])) >= 2
    assert all(m["capstan_node_heartbeats_sent_total"][0][1] > 0 for m in nodes)
    assert all(m["capstan_certificate_expiry_seconds"][0][1] > 3600 for m in nodes)
    assert run("delete", "app", "metered").code == 0
