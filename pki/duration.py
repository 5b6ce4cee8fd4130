"""Durations written the way operators type them: ``90s``, ``15m``, ``24h``, ``30d``."""

from __future__ import annotations

import re

from pki.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"\A([1-9][0-9]{0,8})([smhd])\Z")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (a positive integer and one unit of s, m, h, d); else ConfigError."""
    match = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(
            f"invalid duration {text!r}: use a number and a unit, e.g. 90s, 15m, 24h, 30d"
        )
    return float(int(match.group(1)) * _UNITS[match.group(2)])


def format_duration(seconds: float) -> str:
    """The largest exact unit: 86400 -> '1d', 5400 -> '90m'."""
    whole = int(seconds)
    for unit in ("d", "h", "m"):
        if whole and whole % _UNITS[unit] == 0:
            return f"{whole // _UNITS[unit]}{unit}"
    return f"{whole}s"
