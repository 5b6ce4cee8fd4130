"""How the objects a tenant owns are named on a node: the one rule both sides use.

Every container and volume name starts with ``<tenant>.<app>.``, so a name says
whose it is. The orchestrator makes names with these functions; a node refuses a
container whose volumes belong to another tenant or application than the container
itself (the token's ``res``), so no application can mount another's data, whatever
names the tenants chose (regression: volumes were named ``<app>.<volume>`` and two
tenants' same-named applications shared them).

Names stay within a node's 63-character limit: a tenant, application or volume
label longer than its share is replaced by ``h_`` and a SHA-256 prefix of it. A DNS
label never holds ``_``, so a shortened form never equals a real label.
"""

from __future__ import annotations

import hashlib

#: Longest tenant or application label kept as is (two of them and their dots take 42).
OWNER_PART = 20
#: What is left of 63 characters for the rest of a container or volume name.
REST = 63 - 2 * (OWNER_PART + 1)


def _short(label: str, limit: int) -> str:
    if len(label) <= limit:
        return label
    return "h_" + hashlib.sha256(label.encode()).hexdigest()[: limit - 2]


def owner(tenant: str, app: str) -> str:
    """The ``<tenant>.<app>`` prefix (without the final dot) of everything the app owns."""
    return f"{_short(tenant, OWNER_PART)}.{_short(app, OWNER_PART)}"


def container_name(tenant: str, app: str, service: str, index: int, spec_hash: str) -> str:
    """Deterministic: the same workload and spec always get the same name."""
    short = spec_hash.removeprefix("sha256:")[:10]
    rest = f"{service}.{index}.{short}"
    if len(rest) > REST:
        ident = f"{tenant}/{app}/{service}/{index}".encode()
        rest = f"w{hashlib.sha256(ident).hexdigest()[: REST - 12]}.{short}"
    return f"{owner(tenant, app)}.{rest}"


def volume_name(tenant: str, app: str, volume: str) -> str:
    """A node-local volume is per application (a moved instance finds its data) and
    per tenant (another tenant's same-named application never does)."""
    return f"{owner(tenant, app)}.{_short(volume, REST)}"


def owner_of(name: str) -> str | None:
    """The ``<tenant>.<app>`` a name belongs to; None for a name without one."""
    parts = name.split(".")
    if len(parts) < 3 or not all(parts[:3]):
        return None
    return f"{parts[0]}.{parts[1]}"
