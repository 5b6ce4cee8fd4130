"""The node's data plane: links between services, tunnels between nodes, published
ports. See ``manager`` for how it works."""

from node.links._channel import tunnel_channel
from node.links.manager import LinkManager, LinkRefused, parse_res

__all__ = ["LinkManager", "LinkRefused", "parse_res", "tunnel_channel"]
