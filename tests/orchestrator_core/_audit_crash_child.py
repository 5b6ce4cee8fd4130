"""Child process of the audit crash test: mints audited tokens from many tasks at once
and prints each token's resource once ``mint`` has returned it, until it is killed.

    python -m tests.orchestrator_core._audit_crash_child STORE TOKEN_KEYS
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path

from orchestrator.audit import AuditLog
from orchestrator.minter import Minter
from orchestrator.store.sqlite import SqliteStore
from pki._jose import b64url_encode
from pki.tokenkeys import TokenKeyStore

ISS = "spiffe://crash.test/orchestrator/main"
AUD = "spiffe://crash.test/node/n1"
WORKERS = 64


async def main(store_path: Path, keys: Path) -> None:
    store = SqliteStore(store_path)
    await store.open()
    audit = AuditLog(store)
    minter = Minter(TokenKeyStore.open(keys), issuer=ISS, audit=audit, epoch=lambda: 1)
    cnf = b64url_encode(hashlib.sha256(b"caller").digest())
    out = sys.stdout

    async def worker(w: int) -> None:
        i = 0
        while True:
            res = f"c-{w}-{i}"
            await minter.mint(
                sub=ISS, cnf=cnf, aud=AUD, op="container.start", res=res, ttl=60, why="crash"
            )
            # Handed out: from here on the token could be used, so its entry must exist.
            out.write(res + "\n")
            out.flush()
            i += 1

    await asyncio.gather(*(worker(w) for w in range(WORKERS)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
