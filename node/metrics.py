"""What a node agent counts, for Prometheus (served by ``protos.wire.metrics``)."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

CALLS = Counter(
    "capstan_node_calls", "Authorized NodeService calls by method", ["method"], registry=REGISTRY
)
REFUSALS = Counter(
    "capstan_node_refusals",
    "Refused NodeService calls by method and reason",
    ["method", "reason"],
    registry=REGISTRY,
)
TOKEN_VERIFICATIONS = Counter(
    "capstan_token_verifications",
    "Capability token verifications by result (ok, or the refusal reason)",
    ["result"],
    registry=REGISTRY,
)
HEARTBEATS_SENT = Counter(
    "capstan_node_heartbeats_sent", "Reports sent to the orchestrator", registry=REGISTRY
)


# A labelled counter's child, looked up once per label value: ``labels()`` costs about
# 14 us here (35x an ``inc()``), and authorized calls count twice each. The label
# values are bounded (NodeService's methods; the verifier's result words).


@functools.cache
def call_counter(method: str) -> Counter:
    """``CALLS`` of one method."""
    return CALLS.labels(method=method)


@functools.cache
def verification_counter(result: str) -> Counter:
    """``TOKEN_VERIFICATIONS`` of one result."""
    return TOKEN_VERIFICATIONS.labels(result=result)


class CertExpiry(Collector):
    def __init__(self, not_after: Callable[[], float]) -> None:
        self._not_after = not_after

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "capstan_certificate_expiry_seconds",
            "Seconds until the node's certificate expires",
            labels=["kind", "name"],
        )
        # Between a renewal's two files the read may fail: the next scrape has it.
        with contextlib.suppress(OSError, ValueError):
            family.add_metric(["node", "self"], self._not_after() - time.time())
        yield family


_cert_collector: CertExpiry | None = None


def watch_certificate(not_after: Callable[[], float]) -> None:
    global _cert_collector  # noqa: PLW0603 - one collector per registry
    if _cert_collector is not None:
        REGISTRY.unregister(_cert_collector)
    _cert_collector = CertExpiry(not_after)
    REGISTRY.register(_cert_collector)
