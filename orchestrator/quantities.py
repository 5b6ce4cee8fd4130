"""Quantities and limits of a topology file: CPU and memory as users write them, and
the orchestrator's own caps. The rules a node applies to the rest are
``protos.wire.rules``; the cluster-wide caps here are at least as strict as the node's.
Each parser returns ``(value, None)`` or ``(None, message)``.
"""

from __future__ import annotations

import math
import re

from protos.wire.rules import MAX_MEMORY, MIN_MEMORY

MAX_CPU = 1024.0
MAX_REPLICAS = 10_000
MAX_SERVICES = 256
MAX_PORTS = 64
MAX_CONSTRAINTS = 64

# Binary suffixes only where they are spelled Ki/Mi/Gi/Ti; K/M/G/T are decimal. No
# fractions and no lower-case "m" (which means milli elsewhere and would be a trap).
_MEMORY_RE = re.compile(r"^(0|[1-9][0-9]{0,17})(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_MEMORY_UNITS = {
    None: 1,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
}


def parse_cpu(value: float) -> tuple[float | None, str | None]:
    """Cores: finite, > 0, at most MAX_CPU, in steps of 0.001 (the runtime's granularity)."""
    if not math.isfinite(value):
        return None, "must be a finite number"
    if value <= 0:
        return None, f"must be > 0, got {value:g} (omit resources.cpu to request none)"
    if value > MAX_CPU:
        return None, f"must be at most {MAX_CPU:g} cores, got {value:g}"
    millis = round(value * 1000)
    if millis == 0 or abs(value * 1000 - millis) > 1e-6:
        return None, f"must be a multiple of 0.001 cores, got {value!r}"
    return millis / 1000, None


def parse_memory(value: int | str) -> tuple[int | None, str | None]:
    """Bytes from an int or ``<digits>[Ki|Mi|Gi|Ti|K|M|G|T]``; at least MIN_MEMORY."""
    if isinstance(value, str):
        match = _MEMORY_RE.fullmatch(value)
        if match is None:
            return None, (
                f"{value[:40]!r} is not a memory size (an integer number of bytes, "
                "or an integer with one of Ki Mi Gi Ti K M G T, e.g. 64Mi)"
            )
        number = int(match.group(1)) * _MEMORY_UNITS[match.group(2)]
    else:
        number = value
    if number <= 0:
        return None, "must be > 0 (omit resources.memory to request none)"
    if number < MIN_MEMORY:
        return None, f"must be at least 4Mi ({MIN_MEMORY} bytes), got {number}"
    if number > MAX_MEMORY:
        return None, f"must be at most 1Pi ({MAX_MEMORY} bytes), got {number}"
    return number, None
