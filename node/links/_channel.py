"""The channel a source node opens a tunnel on."""

from __future__ import annotations

from pathlib import Path

import grpc

from protos.wire.channel import expecting

MAX_MESSAGE = 1024 * 1024
TUNNEL_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]


def tunnel_channel(
    cert: Path, key: Path, ca: Path, address: str, node_id: str, token: str
) -> grpc.Channel:
    """A channel to node ``node_id`` at ``address``: its certificate must name exactly
    that node; ours is the pair ``token`` is bound to (a renewal may be under way)."""
    # Imported here: node.renewal imports the server, which imports us.
    from node.renewal import credentials_for_token

    # The handshake itself accepts only node_id (protos.wire.channel.expecting).
    return grpc.secure_channel(
        address,
        credentials_for_token(cert, key, ca, token),
        options=[*TUNNEL_CHANNEL_OPTIONS, *expecting(node_id)],
    )
