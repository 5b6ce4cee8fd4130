"""One line per audit event for ``capstan describe app``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def event_time(e: dict[str, Any]) -> str:
    """The entry's time, UTC to the second (``2026-11-30T20:41:02Z``)."""
    return datetime.fromtimestamp(float(e.get("at", 0)), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_line(e: dict[str, Any]) -> str:
    """``time event subject node``, then a replica change and the reason when the event has
    them (an autoscale decision must say why)."""
    line = f"{e['event']} {e.get('workload', e.get('service', ''))} {e.get('node', '')}".strip()
    if "replicas_to" in e:
        line += f" {e.get('replicas_from', '?')} -> {e['replicas_to']}"
    if e.get("why"):
        line += f": {e['why']}"
    return f"{event_time(e)} {line}"


def app_of(e: dict[str, Any]) -> tuple[str, str] | None:
    """The application ``(tenant, app)`` an audit event is about, if any (the rule of
    ``of_app``: audit entries are indexed by it)."""
    tenant, app = e.get("tenant"), e.get("app")
    if isinstance(tenant, str) and isinstance(app, str) and tenant and app:
        return tenant, app
    parts = str(e.get("workload", "")).split(".")
    if len(parts) >= 3 and parts[0] and parts[1]:
        return parts[0], parts[1]
    return None


def of_app(e: dict[str, Any], tenant: str, app: str) -> bool:
    """Whether an audit event is about application ``tenant/app``: by tenant AND name
    (regression: another tenant's same-named application showed up), or by a
    workload id ``tenant.app.`` (tenant and app are DNS labels: no dot inside)."""
    if e.get("app") == app and e.get("tenant") == tenant:
        return True
    return str(e.get("workload", "")).startswith(f"{tenant}.{app}.")
