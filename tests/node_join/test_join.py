"""Joining the real orchestrator over real TLS on loopback."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.agent import run_joined_node
from node.config import NodeConfig
from node.join import (
    JoinError,
    JoinOptions,
    ensure_joined,
    join,
    load_joined,
)
from pki.certs import identity_of, load_pem_chain
from pki.errors import ConfigError
from pki.tokenkeys import KeySet
from protos import gateway_pb2
from protos.wire.trust import parse_deny_list
from tests.control_api.conftest import stop_orchestrator
from tests.node_process.conftest import kill_recorded

from .conftest import Orchestrator, Pki, Wiretap, free_port, start_real

OPTS = JoinOptions(name="n1", runtime="process", labels={"zone": "a"})


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_join_writes_the_state_dir(orch: Orchestrator, pki: Pki, tmp_path: Path) -> None:
    state = tmp_path / "state"
    joined = join(state, orch.join_address, orch.mint(), pki.ca_file, OPTS)

    assert joined.node_id == f"spiffe://{pki.authority.trust_domain}/node/n1"
    assert joined.gateway_address == orch.gateway_address
    assert joined.issuers == (orch.identity,) == (pki.orchestrator_id,)
    assert joined.heartbeat_interval == pytest.approx(orch.heartbeat)
    assert joined.runtime == "process"
    host, port = joined.listen.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0  # port 0 resolved before joining
    # ...below the ephemeral range, where no outgoing connection can hold it at restart.
    floor = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert int(port) < floor
    assert joined.address == joined.listen
    assert load_joined(state) == joined

    assert _files(state) == [
        "ca.crt",
        "deny.txt",
        "joined.json",
        "jwks.json",
        "node.crt",
        "node.key",
        "node.yaml",
        "policy.json",
        "seal.key",
    ]
    # No policy in the token and none for its pool: nothing beyond the defaults.
    assert json.loads((state / "policy.json").read_text()) == {
        "cap_add": [], "host_network": False, "low_ports": False, "root": False
    }
    assert stat.S_IMODE((state / "node.key").stat().st_mode) == 0o600
    # The X25519 key secrets are sealed to: private, 32 bytes, never sent.
    assert stat.S_IMODE((state / "seal.key").stat().st_mode) == 0o600
    assert len((state / "seal.key").read_bytes()) == 32
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert (state / "ca.crt").read_bytes() == pki.authority.trust_bundle()
    assert KeySet.from_file(state / "jwks.json").kids == KeySet.from_jwks(
        json.dumps(pki.keys.jwks()).encode()
    ).kids
    assert parse_deny_list((state / "deny.txt").read_bytes()) == set()

    chain = load_pem_chain((state / "node.crt").read_bytes())
    key = serialization.load_pem_private_key((state / "node.key").read_bytes(), None)
    assert chain[0].public_key() == key.public_key()
    assert identity_of(chain[0]).uri == joined.node_id
    assert [
        str(ip)
        for ip in chain[0]
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value.get_values_for_type(x509.IPAddress)
    ] == ["127.0.0.1"]

    cfg = NodeConfig.load(state / "node.yaml")
    assert cfg.listen == joined.listen
    assert cfg.issuers == [orch.identity]
    assert cfg.labels == {"zone": "a"}
    assert cfg.cert == state / "node.crt" and cfg.deny_list == state / "deny.txt"


def test_the_orchestrator_sees_a_csr_and_never_the_key(
    orch: Orchestrator, wiretap: Wiretap, pki: Pki, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    token = orch.mint()
    join(state, wiretap.address, token, pki.ca_file, OPTS)

    assert len(wiretap.joins) == 1
    request = wiretap.joins[0]
    assert request.join_token == token
    assert (request.name, request.runtime, request.mode) == ("n1", "process", "push")
    assert list(request.ips) == ["127.0.0.1"] and list(request.dns) == []
    assert dict(request.labels) == {"zone": "a"}
    assert request.cpus > 0 and request.memory > 0
    assert request.address == load_joined(state).address  # type: ignore[union-attr]

    key = serialization.load_pem_private_key((state / "node.key").read_bytes(), None)
    csr = x509.load_pem_x509_csr(request.csr_pem)
    assert csr.is_signature_valid and csr.public_key() == key.public_key()
    wire = request.SerializeToString()
    scalar = key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert scalar not in wire and der not in wire
    assert b"PRIVATE KEY" not in wire


def test_pin_mismatch_refuses_before_any_call(
    orch: Orchestrator, wiretap: Wiretap, pki: Pki, evil_pki: Pki, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    # The CA file holds another cluster's root.
    with pytest.raises(ConfigError, match="no certificate matching the join token's CA pin"):
        join(state, wiretap.address, orch.mint(), evil_pki.ca_file, OPTS)
    # The CA file is right but the token pins another root.
    token = f"CJ1.{orch.mint().split('.')[1]}.{evil_pki.pin}"
    with pytest.raises(ConfigError, match="no certificate matching the join token's CA pin"):
        join(state, wiretap.address, token, pki.ca_file, OPTS)
    assert wiretap.joins == []
    assert not state.exists()


def test_only_the_pinned_root_is_trusted_for_the_join(
    pki: Pki, evil_pki: Pki, tmp_path: Path
) -> None:
    """A CA file with an extra root must not let that root's server receive the secret."""
    evil = start_real(tmp_path / "evil", evil_pki)  # an orchestrator of the other CA
    tap = Wiretap(evil.join_address, evil_pki).start()  # serves its CA's cert on 127.0.0.1
    try:
        both = tmp_path / "both.crt"
        both.write_bytes(evil_pki.authority.trust_bundle() + pki.authority.trust_bundle())
        token = f"CJ1.{evil.mint().split('.')[1]}.{pki.pin}"
        with pytest.raises(JoinError) as info:
            join(tmp_path / "state", tap.address, token, both, OPTS)
        assert info.value.code == "UNAVAILABLE"
        assert tap.joins == []  # the TLS handshake failed: nothing was sent
        assert evil.nodes() == []
        assert not (tmp_path / "state").exists()
    finally:
        tap.stop()
        stop_orchestrator(evil.running)


def test_a_refused_token_is_a_one_line_error_and_leaves_nothing(
    orch: Orchestrator, wiretap: Wiretap, pki: Pki, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    token = f"CJ1.{orch.mint().split('.')[1][:-2]}AA.{pki.pin}"  # not a secret it minted
    with pytest.raises(JoinError) as info:
        join(state, wiretap.address, token, pki.ca_file, OPTS)
    assert info.value.code == "PERMISSION_DENIED"
    # The orchestrator tells a refused joiner little; the reason goes to its audit log.
    assert str(info.value) == f"orchestrator {wiretap.address} refused the join: join refused"
    assert len(wiretap.joins) == 1
    assert orch.nodes() == []
    assert not state.exists()  # the key made for this attempt is gone with the directory


def test_a_used_token_is_refused_the_second_time(
    orch: Orchestrator, pki: Pki, tmp_path: Path
) -> None:
    token = orch.mint()
    join(tmp_path / "a", orch.join_address, token, pki.ca_file, OPTS)
    with pytest.raises(JoinError, match="refused the join") as info:
        join(tmp_path / "b", orch.join_address, token, pki.ca_file, OPTS)
    assert info.value.code == "PERMISSION_DENIED"
    assert not (tmp_path / "b").exists()


def test_an_unreachable_orchestrator_is_a_one_line_error(pki: Pki, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    token = f"CJ1.{'A' * 43}.{pki.pin}"
    with pytest.raises(JoinError) as info:
        join(tmp_path / "state", address, token, pki.ca_file, OPTS, timeout=5)
    assert info.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    assert str(info.value).startswith(f"cannot reach orchestrator {address}: ")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "state").exists()


def test_a_certificate_for_another_key_is_refused_and_nothing_is_written(
    orch: Orchestrator, wiretap: Wiretap, pki: Pki, tmp_path: Path
) -> None:
    other = pki.authority.issue("node", "n1", ips=["127.0.0.1"])

    def swap(response: gateway_pb2.JoinResponse) -> None:
        response.certificate_chain = other.chain_pem

    wiretap.tamper = swap
    state = tmp_path / "state"
    state.mkdir()
    (state / "keep").write_text("x")
    with pytest.raises(JoinError, match="not for this node's key"):
        join(state, wiretap.address, orch.mint(), pki.ca_file, OPTS)
    assert _files(state) == ["keep"]


def test_a_foreign_trust_bundle_is_refused(
    orch: Orchestrator, wiretap: Wiretap, pki: Pki, evil_pki: Pki, tmp_path: Path
) -> None:
    def swap(response: gateway_pb2.JoinResponse) -> None:
        response.trust_bundle = evil_pki.authority.trust_bundle()

    wiretap.tamper = swap
    with pytest.raises(JoinError, match="does not hold the pinned root"):
        join(tmp_path / "state", wiretap.address, orch.mint(), pki.ca_file, OPTS)
    assert not (tmp_path / "state").exists()


def test_bad_local_options_are_refused_before_the_token_is_spent(
    orch: Orchestrator, wiretap: Wiretap, pki: Pki, tmp_path: Path
) -> None:
    for options, reason in (
        (JoinOptions(name="Bad_Name"), "node name"),
        (JoinOptions(ips=("300.1.1.1",)), "invalid IP address"),
        (JoinOptions(mode="sideways"), "mode must be push or pull"),
        (JoinOptions(listen="0.0.0.0:0"), "needs --ip or --dns"),
        (JoinOptions(listen="nowhere"), "listen must be HOST:PORT"),
        (JoinOptions(runtime="podman"), "runtime must be one of"),
    ):
        with pytest.raises(ConfigError, match=reason):
            join(tmp_path / "state", wiretap.address, orch.mint(), pki.ca_file, options)
    assert wiretap.joins == []
    assert not (tmp_path / "state").exists()


def test_a_joined_state_dir_restarts_without_a_token(
    orch: Orchestrator, wiretap: Wiretap, pki: Pki, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first, reused = ensure_joined(state, wiretap.address, orch.mint(), pki.ca_file, OPTS)
    assert not reused
    before = {p.name: p.read_bytes() for p in state.iterdir()}

    again, reused = ensure_joined(state, None, None, None)
    assert reused and again == first
    # A token given anyway is neither needed nor sent.
    again, reused = ensure_joined(state, wiretap.address, orch.mint(), pki.ca_file, OPTS)
    assert reused and again == first
    assert len(wiretap.joins) == 1
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before

    with pytest.raises(ConfigError, match="already holds a joined node"):
        join(state, wiretap.address, orch.mint(), pki.ca_file, OPTS)

    node = run_joined_node(state, listen="127.0.0.1:0", runtime_kind="process")
    try:
        assert node.node_id == first.node_id
        assert node.listening == first.listen
    finally:
        node.stop(0)
        kill_recorded(state)


def test_an_unjoined_state_dir_needs_a_token(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"a join token .* is needed"):
        ensure_joined(tmp_path / "state", "127.0.0.1:1", None, pki.ca_file)
    with pytest.raises(ConfigError, match=r"CA file .* is needed"):
        ensure_joined(tmp_path / "state", "127.0.0.1:1", f"CJ1.{'A' * 43}.{pki.pin}", None)
    with pytest.raises(ConfigError, match="holds no joined node; join with a token first"):
        run_joined_node(tmp_path / "state")
    assert not (tmp_path / "state").exists()


def test_restart_refuses_what_contradicts_the_join(
    orch: Orchestrator, pki: Pki, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    joined = join(state, orch.join_address, orch.mint(), pki.ca_file, OPTS)
    port = int(joined.listen.rsplit(":", 1)[1])
    with pytest.raises(ConfigError, match="joined listening on"):
        run_joined_node(state, listen=f"127.0.0.1:{port + 1}")
    with pytest.raises(ConfigError, match="joined listening on"):
        run_joined_node(state, listen=f"127.0.0.2:{port}")
    with pytest.raises(ConfigError, match="joined with the process runtime, not docker"):
        run_joined_node(state, runtime_kind="docker")
    # Two days on, the 24 h certificate has expired: a clear refusal, not a TLS mystery.
    with pytest.raises(ConfigError, match=r"expired at .* join again with a new token"):
        run_joined_node(state, clock=lambda: time.time() + 2 * 86400)
    assert "audit.jsonl" not in _files(state)  # no agent was started


def test_a_corrupted_joined_record_is_a_config_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "joined.json").write_text(json.dumps({"node_id": 1}))
    with pytest.raises(ConfigError, match="is malformed"):
        load_joined(state)
    (state / "joined.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_joined(state)


def test_the_node_config_is_yaml_that_serve_accepts(
    orch: Orchestrator, pki: Pki, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    join(state, orch.join_address, orch.mint(), pki.ca_file, OPTS)
    doc = yaml.safe_load((state / "node.yaml").read_text())
    assert doc["deny-list"] == str(state / "deny.txt")
    assert doc["runtime"] == "process"


def test_the_listen_host_is_always_a_certificate_name(
    orch: Orchestrator, wiretap: Wiretap, pki: Pki, tmp_path: Path
) -> None:
    options = JoinOptions(name="n2", runtime="process", ips=("10.1.2.3",), dns=("n2.example",))
    joined = join(tmp_path / "a", wiretap.address, orch.mint(), pki.ca_file, options)
    assert list(wiretap.joins[-1].ips) == ["127.0.0.1", "10.1.2.3"]
    assert list(wiretap.joins[-1].dns) == ["n2.example"]
    assert joined.address.startswith("127.0.0.1:")
    record = orch.node("n2")
    assert record is not None and record.address == joined.address
    assert list(record.ips) == ["127.0.0.1", "10.1.2.3"] and list(record.dns) == ["n2.example"]

    # localhost is everyone's own name: the node asks for it as the name it listens
    # under, and the orchestrator refuses to certify it.
    options = JoinOptions(name="n3", runtime="process", listen="localhost:0")
    with pytest.raises(JoinError, match="reserved") as info:
        join(tmp_path / "b", wiretap.address, orch.mint(), pki.ca_file, options)
    assert info.value.code == "INVALID_ARGUMENT"
    assert list(wiretap.joins[-1].dns) == ["localhost"] and list(wiretap.joins[-1].ips) == []
    assert wiretap.joins[-1].address.startswith("localhost:")
