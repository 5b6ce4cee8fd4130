"""The replay cache on its own: once per jti, bounded, fail closed, clock-safe."""

from __future__ import annotations

import pytest

from pki.errors import ConfigError, ExpiredToken, InvalidToken, ReplayedToken
from pki.replay import ReplayCache


def test_accepts_each_jti_once() -> None:
    cache = ReplayCache()
    cache.check_and_add("a", 160.0, 100.0)
    with pytest.raises(ReplayedToken):
        cache.check_and_add("a", 160.0, 101.0)
    cache.check_and_add("b", 160.0, 101.0)
    assert len(cache) == 2 and "a" in cache


def test_entries_are_forgotten_once_their_token_would_be_refused_anyway() -> None:
    cache = ReplayCache()
    cache.check_and_add("a", 160.0, 100.0)
    cache.check_and_add("b", 200.0, 100.0)
    cache.check_and_add("c", 300.0, 160.0)  # purges "a" (expired at 160)
    assert "a" not in cache and len(cache) == 2


def test_full_cache_refuses_rather_than_forgets() -> None:
    cache = ReplayCache(max_entries=2)
    cache.check_and_add("a", 160.0, 100.0)
    cache.check_and_add("b", 170.0, 100.0)
    with pytest.raises(InvalidToken) as info:
        cache.check_and_add("c", 170.0, 100.0)
    assert type(info.value) is InvalidToken
    assert "c" not in cache and {"a", "b"} == {j for j in ("a", "b", "c") if j in cache}
    # Still refusing replays of what it remembers.
    with pytest.raises(ReplayedToken):
        cache.check_and_add("a", 160.0, 100.0)
    # Room again once "a" has expired.
    cache.check_and_add("c", 170.0, 160.0)
    assert "a" not in cache and "c" in cache


def test_clock_stepping_back_cannot_revive_a_forgotten_jti() -> None:
    cache = ReplayCache()
    cache.check_and_add("a", 160.0, 100.0)
    cache.check_and_add("b", 400.0, 300.0)  # "a" forgotten: its token expired at 160
    assert "a" not in cache
    # The wall clock steps back to 120: the token of "a" looks valid again, but the
    # cache has seen time 300 and refuses anything that expired before that.
    with pytest.raises(ExpiredToken):
        cache.check_and_add("a", 160.0, 120.0)


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        ReplayCache(max_entries=0)
