"""The real-cluster harness of the security suite, shared."""

from tests.security.conftest import cluster  # noqa: F401 - a fixture, used by name
