"""gRPC failures become the project's exceptions here and nowhere else.

Every client of either service catches ``grpc.RpcError`` (or ``grpc.aio.AioRpcError``)
only through :func:`status_of` or :meth:`CallError.of`, so the way a status and its
details are read from a foreign exception lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import grpc

from pki.errors import CapstanError


@dataclass(frozen=True)
class Status:
    """What a failed call said: its status code (UNKNOWN when it said none) and reason."""

    code: grpc.StatusCode
    details: str

    @property
    def name(self) -> str:
        return str(self.code.name)

    def one_line(self) -> str:
        """``NAME: details`` with the details' whitespace folded to single spaces."""
        return f"{self.name}: {' '.join(self.details.split())}"


def status_of(exc: BaseException) -> Status:
    """The status of a failed gRPC call (any exception shaped like ``grpc.RpcError``)."""
    code_of = getattr(exc, "code", None)
    code = code_of() if callable(code_of) else None
    details_of = getattr(exc, "details", None)
    details = details_of() if callable(details_of) else str(exc)
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    text = str(details or "")
    if code is grpc.StatusCode.UNAVAILABLE and _WRONG_PEER in text:
        # The handshake refused a server lacking the identity the channel expects
        # (protos.wire.channel.expecting): say so rather than grpc's wording.
        text = f"{WRONG_SERVER} ({text})"
    return Status(code, text)


#: What a client says when the server at the address is not the one it expects.
WRONG_SERVER = "the server did not prove the identity this client expects"
_WRONG_PEER = "Hostname Verification Check failed"


class CallError(CapstanError):
    """A gRPC call failed; ``code`` is the status, ``details`` the peer's reason."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details

    @classmethod
    def of(cls, method: str, exc: BaseException) -> Self:
        status = status_of(exc)
        return cls(method, status.code, status.details)


class NodeCallError(CallError):
    """A call to a node's NodeService failed."""
