"""The audit log commits concurrent entries together, and loses none: not on a crash
(a real SIGKILL mid-stream), not when a waiting caller is cancelled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from orchestrator import audit as audit_module
from orchestrator.audit import AuditLog
from orchestrator.store import keys
from orchestrator.store.sqlite import SqliteStore
from pki.tokenkeys import TokenKeyStore

from ._harness import StoreHarness

REPO = Path(__file__).resolve().parents[2]


async def test_concurrent_entries_share_transactions_and_keep_one_chain(
    harness: StoreHarness,
) -> None:
    async with harness.opened() as store:
        log = AuditLog(store, harness.clock)
        seqs = await asyncio.gather(*(log.record("e", n=n) for n in range(250)))
        assert sorted(seqs) == list(range(250))
        # Arrival order is chain order.
        assert seqs == list(range(250))
        assert log.batches < 250 / 2  # grouped; a batch never exceeds MAX_BATCH
        assert log.batches >= 250 / audit_module.MAX_BATCH
        ok, message = await log.verify()
        assert ok, message
        entries = await log.entries()
        assert [e["n"] for e in entries] == list(range(250))
        # A second writer on the same store continues the chain after reloading.
        other = AuditLog(store, harness.clock)
        assert await other.record("other") == 250
        assert await log.record("again") == 251
        ok, message = await log.verify()
        assert ok, message


async def test_a_cancelled_caller_does_not_lose_or_stall_others(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        log = AuditLog(store, harness.clock)
        first = asyncio.create_task(log.record("cancelled"))
        rest = [asyncio.create_task(log.record("kept", n=n)) for n in range(20)]
        await asyncio.sleep(0)
        first.cancel()
        assert [await t for t in rest] == list(range(1, 21))
        ok, message = await log.verify()
        assert ok, message


async def test_a_failed_write_fails_its_callers_and_the_next_batch_still_lands(
    harness: StoreHarness,
) -> None:
    async with harness.opened() as store:
        log = AuditLog(store, harness.clock)
        await log.record("ok")
        bad = asyncio.gather(
            *(log.record("bad", blob=b"") for _ in range(3)), return_exceptions=True
        )
        # bytes are not JSON: the batch fails before reaching the store, nothing is written.
        results = await bad
        assert all(isinstance(r, TypeError) for r in results)
        assert await log.record("after") == 1
        ok, message = await log.verify()
        assert ok, message


def test_sigkill_while_minting_loses_no_handed_out_token(tmp_path: Path) -> None:
    """Every token the minter returned before a real SIGKILL has its audit entry on disk."""
    TokenKeyStore.create(tmp_path / "token-keys")
    store_path = tmp_path / "store.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.orchestrator_core._audit_crash_child",
            str(store_path),
            str(tmp_path / "token-keys"),
        ],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    )
    handed_out: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            handed_out.append(line.strip())
            if len(handed_out) >= 1500:
                break
        child.send_signal(signal.SIGKILL)  # mid-stream: batches are in flight
        handed_out.extend(line.strip() for line in child.stdout)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert len(handed_out) >= 1500

    async def check() -> tuple[bool, str, set[str], int]:
        async with SqliteStore(store_path) as store:
            log = AuditLog(store)
            ok, message = await log.verify()
            entries = await log.entries()
            counter = await store.get(keys.counter("audit"))
            assert counter is not None
            return ok, message, {e["res"] for e in entries}, len(entries)

    ok, message, recorded, count = asyncio.run(check())
    assert ok, message
    missing = [r for r in handed_out if r not in recorded]
    assert missing == [], f"{len(missing)} handed-out tokens have no audit entry"
    assert count >= len(handed_out)
