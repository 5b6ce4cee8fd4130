"""What the orchestrator counts, for Prometheus (served by ``protos.wire.metrics``).

Module-level metrics in the orchestrator's own registry: the hooks (authorization
interceptor, minter, scheduler, gateway, store) only increment them. Labels are
coarse on purpose: methods, operations, reasons and node names, never tenants'
application names or caller identities.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

CALLS = Counter(
    "capstan_orchestrator_calls", "Authorized calls by method", ["method"], registry=REGISTRY
)
REFUSALS = Counter(
    "capstan_orchestrator_refusals",
    "Refused calls by method and reason",
    ["method", "reason"],
    registry=REGISTRY,
)
TOKENS_MINTED = Counter(
    "capstan_tokens_minted", "Capability tokens minted by operation", ["op"], registry=REGISTRY
)
HEARTBEATS = Counter(
    "capstan_node_heartbeats", "Node reports received", ["node"], registry=REGISTRY
)


# One child per node, looked up once (as node.metrics does): labels() costs ~14 µs,
# and at 1,000 nodes reporting every second that is on the event loop's path a
# thousand times a second.
@functools.cache
def heartbeat_counter(node: str) -> Counter:
    """``HEARTBEATS`` of one node."""
    return HEARTBEATS.labels(node=node)


PLACEMENT_SECONDS = Histogram(
    "capstan_placement_seconds",
    "Time to place one instance (scheduler filter and score)",
    registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
STORE_SECONDS = Histogram(
    "capstan_store_seconds",
    "Store operation latency",
    ["op"],
    registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5),
)
RECONCILE_QUEUE = Gauge(
    "capstan_reconcile_queue",
    "Instances whose reported state is not yet what is wanted",
    registry=REGISTRY,
)


class CertExpiry(Collector):
    """``capstan_certificate_expiry_seconds{kind,name}``: seconds until each known
    certificate ends (negative once it has), read when scraped."""

    def __init__(self, certificates: Callable[[], Iterable[tuple[str, str, float]]]) -> None:
        self._certificates = certificates

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "capstan_certificate_expiry_seconds",
            "Seconds until the certificate expires",
            labels=["kind", "name"],
        )
        now = time.time()
        for kind, name, not_after in self._certificates():
            if not_after > 0:
                family.add_metric([kind, name], not_after - now)
        yield family


def watch_certificates(certificates: Callable[[], Iterable[tuple[str, str, float]]]) -> None:
    """Register (once per process: the latest orchestrator wins) the expiry collector."""
    global _cert_collector  # noqa: PLW0603 - one collector per registry
    if _cert_collector is not None:
        REGISTRY.unregister(_cert_collector)
    _cert_collector = CertExpiry(certificates)
    REGISTRY.register(_cert_collector)


_cert_collector: CertExpiry | None = None


def watch_reconcile_queue(count: Callable[[], int]) -> None:
    RECONCILE_QUEUE.set_function(lambda: float(count()))


def time_store(store: Any) -> None:
    """Time the store's operations (an instance's methods replaced by timed ones)."""
    for name in ("get", "range", "put", "delete", "txn"):
        method = getattr(store, name, None)
        if method is None:
            continue
        setattr(store, name, _timed(method, STORE_SECONDS.labels(op=name)))


def _timed(method: Callable[..., Any], histogram: Any) -> Callable[..., Any]:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        finally:
            histogram.observe(time.perf_counter() - start)

    return timed
