"""Node agent errors; the gRPC layer maps each class to one status code in one place."""

from __future__ import annotations

from pki.errors import CapstanError


class NodeError(CapstanError):
    """Base of node agent errors."""


class InvalidArgument(NodeError):
    """A request field is malformed or unsafe (INVALID_ARGUMENT); ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(NodeError):
    """The named container, image or volume does not exist on this node (NOT_FOUND)."""

    # Read by the CLI's exit status (3), which does not import the node.
    code = "NOT_FOUND"


class AlreadyExists(NodeError):
    """A container or volume with that name already exists on this node (ALREADY_EXISTS)."""


class FailedPrecondition(NodeError):
    """The object is in a state that does not allow the operation (FAILED_PRECONDITION)."""


class NotOwned(NodeError):
    """The request names an object of another tenant or application than the one the
    token's resource belongs to (PERMISSION_DENIED); ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class PolicyDenied(NodeError):
    """A create asks for more than the node's own sandbox policy permits
    (PERMISSION_DENIED), whatever its token says; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class RuntimeUnavailable(NodeError):
    """The container runtime does not answer (UNAVAILABLE)."""


class RuntimeFailure(NodeError):
    """The container runtime failed to carry out an operation (INTERNAL)."""
