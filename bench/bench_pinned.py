"""What checking a pinned image's bytes costs at import, against the unpinned import,
same run.

    python bench/bench_pinned.py [--rounds 7]

Each round exports the busybox image from a seeded process runtime, then imports it
into two fresh process runtimes through ``import_image_checked``: once unpinned (tag
check only), once pinned (``name@sha256:<id>``: the config's and every layer's
SHA-256 checked on the spooled archive before loading). Rounds alternate the order
so machine noise hits both alike. Prints the median of each and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from node.runtime.process import ProcessRuntime, ensure_busybox_image
from node.service import import_image_checked

IMAGE = "local/busybox:1"


def _import(root: Path, name: str, ref: str, archive: bytes) -> float:
    runtime = ProcessRuntime(f"bench-{name}", root / name)
    try:
        start = time.perf_counter()
        import_image_checked(runtime, ref, [archive], root / name / "spool")
        return time.perf_counter() - start
    finally:
        runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seed = ProcessRuntime("bench-seed", root / "seed")
        try:
            ensure_busybox_image(seed)
            digest = seed.image_ids()[IMAGE]
            archive = b"".join(seed.image_export(IMAGE))
        finally:
            seed.close()
        plain: list[float] = []
        pinned: list[float] = []
        for i in range(args.rounds):
            order = [("plain", IMAGE, plain), ("pinned", f"{IMAGE}@{digest}", pinned)]
            for label, ref, out in order if i % 2 == 0 else reversed(order):
                out.append(_import(root, f"{label}-{i}", ref, archive))
    p, q = statistics.median(plain), statistics.median(pinned)
    print(f"archive: {len(archive) / 1e6:.1f} MB, {args.rounds} rounds")
    print(f"unpinned import (tag check only): median {p * 1000:.1f} ms")
    print(f"pinned import (digest verified):  median {q * 1000:.1f} ms")
    print(f"ratio pinned/unpinned: {q / p:.2f}x")


if __name__ == "__main__":
    main()
