"""Which uid an instance runs as: one per tenant, never the agent's, never root.

A tenant's uid is derived from its name (the same on every node, so a volume that
moves keeps making sense) and kept in ``<state_dir>/uids.json``; the rare tenant
whose derived uid another tenant already holds on this node takes the next free
one. The range sits far above distributions' system and login users and the usual
subordinate-uid ranges of rootless containers. The gid equals the uid.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from pathlib import Path

from node.errors import RuntimeFailure

UID_BASE = 1 << 24
UID_SPAN = 1 << 30
UIDS_FILE = "uids.json"


def tenant_of(workload_id: str) -> str:
    """The tenant a workload id starts with (``acme.shop.web.0`` or ``acme/shop/web``)."""
    return re.split(r"[./]", workload_id, maxsplit=1)[0]


def derived_uid(tenant: str, attempt: int = 0) -> int:
    digest = hashlib.sha256(f"capstan-uid:{tenant}:{attempt}".encode()).digest()
    return UID_BASE + int.from_bytes(digest[:8], "big") % UID_SPAN


class TenantUids:
    """The tenant -> uid table of one node."""

    def __init__(self, state_dir: Path) -> None:
        self._path = Path(state_dir) / UIDS_FILE

    def uid_for(self, tenant: str) -> int:
        try:
            fd = os.open(self._path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise RuntimeFailure(f"uid table: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            table = self._load()
            if tenant in table:
                return table[tenant]
            taken = set(table.values())
            attempt = 0
            while (uid := derived_uid(tenant, attempt)) in taken:
                attempt += 1
            table[tenant] = uid
            self._store(table)
            return uid
        finally:
            os.close(fd)

    def _load(self) -> dict[str, int]:
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"uid table {self._path}: {exc}") from None
        return {str(k): int(v) for k, v in raw.items()}

    def _store(self, table: dict[str, int]) -> None:
        tmp = self._path.with_suffix(".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(table, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise RuntimeFailure(f"uid table {self._path}: {exc.strerror}") from None
