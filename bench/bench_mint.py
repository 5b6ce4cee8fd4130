"""Audited token minting on the SQLite store: group commit against one write per token.

    python bench/bench_mint.py [--tokens 5000] [--workers 256]

Every minted token is audited, and ``Minter.mint`` returns only once its entry is
committed (synchronous=FULL: on disk). Three series in one run, on one store file:
minting alone (no audit: the signing ceiling), audited minting one at a time (each
token waits for its own fsync'd transaction: the baseline), and audited minting from
``--workers`` concurrent tasks (entries queued during a commit share the next one).
Goal: audited minting >= 5,000 tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.audit import AuditLog
from orchestrator.minter import Minter
from orchestrator.store.sqlite import SqliteStore
from pki._jose import b64url_encode
from pki.tokenkeys import TokenKeyStore

ISS = "spiffe://bench.test/orchestrator/main"
AUD = "spiffe://bench.test/node/node-1"
GOAL = 5000.0


async def run(args: argparse.Namespace, root: Path) -> int:
    keys = TokenKeyStore.create(root / "token-keys")
    store = SqliteStore(root / "store.db")
    await store.open()
    audit = AuditLog(store)
    minter = Minter(keys, issuer=ISS, audit=audit, epoch=lambda: 1)
    cnf = b64url_encode(hashlib.sha256(b"caller").digest())

    async def one(i: int, audited: bool = True) -> None:
        await minter.mint(
            sub=ISS, cnf=cnf, aud=AUD, op="container.start", res=f"c-{i}", ttl=60,
            why="bench", audit=audited,
        )  # fmt: skip

    async def concurrent(n: int, workers: int) -> float:
        counter = iter(range(n))

        async def worker() -> None:
            for i in counter:
                await one(i)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return n / (time.perf_counter() - start)

    start = time.perf_counter()
    for i in range(args.tokens):
        await one(i, audited=False)
    alone = args.tokens / (time.perf_counter() - start)

    serial_n = max(50, args.tokens // 20)  # one fsync each: keep this series short
    start = time.perf_counter()
    for i in range(serial_n):
        await one(i)
    serial = serial_n / (time.perf_counter() - start)

    batches_before = audit.batches
    grouped = await concurrent(args.tokens, args.workers)
    per_batch = args.tokens / max(1, audit.batches - batches_before)
    ok, message = await audit.verify()
    await store.close()

    print(f"load average {os.getloadavg()[0]:.2f}; SQLite WAL synchronous=FULL")
    print(f"mint, not audited                 {alone:9.0f} tokens/s")
    print(f"audited, one at a time (baseline) {serial:9.0f} tokens/s")
    print(
        f"audited, {args.workers} concurrent         {grouped:9.0f} tokens/s  "
        f"({per_batch:.0f} entries per commit)"
    )
    print(f"group commit / one at a time      {grouped / serial:9.1f}x")
    print(f"audited / not audited             {grouped / alone:9.2f}x")
    verdict = "ok" if grouped >= GOAL else "MISSED"
    print(f"audited minting {grouped:.0f}/s (goal >= {GOAL:.0f}/s): {verdict}; chain: {message}")
    return 0 if ok and grouped >= GOAL else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
