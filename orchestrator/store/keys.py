"""Every key the orchestrator writes, in one place.

==============================  =====================================================
key                             value
==============================  =====================================================
/apps/<tenant>/<app>            the Application as applied (protobuf bytes)
/workloads/<workload-id>        one desired instance of a service
/assignments/<node>/<workload>  what a node runs; a node watches only its own prefix
/nodes/<node>                   a node's registration (labels, pool, capacity)
/heartbeats/<node>              attached to the node's lease: gone = node silent
/status/<node>/<workload>       last status reported by the node
/tasks/<request-id>             a request the orchestrator waits for a node to answer
/audit/<seq>                    the hash-chained audit log; seq zero-padded to 20 digits
/counters/<name>                monotonic counters (e.g. audit seq, leader epoch)
/jointokens/<sha256>            an unused join token, by the SHA-256 of its secret
/leader                         the current leader and its epoch (leased)
/imagepins/<ref>                the digest an unpinned ref resolves to at apply (admin)
/imageholders/<pinned>/<node>   a node that holds a pinned image: seeded by the admin
                                or seen to receive a verified copy
/orchestrators/<name>           an orchestrator's addresses (leased: gone = down)
/secrets/<tenant>/<name>        a secret's current version: its envelope, never a value
==============================  =====================================================

Each ``<...>`` part is percent-encoded (``quote(part, safe="")``): a SPIFFE id such as
``spiffe://td/node/n1`` becomes one key segment, so ``/assignments/<node>/`` can never
match another node's keys and ``/`` inside ids cannot forge a path.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from orchestrator.errors import StoreError

MAX_KEY = 1024
_KEY_RE = re.compile(r"^/[\x21-\x7e]*$")

APPS = "/apps/"
WORKLOADS = "/workloads/"
ASSIGNMENTS = "/assignments/"
NODES = "/nodes/"
HEARTBEATS = "/heartbeats/"
STATUS = "/status/"
TASKS = "/tasks/"
AUDIT = "/audit/"
AUDIT_BY_APP = "/audit-app/"
COUNTERS = "/counters/"
LEADER = "/leader"
ORCHESTRATORS = "/orchestrators/"
JOIN_TOKENS = "/jointokens/"
IMAGE_PINS = "/imagepins/"
IMAGE_HOLDERS = "/imageholders/"
SECRETS = "/secrets/"


def check_key(key: str) -> str:
    """A key: starts with ``/``, printable ASCII without spaces, at most MAX_KEY bytes."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key) or len(key) > MAX_KEY:
        raise StoreError(f"invalid key {str(key)[:80]!r} (printable ASCII starting with '/')")
    return key


def prefix_end(prefix: str) -> str:
    """The smallest key greater than every key starting with ``prefix`` (etcd's range end)."""
    check_key(prefix)
    # Keys are printable ASCII (< 0x7f), so bumping the last character never overflows.
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def part(value: str) -> str:
    """One key segment: percent-encoded so it never contains ``/``."""
    if not value:
        raise StoreError("a key segment must not be empty")
    return quote(value, safe="")


def unpart(segment: str) -> str:
    return unquote(segment)


def app(tenant: str, name: str) -> str:
    return f"{APPS}{part(tenant)}/{part(name)}"


def tenant_apps(tenant: str) -> str:
    return f"{APPS}{part(tenant)}/"


def secret(tenant: str, name: str) -> str:
    return f"{SECRETS}{part(tenant)}/{part(name)}"


def workload(workload_id: str) -> str:
    return f"{WORKLOADS}{part(workload_id)}"


def assignment(node: str, workload_id: str) -> str:
    return f"{ASSIGNMENTS}{part(node)}/{part(workload_id)}"


def node_assignments(node: str) -> str:
    return f"{ASSIGNMENTS}{part(node)}/"


def node(node_id: str) -> str:
    return f"{NODES}{part(node_id)}"


def heartbeat(node_id: str) -> str:
    return f"{HEARTBEATS}{part(node_id)}"


def status(node_id: str, workload_id: str) -> str:
    return f"{STATUS}{part(node_id)}/{part(workload_id)}"


def task(request_id: str) -> str:
    return f"{TASKS}{part(request_id)}"


def audit(seq: int) -> str:
    if seq < 0:
        raise StoreError("audit sequence numbers are >= 0")
    return f"{AUDIT}{seq:020d}"


_SEQ_SPAN = 10**20


def audit_by_app(tenant: str, app: str, seq: int) -> str:
    """An application's copy of audit entry ``seq``, newest first under its prefix (the
    sequence number is stored inverted), so its latest events are one short range."""
    if seq < 0:
        raise StoreError("audit sequence numbers are >= 0")
    return f"{audit_by_app_prefix(tenant, app)}{_SEQ_SPAN - 1 - seq:020d}"


def audit_by_app_prefix(tenant: str, app: str) -> str:
    return f"{AUDIT_BY_APP}{part(tenant)}/{part(app)}/"


def counter(name: str) -> str:
    return f"{COUNTERS}{part(name)}"


def orchestrator(name: str) -> str:
    return f"{ORCHESTRATORS}{part(name)}"


def join_token(digest: str) -> str:
    return f"{JOIN_TOKENS}{part(digest)}"


def image_pin(ref: str) -> str:
    return f"{IMAGE_PINS}{part(ref)}"


def image_holders(pinned: str) -> str:
    return f"{IMAGE_HOLDERS}{part(pinned)}/"


def image_holder(pinned: str, node: str) -> str:
    return f"{image_holders(pinned)}{part(node)}"
