"""A short seeded fuzz run of every parser a hostile peer feeds (``bench/fuzz.py`` runs
100,000 cases each). A finding fails with hypothesis's shrunk input."""

from __future__ import annotations

import pytest

from tests.fuzz.targets import FACTORIES, run

CASES = {"token": 400, "topology": 300, "volume": 200, "image": 150, "request": 400}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_fuzz_seeded_run_finds_nothing(name: str) -> None:
    result = run(FACTORIES[name](), cases=CASES[name], seed=20261130)
    assert result.cases >= CASES[name] // 2
    # Both sides of every parser were reached: some inputs refused with a clear error,
    # and (except for the hostile-only strategies) some accepted.
    assert any(k.startswith("refused") or "refused" in k for k in result.outcomes), result
