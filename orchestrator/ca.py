"""The cluster CA the orchestrator signs with now: re-opened after a CA rotation, read
by everything that signs certificates or pins the root (join, renewal, join tokens)."""

from __future__ import annotations

from pki.authority import Authority
from pki.certs import thumbprint


class CurrentAuthority:
    def __init__(self, authority: Authority) -> None:
        self.authority = authority

    def replace(self, authority: Authority) -> None:
        """Sign with a re-opened authority from now on (after a CA change)."""
        self.authority = authority

    @property
    def ca_pin(self) -> str:
        """The pin join tokens carry: the newest root, the one a rotation keeps."""
        return thumbprint(self.authority.trust_roots()[-1])
