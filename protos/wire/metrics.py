"""The Prometheus endpoint every Capstan server offers (orchestrator and node agent).

One helper for both sides: ``serve_metrics`` starts prometheus-client's HTTP server
for one registry on ``HOST:PORT``. The default is loopback: the figures (methods
called, refusals, node names) are for the operator's own scraper, not the network.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from pki.errors import ConfigError

__all__ = ["DEFAULT_METRICS_LISTEN", "MetricsEndpoint", "serve_metrics"]

DEFAULT_METRICS_LISTEN = "127.0.0.1:0"


class MetricsEndpoint:
    """A running endpoint: ``address`` is ``HOST:PORT`` with the port actually bound."""

    def __init__(self, server: Any, thread: Any, host: str) -> None:
        self._server = server
        self._thread = thread
        self.address = f"{host}:{server.server_port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(listen: str, registry: CollectorRegistry) -> MetricsEndpoint:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--metrics-listen must be HOST:PORT, got {listen!r}")
    try:
        server, thread = start_http_server(int(port), addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from None
    return MetricsEndpoint(server, thread, host)
