"""The channel a source node opens a tunnel on."""

from __future__ import annotations

from pathlib import Path

import grpc

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
    # Imported here: node.tasks and node.renewal import the server, which imports us.
    from node.renewal import credentials_for_token
    from node.tasks import check_source_identity

    check_source_identity(address, node_id, cert=cert, key=key, ca=ca)
    return grpc.secure_channel(
        address, credentials_for_token(cert, key, ca, token), options=TUNNEL_CHANNEL_OPTIONS
    )
