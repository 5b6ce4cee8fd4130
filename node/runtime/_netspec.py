"""The data-plane fields of a container spec as JSON: one format for the process
runtime's state records and the docker runtime's ``capstan.net`` label."""

from __future__ import annotations

from typing import Any

from node.runtime.base import LinkSpec, PortSpec


def net_to_json(
    service: str, ports: tuple[PortSpec, ...], links: tuple[LinkSpec, ...]
) -> dict[str, Any]:
    return {
        "service": service,
        "ports": [[p.port, p.publish] for p in ports],
        "links": [
            {"service": x.service, "address": x.address, "ports": list(x.ports), "target": x.target}
            for x in links
        ],
    }


def net_from_json(doc: dict[str, Any]) -> tuple[str, tuple[PortSpec, ...], tuple[LinkSpec, ...]]:
    """Records written before links existed have none of these fields: empty."""
    ports = tuple(PortSpec(int(a), int(b)) for a, b in doc.get("ports", []))
    links = tuple(
        LinkSpec(
            service=str(x["service"]),
            address=str(x["address"]),
            ports=tuple(int(q) for q in x["ports"]),
            target=str(x["target"]),
        )
        for x in doc.get("links", [])
    )
    return str(doc.get("service", "")), ports, links
