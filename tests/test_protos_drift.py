"""The committed generated code must be exactly what the .proto files generate."""

from __future__ import annotations

from pathlib import Path

from protos import _generate


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    generated = _generate.generate(tmp_path)
    assert generated, "no .proto files found"
    committed = {
        p.name
        for p in _generate.PROTO_DIR.iterdir()
        if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))
    }
    assert committed == {p.name for p in generated}, "stale or missing generated files"
    for path in generated:
        ours = (_generate.PROTO_DIR / path.name).read_bytes()
        assert ours == path.read_bytes(), (
            f"protos/{path.name} drifted: run python -m protos._generate"
        )
