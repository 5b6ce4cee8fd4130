"""The node's local audit trail of refusals (JSON lines, hash-chained).

Kept on disk so the orchestrator can collect it later; each line carries the SHA-256
of the previous line so a removed or edited line is detectable.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


class NodeAudit:
    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._prev = self._last_hash()

    def _last_hash(self) -> str:
        try:
            with open(self._path, "rb") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return GENESIS
        return hashlib.sha256(lines[-1]).hexdigest() if lines else GENESIS

    def record(self, event: str, **fields: Any) -> None:
        with self._lock:
            entry = {"event": event, **fields, "prev": self._prev}
            line = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line + b"\n")
            finally:
                os.close(fd)
            self._prev = hashlib.sha256(line).hexdigest()

    def entries(self) -> list[dict[str, Any]]:
        try:
            with open(self._path, "rb") as fh:
                return [json.loads(line) for line in fh if line.strip()]
        except FileNotFoundError:
            return []

    def verify(self) -> int | None:
        """Index of the first entry whose chain is broken, or None when intact."""
        prev = GENESIS
        try:
            lines = self._path.read_bytes().splitlines()
        except FileNotFoundError:
            return None
        for i, line in enumerate(lines):
            if json.loads(line).get("prev") != prev:
                return i
            prev = hashlib.sha256(line).hexdigest()
        return None
