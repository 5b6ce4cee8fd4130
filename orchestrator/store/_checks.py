"""Input rules every store enforces the same way, so the two stay interchangeable:
what one refuses, the other refuses too, before anything is written."""

from __future__ import annotations

import math
from collections.abc import Sequence

from orchestrator.errors import StoreError
from orchestrator.store import Compare, Delete, Get, Put, TxnOp
from orchestrator.store.keys import check_key

# etcd refuses a request over 1.5 MiB (its default --max-request-bytes). One value
# is capped well below that so that its key, a lease and a transaction's other
# operations still fit; a whole transaction is capped at MAX_REQUEST.
MAX_VALUE = 1024 * 1024
MAX_REQUEST = 1536 * 1024 - 64 * 1024
MAX_LEASE_TTL = 7 * 24 * 3600.0
_OP_OVERHEAD = 16  # protobuf framing per operation, rounded up


def check_put(key: str, value: bytes, lease: int | None) -> None:
    check_key(key)
    if not isinstance(value, bytes):
        raise StoreError(f"{key}: values are bytes, got {type(value).__name__}")
    if len(value) > MAX_VALUE:
        raise StoreError(f"{key}: value of {len(value)} bytes exceeds {MAX_VALUE}")
    if lease is not None and (isinstance(lease, bool) or not isinstance(lease, int)):
        raise StoreError(f"{key}: lease must be a lease id")


def check_compare(compare: Compare) -> None:
    check_key(compare.key)
    if compare.op not in ("==", "!=", "<", ">"):
        raise StoreError(f"unknown compare operator {compare.op!r}")
    if compare.target == "value":
        if not isinstance(compare.operand, bytes):
            raise StoreError("a value compare needs bytes")
    elif compare.target in ("revision", "create_revision", "version", "lease"):
        if isinstance(compare.operand, bool) or not isinstance(compare.operand, int):
            raise StoreError(f"a {compare.target} compare needs an int")
    else:
        raise StoreError(f"unknown compare target {compare.target!r}")


def check_branch(ops: Sequence[TxnOp]) -> None:
    """etcd refuses a txn that writes one key twice; so do we, to stay interchangeable."""
    written: list[tuple[str, bool]] = []
    for op in ops:
        if isinstance(op, Put):
            check_put(op.key, op.value, op.lease)
            written.append((op.key, False))
        elif isinstance(op, Delete):
            check_key(op.key)
            written.append((op.key, op.prefix))
        elif isinstance(op, Get):
            check_key(op.key)
        else:
            raise StoreError(f"unknown transaction operation {op!r}")
    for i, (key, prefix) in enumerate(written):
        for other, other_prefix in written[i + 1 :]:
            if (
                key == other
                or (prefix and other.startswith(key))
                or (other_prefix and key.startswith(other))
            ):
                raise StoreError(f"a transaction writes {key!r} more than once")


def check_txn(
    compares: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp]
) -> None:
    for compare in compares:
        check_compare(compare)
    for branch in (success, failure):
        check_branch(branch)
    size = sum(
        len(c.key) + (len(c.operand) if isinstance(c.operand, bytes) else 8) + _OP_OVERHEAD
        for c in compares
    )
    for op in (*success, *failure):
        size += len(op.key) + _OP_OVERHEAD + (len(op.value) if isinstance(op, Put) else 0)
    if size > MAX_REQUEST:
        raise StoreError(f"a transaction of {size} bytes exceeds {MAX_REQUEST}: split it")


def check_ttl(ttl: float) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise StoreError("ttl must be a number of seconds")
    if not math.isfinite(ttl) or not 0 < ttl <= MAX_LEASE_TTL:
        raise StoreError(f"ttl must be in (0, {MAX_LEASE_TTL:g}] seconds, got {ttl!r}")
    return float(ttl)
