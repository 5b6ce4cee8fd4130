"""Fuzz targets: every parser that reads bytes a hostile peer, tenant or file chose.

Each target pairs a hypothesis strategy of deliberately bad inputs with a check that
runs the real parser and sorts the outcome into "accepted" or "refused: <ErrorClass>".
Anything else -- an exception outside the parser's documented error family, an
accepted input that breaks the parser's promise, a write outside its root -- raises
``Finding``. The strategies start from valid inputs and mutate them (bytes, lines,
structure), because a parser's interesting refusals sit next to what it accepts.

Hypothesis rather than atheris: the inputs are structured formats (JWS tokens, YAML,
tar streams, protobuf messages) whose deep paths a byte-level coverage fuzzer reaches
slowly without grammars, while hypothesis builds them directly, shrinks a finding to
a minimal input, replays it from a seed inside pytest, and needs no instrumented
build. ``bench/fuzz.py`` runs 100,000 cases per target; ``test_fuzz_seeded.py`` a
short seeded run of each.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from node.errors import InvalidArgument, NodeError
from node.runtime._docker_archive import ImportedArchive
from node.runtime._process_images import ImageStore
from node.service import spec_from_pb
from node.validation import validate_spec
from node.volumes import VolumeStore
from orchestrator.errors import TopologyError
from orchestrator.topology import load_topology
from pki._jose import b64url_encode
from pki.errors import TokenError
from pki.tokenkeys import TokenKeyStore
from pki.tokens import ReplayCache, TokenVerifier, mint, request_digest
from protos import node_pb2

NOW = 1_800_000_000.0
ISS = "spiffe://fuzz.test/orchestrator/main"
SUB = "spiffe://fuzz.test/node/node-1"
AUD = "spiffe://fuzz.test/node/node-2"
OP = "container.start"
RES = "c-0123456789abcdef"
CNF = b64url_encode(hashlib.sha256(b"fuzz caller certificate").digest())
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Finding(AssertionError):
    """The parser broke its promise on one input (a crash, an escape, a bad accept)."""


@dataclass
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], str]
    close: Callable[[], None] = lambda: None


def _refusal(exc: BaseException) -> str:
    return f"refused: {type(exc).__name__}"


# -- generic mutation of a valid input -------------------------------------------------

_SPECIAL = [
    b"",
    b"\x00",
    b"\xff",
    b"..",
    b"/",
    b"\n",
    b"%",
    b"{",
    b"}",
    b"[",
    b"'",
    b'"',
    b"\\",
    b"A" * 300,
    "é".encode(),
    b"\xed\xa0\x80",
    b"-1",
    b"1e309",
    b"NaN",
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One of ``seeds`` with 1-6 byte-level mutations (flip, insert, delete, splice)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "dup", "special", "cut"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 32))]
        elif kind == "dup":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif kind == "special":
            data[at:at] = draw(st.sampled_from(_SPECIAL))
        else:
            del data[at:]
    return bytes(data)


# -- capability tokens -----------------------------------------------------------------

_CLAIM_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


def _token_target() -> Target:
    tmp = tempfile.mkdtemp(prefix="capstan-fuzz-token-")
    store = TokenKeyStore.create(Path(tmp) / "keys", now=NOW)
    signer = store.signer()
    keyset = store.keyset()
    shutil.rmtree(tmp)

    def valid(**over: Any) -> str:
        args: dict[str, Any] = {
            "iss": ISS,
            "sub": SUB,
            "aud": AUD,
            "op": OP,
            "res": RES,
            "cnf": CNF,
            "now": NOW,
        }
        args.update(over)
        return mint(signer, **args)

    seeds = [
        valid().encode(),
        valid(req=request_digest({"image": "x"})).encode(),
        valid(epoch=3).encode(),
    ]
    good_claims = {
        "iss": ISS,
        "sub": SUB,
        "aud": AUD,
        "op": OP,
        "res": RES,
        "cnf": {"x5t#S256": CNF},
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 60,
        "jti": "A" * 22,
        "epoch": 0,
    }

    @st.composite
    def resigned(draw: st.DrawFn) -> bytes:
        """A token signed with the real key whose header or claims are hostile."""
        header: dict[str, Any] = {"alg": "EdDSA", "typ": "cap+jwt", "kid": signer.kid}
        claims = dict(good_claims)
        for _ in range(draw(st.integers(1, 4))):
            where = draw(st.sampled_from(["header", "claims"]))
            target = header if where == "header" else claims
            key = draw(st.sampled_from([*target, "jku", "x5u", "jwk", "crit", "zip", "b64"]))
            if draw(st.booleans()) and key in target:
                del target[key]
            else:
                target[key] = draw(_CLAIM_VALUES)
        h = b64url_encode(json.dumps(header).encode())
        c = b64url_encode(json.dumps(claims).encode())
        signing_input = f"{h}.{c}".encode()
        return signing_input + b"." + b64url_encode(signer.sign(signing_input)).encode()

    strategy = st.one_of(mutated(seeds), resigned(), st.binary(max_size=200))

    def check(token: bytes) -> str:
        verifier = TokenVerifier(
            keyset,
            audience=AUD,
            issuers=[ISS],
            replay=ReplayCache(max_entries=8),
            clock=lambda: NOW,
        )
        try:
            cap = verifier.verify(token, peer_id=SUB, peer_thumbprint=CNF, op=OP, res=RES, now=NOW)
        except TokenError as exc:
            if not str(exc):
                raise Finding(f"{type(exc).__name__} without a reason") from exc
            return _refusal(exc)
        except Exception as exc:
            raise Finding(f"verify raised {type(exc).__name__}: {exc}") from exc
        if (cap.sub, cap.aud, cap.op, cap.res, cap.iss) != (SUB, AUD, OP, RES, ISS):
            raise Finding(f"verify accepted a token for something else: {cap}")
        return "accepted"

    return Target("token", strategy, check)


# -- topology files --------------------------------------------------------------------

_YAML_SCALARS = [
    "",
    "~",
    "-1",
    "0",
    "1e309",
    ".nan",
    "[",
    "{a: b}",
    "!!python/object:os.system",
    "&a x",
    "*a",
    "0x10",
    "yes",
    "'",
    '"\\x00"',
    "x" * 300,
    "[1, [2, [3]]]",
    "{cpu: -1}",
    "64Zi",
    "é",
    "null",
    "!!binary AAAA",
    "<<: *a",
]


@st.composite
def _yaml_mutation(draw: st.DrawFn, seeds: list[str]) -> bytes:
    lines = draw(st.sampled_from(seeds)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        kind = draw(st.sampled_from(["value", "drop", "dup", "indent", "key", "bytes"]))
        if not lines:
            lines = [""]
        line = lines[i]
        if kind == "value" and ":" in line:
            lines[i] = line.split(":", 1)[0] + ": " + draw(st.sampled_from(_YAML_SCALARS))
        elif kind == "drop":
            del lines[i]
        elif kind == "dup":
            lines.insert(i, line)
        elif kind == "indent":
            lines[i] = " " * draw(st.integers(0, 9)) + line.lstrip()
        elif kind == "key":
            lines.insert(
                i,
                line[: len(line) - len(line.lstrip())]
                + draw(st.sampled_from(["extra", "replicas", "image", "services", "x"]))
                + ": "
                + draw(st.sampled_from(_YAML_SCALARS)),
            )
        else:
            lines[i] = draw(mutated([line.encode()])).decode("utf-8", "replace")
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def _topology_target() -> Target:
    seeds = [p.read_text() for p in sorted(EXAMPLES.glob("*.yaml"))]
    strategy = st.one_of(_yaml_mutation(seeds), mutated([s.encode() for s in seeds]))

    def check(text: bytes) -> str:
        try:
            app = load_topology(text, source="fuzz.yaml")
        except TopologyError as exc:
            if not exc.problems or not all(str(p.format("fuzz.yaml")) for p in exc.problems):
                raise Finding("a refusal without problems") from exc
            return _refusal(exc)
        except Exception as exc:
            raise Finding(f"load_topology raised {type(exc).__name__}: {exc}") from exc
        if not app.name or not app.services:
            raise Finding("accepted an application without a name or services")
        return "accepted"

    return Target("topology", strategy, check)


# -- tar archives (volumes and image layers) -------------------------------------------

_NAMES = [
    "a",
    "a/b",
    "dir/",
    "../x",
    "/abs",
    "a/../../x",
    ".",
    "./a",
    "a//b",
    "x" * 120,
    "a/.wh.b",
    ".wh..wh..opq",
    "a/.wh..wh..opq",
    ".wh..",
    "a/.wh...",
    ".wh...",
    "dev/null",
    "proc",
    "etc/passwd",
    "a/b/c/d",
    "link",
    "é",
    "a\\b",
]
_LINKS = ["a", "../../etc", "/etc/passwd", "link", "a/b", "..", "/", "x" * 120, ""]


@st.composite
def tar_members(draw: st.DrawFn) -> bytes:
    """A tar stream of hostile members: traversal, links out, devices, whiteouts."""
    buf = io.BytesIO()
    fmt = draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]))
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for _ in range(draw(st.integers(0, 6))):
            name = draw(st.one_of(st.sampled_from(_NAMES), st.text(min_size=1, max_size=20)))
            info = tarfile.TarInfo(name)
            kind = draw(
                st.sampled_from(
                    [
                        tarfile.REGTYPE,
                        tarfile.DIRTYPE,
                        tarfile.SYMTYPE,
                        tarfile.LNKTYPE,
                        tarfile.FIFOTYPE,
                        tarfile.CHRTYPE,
                    ]
                )
            )
            info.type = kind
            info.mode = draw(st.sampled_from([0o644, 0o755, 0o4755, 0o777, 0o000, 0o7777]))
            data = b""
            if kind == tarfile.REGTYPE:
                data = draw(st.binary(max_size=64))
                info.size = len(data)
            elif kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = draw(st.sampled_from(_LINKS))
            with contextlib.suppress(ValueError, UnicodeError):
                tar.addfile(info, io.BytesIO(data) if data else None)
    raw = buf.getvalue()
    if draw(st.integers(0, 3)) == 0:
        raw = draw(mutated([raw]))
    return raw


def _chunked(data: bytes, size: int = 700) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _tree(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


class _Sandbox:
    """A scratch directory with a sentinel beside the parser's root, checked after each case."""

    def __init__(self, prefix: str) -> None:
        self.top = Path(tempfile.mkdtemp(prefix=prefix))
        self.sentinel = self.top / "sentinel"
        self.sentinel.mkdir()
        (self.sentinel / "keep").write_text("outside the root")
        self.root = self.top / "root"

    def fresh(self) -> Path:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir()
        return self.root

    def check_untouched(self) -> None:
        outside = {p for p in _tree(self.top) if p != "root" and not p.startswith("root/")}
        if (
            outside != {"sentinel", "sentinel/keep"}
            or (self.sentinel / "keep").read_text() != "outside the root"
        ):
            raise Finding(f"an archive changed files outside its root: {sorted(outside)[:5]}")

    def close(self) -> None:
        shutil.rmtree(self.top, ignore_errors=True)


def _volume_target() -> Target:
    box = _Sandbox("capstan-fuzz-volume-")

    def check(raw: bytes) -> str:
        store = VolumeStore(box.fresh() / "volumes")
        try:
            store.import_("v", _chunked(raw), max_bytes=1 << 20, max_files=50)
            outcome = "accepted"
        except InvalidArgument as exc:
            outcome = _refusal(exc)
        except Exception as exc:
            raise Finding(f"volume import raised {type(exc).__name__}: {exc}") from exc
        box.check_untouched()
        leftovers = [n for n in os.listdir(store.root) if n != "v"]
        if leftovers:
            raise Finding(f"volume import left {leftovers} behind")
        if outcome != "accepted" and store.exists("v"):
            raise Finding("a refused archive still created the volume")
        return outcome

    return Target("volume", tar_members(), check, box.close)


@st.composite
def image_archives(draw: st.DrawFn) -> bytes:
    """A docker-save archive whose manifest, config and layer are drawn hostile."""
    layer = draw(tar_members())
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    if draw(st.integers(0, 4)) == 0:
        diff_id = draw(st.sampled_from(["sha256:" + "0" * 64, "sha256:../../x", "", "md5:x"]))
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    if draw(st.integers(0, 4)) == 0:
        config[draw(st.sampled_from(["rootfs", "config", "os"]))] = draw(_CLAIM_VALUES)
    config_raw = json.dumps(config).encode()
    config_name = hashlib.sha256(config_raw).hexdigest() + ".json"
    layer_name = draw(st.sampled_from(["layer.tar", "../layer.tar", "/layer.tar", "a/layer.tar"]))
    manifest: Any = [{"Config": config_name, "RepoTags": ["local/fuzz:1"], "Layers": [layer_name]}]
    if draw(st.integers(0, 4)) == 0:
        manifest = draw(
            st.one_of(_CLAIM_VALUES, st.just([{"Layers": "x"}]), st.just([{"Config": 1}]))
        )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (
            ("manifest.json", json.dumps(manifest).encode()),
            (config_name, config_raw),
            (layer_name.lstrip("/"), layer),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    if draw(st.integers(0, 3)) == 0:
        raw = draw(mutated([raw]))
    return raw


def _image_target() -> Target:
    box = _Sandbox("capstan-fuzz-image-")

    def check(raw: bytes) -> str:
        images = ImageStore(box.fresh() / "images", max_bytes=1 << 20)
        outcomes = []
        try:
            images.import_archive(_chunked(raw))
            outcomes.append("accepted")
        except InvalidArgument as exc:
            outcomes.append(_refusal(exc))
        except Exception as exc:
            raise Finding(f"process image import raised {type(exc).__name__}: {exc}") from exc
        box.check_untouched()
        # The docker runtime's streaming pass over the same bytes, before the engine.
        archive = ImportedArchive(_chunked(raw))
        try:
            for _ in archive.stream():
                pass
            archive.images()
            outcomes.append("accepted")
        except InvalidArgument as exc:
            outcomes.append(_refusal(exc))
        except Exception as exc:
            raise Finding(f"docker archive pass raised {type(exc).__name__}: {exc}") from exc
        return " / ".join(outcomes)

    return Target("image", image_archives(), check, box.close)


# -- gRPC request validators -----------------------------------------------------------

_FIELD_TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            "a",
            "c-1",
            "x" * 300,
            "../etc",
            "a\x00b",
            "/",
            "local/busybox:1",
            "sha256:" + "0" * 64,
            "host",
            "none",
            "/data",
            "/proc",
            "a b",
            "é",
        ]
    ),
    st.text(max_size=30),
)


@st.composite
def container_specs(draw: st.DrawFn) -> bytes:
    spec = node_pb2.ContainerSpec(
        name=draw(_FIELD_TEXT),
        workload_id=draw(_FIELD_TEXT),
        image=draw(_FIELD_TEXT),
        command=draw(st.lists(_FIELD_TEXT, max_size=4)),
        cpu=draw(st.floats(allow_nan=True, allow_infinity=True)),
        memory=draw(st.integers(-(2**63), 2**63 - 1)),
        network=draw(_FIELD_TEXT),
    )
    for _ in range(draw(st.integers(0, 3))):
        spec.env.add(name=draw(_FIELD_TEXT), value=draw(_FIELD_TEXT))
    for _ in range(draw(st.integers(0, 3))):
        spec.volumes.add(
            name=draw(_FIELD_TEXT), path=draw(_FIELD_TEXT), read_only=draw(st.booleans())
        )
    raw = spec.SerializeToString()
    if draw(st.integers(0, 3)) == 0:
        raw = draw(mutated([raw]))
    return raw


def _request_target() -> Target:
    def check(raw: bytes) -> str:
        try:
            pb = node_pb2.ContainerSpec.FromString(raw)
        except Exception as exc:  # what grpc would refuse before any handler runs
            return f"undecodable: {type(exc).__name__}"
        try:
            validate_spec(spec_from_pb(pb))
        except InvalidArgument as exc:
            if not exc.field or not exc.message:
                raise Finding("a refusal that names no field") from exc
            return _refusal(exc)
        except NodeError as exc:
            raise Finding(f"validate_spec raised {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            raise Finding(f"validate_spec raised {type(exc).__name__}: {exc}") from exc
        return "accepted"

    return Target("request", container_specs(), check)


FACTORIES: dict[str, Callable[[], Target]] = {
    "token": _token_target,
    "topology": _topology_target,
    "volume": _volume_target,
    "image": _image_target,
    "request": _request_target,
}


@dataclass
class Result:
    name: str
    cases: int
    outcomes: dict[str, int]
    findings: list[str]


def run(target: Target, *, cases: int, seed: int, stop_at_first: bool = True) -> Result:
    """Run ``cases`` inputs of ``target`` from ``seed``; collect outcomes and findings.

    With ``stop_at_first`` hypothesis shrinks the first finding to a minimal input and
    re-raises it (the test suite's mode); without, every finding is recorded and the
    run goes on (the benchmark script's mode, which reports them all).
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    outcomes: dict[str, int] = {}
    findings: list[str] = []
    count = 0

    @hseed(seed)
    @settings(
        max_examples=cases,
        database=None,
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=list(Phase) if stop_at_first else [Phase.explicit, Phase.generate],
    )
    @given(target.strategy)
    def one(data: Any) -> None:
        nonlocal count
        count += 1
        try:
            outcome = target.check(data)
        except Finding as exc:
            if stop_at_first:
                raise
            findings.append(f"{exc} <- {data[:200]!r}")
            return
        key = outcome.split(":")[0] if outcome.startswith("undecodable") else outcome
        outcomes[key] = outcomes.get(key, 0) + 1

    try:
        one()
    finally:
        target.close()
    return Result(target.name, count, outcomes, findings)
