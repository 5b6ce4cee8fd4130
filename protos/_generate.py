"""Regenerate the committed protobuf/gRPC Python code from the .proto files.

Run ``python -m protos._generate`` after editing a .proto; the test suite runs the
same generation into a temp dir and fails on any drift from what is committed.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent
ROOT = PROTO_DIR.parent


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Generate into ``out_root/protos/`` and return the generated files."""
    (out_root / "protos").mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(p.relative_to(ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    return sorted(
        p
        for p in (out_root / "protos").iterdir()
        if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))
    )


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))  # fails before anything committed is touched
        for old in PROTO_DIR.glob("*_pb2*.py*"):
            old.unlink()
        for path in fresh:
            shutil.copy(path, PROTO_DIR / path.name)
            print(f"wrote protos/{path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
