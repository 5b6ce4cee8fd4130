"""Message limits and channel options of both services, so a client and its server
agree on what fits in one message."""

from __future__ import annotations

import grpc

from pki.identity import Identity, Kind, kind_dns_name

#: NodeService: large data (images, volumes, logs) moves in streams of 256 KiB chunks.
NODE_MAX_MESSAGE = 1024 * 1024

#: ControlService and NodeGateway on the orchestrator.
ORCHESTRATOR_MAX_MESSAGE = 4 * 1024 * 1024

#: The CLI's ControlService channel: it reads whatever the orchestrator sends (the
#: server's own limit is what bounds a message).
CONTROL_CLIENT_MAX_MESSAGE = 64 * 1024 * 1024

Options = list[tuple[str, int]]


def _limits(size: int) -> Options:
    return [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)]


#: A channel to a node's NodeService.
NODE_CHANNEL_OPTIONS: Options = _limits(NODE_MAX_MESSAGE)

#: A node's server.
NODE_SERVER_OPTIONS: Options = [
    *_limits(NODE_MAX_MESSAGE),
    ("grpc.so_reuseport", 0),
    # Deterministic header limits: a token just over the 8 KiB cap reaches the
    # verifier (and gets UNAUTHENTICATED); only absurd headers die in transport.
    ("grpc.max_metadata_size", 16 * 1024),
    ("grpc.absolute_max_metadata_size", 32 * 1024),
]

#: The orchestrator's server (ControlService and NodeGateway).
ORCHESTRATOR_SERVER_OPTIONS: Options = [
    *_limits(ORCHESTRATOR_MAX_MESSAGE),
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]

#: The CLI's channel to ControlService.
CONTROL_CHANNEL_OPTIONS: Options = _limits(CONTROL_CLIENT_MAX_MESSAGE)


def client_credentials(cert_chain: bytes, key: bytes, ca: bytes) -> grpc.ChannelCredentials:
    """mTLS channel credentials from PEM bytes: our chain and key, the roots we trust."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert_chain
    )


def expecting(identity: str) -> list[tuple[str, str]]:
    """Channel options making the TLS handshake accept only the server ``identity``.

    ``identity`` is a SPIFFE URI (exactly that server), or ``spiffe://TD/orchestrator``
    for any orchestrator of trust domain TD (the HA case: one address, several
    leaders). gRPC's TLS clients check a DNS name, not a URI SAN, during the
    handshake; the CA gives each server its identity as a name under a reserved
    suffix (pki.identity.IDENTITY_DNS_SUFFIX), and this option makes that name,
    rather than the host name dialled, the one the server must prove. So a wrong
    peer is refused before the request, or the token with it, leaves the client.
    """
    return [("grpc.ssl_target_name_override", server_name(identity))]


def server_name(identity: str) -> str:
    """The name a server of ``identity`` carries (see ``expecting``)."""
    prefix = "spiffe://"
    if identity.startswith(prefix):
        td, _, rest = identity[len(prefix) :].partition("/")
        if rest == Kind.ORCHESTRATOR.value:
            return kind_dns_name(td, Kind.ORCHESTRATOR)
    return Identity.parse(identity).dns_name


def any_orchestrator(trust_domain: str) -> str:
    """The expectation for a client that may reach any orchestrator of ``trust_domain``."""
    return f"spiffe://{trust_domain}/{Kind.ORCHESTRATOR.value}"
