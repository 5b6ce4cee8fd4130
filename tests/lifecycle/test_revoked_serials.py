"""The orchestrator's revocation source: a revocation it writes itself counts from the
next call; one written by another process (``capstan pki revoke``) within
``CHECK_EVERY`` seconds of the injected clock, and held streams are woken then."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from orchestrator.revocations import CHECK_EVERY, RevokedSerials
from pki.authority import Authority
from tests.waiting import FakeClock

TD = "revoked.test"
REPO = Path(__file__).resolve().parents[2]


def test_own_revocation_next_call_another_process_within_the_interval(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    authority = Authority.init(pki, TD)
    ours, theirs = authority.issue("node", "ours"), authority.issue("node", "theirs")
    clock = FakeClock(100.0)
    revoked = RevokedSerials(pki, clock=clock)
    rings: list[int] = []
    revoked.bell.ring = lambda: rings.append(1)  # type: ignore[method-assign]
    assert revoked() == frozenset()

    # What RevokeNode does, in this process: counted at once, the clock unmoved.
    authority.revoke(ours.serial, "key-compromise")
    assert revoked() == {ours.serial}
    assert rings == [1]

    # Another process (an operator's `capstan pki revoke`): seen within the interval.
    subprocess.run(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from pki.authority import Authority;"
         "Authority.open(Path(sys.argv[1])).revoke(int(sys.argv[2]), 'key-compromise')",
         str(pki), str(theirs.serial)],
        cwd=REPO, check=True, timeout=60,
    )
    clock.advance(CHECK_EVERY)
    assert revoked() == {ours.serial, theirs.serial}
    assert rings == [1, 1]
