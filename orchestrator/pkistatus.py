"""The PKI as an operator sees it on a running orchestrator (``capstan pki status``):
the signing CA and trusted roots, every certificate in use with its renewal state,
the token keys, and what needs attention."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orchestrator.ca import CurrentAuthority
from orchestrator.minter import Minter
from orchestrator.owncert import OwnCertificate
from orchestrator.state import ClusterState
from pki.certs import thumbprint
from pki.errors import CapstanError
from pki.lifetime import renewal_state
from pki.rotation import rotation_status
from pki.state import CertRecord
from pki.tokenkeys import TokenKeyStore
from protos import control_pb2


class PkiStatus:
    def __init__(
        self,
        *,
        pki_dir: Path,
        ca: CurrentAuthority,
        own: OwnCertificate,
        state: ClusterState,
        minter: Minter,
        clock: Callable[[], float],
    ) -> None:
        self._pki_dir = pki_dir
        self._keys_path = pki_dir / "token-keys"
        self._ca = ca
        self._own = own
        self._state = state
        self._minter = minter
        self._clock = clock

    def __call__(self, now: float | None = None) -> control_pb2.PkiStatusResponse:
        """What an operator reads with ``capstan pki status``."""
        ts = self._clock() if now is None else now
        records: dict[int, CertRecord] = {r.serial: r for r in self._ca.authority.list()}
        out = control_pb2.PkiStatusResponse(
            signing_ca=thumbprint(self._ca.authority.intermediate),
            trusted_roots=[thumbprint(r) for r in self._ca.authority.trust_roots()],
        )
        rotation = rotation_status(self._pki_dir)
        if rotation is not None:
            left = [
                n.name
                for n in self._state.all_nodes()
                if n.state != "revoked" and n.issuer_ca != rotation.new_intermediate
            ]
            out.rotation = (
                f"overlap: old and new roots trusted; {len(left)} node(s) still on the old CA"
            )
        own = self._own.issued
        rows = [("orchestrator", own.identity.name, own.serial, "")]
        rows += [
            ("node", n.name, int(n.cert_serial, 16) if n.cert_serial else 0, n.state)
            for n in sorted(self._state.all_nodes(), key=lambda n: n.name)
        ]
        for kind, name, serial, node_state in rows:
            rec = records.get(serial)
            if rec is None:
                continue
            state = "revoked" if rec.revoked else renewal_state(rec.not_before, rec.not_after, ts)
            out.certificates.append(
                control_pb2.CertStatus(
                    kind=kind,
                    name=name,
                    serial=f"{serial:X}",
                    issuer_ca=rec.issuer,
                    not_before=rec.not_before,
                    not_after=rec.not_after,
                    renewal=state,
                    node_state=node_state,
                )
            )
            if state in ("overdue", "expired") and node_state != "revoked":
                left_h = (rec.not_after - ts) / 3600
                out.warnings.append(
                    f"{kind} {name}: certificate {state} "
                    + (f"(expires in {left_h:.1f} h)" if state == "overdue" else "")
                )
        inter_left = self._ca.authority.intermediate.not_valid_after_utc.timestamp() - ts
        if inter_left < 30 * 86400:
            out.warnings.append(
                f"intermediate CA expires in {inter_left / 86400:.0f} days: rotate the CA"
            )
        try:
            store = TokenKeyStore.open(self._keys_path)
            for e in store.entries:
                if e.state != "retired":
                    note = " (signing)" if e.kid == self._minter.kid else ""
                    out.token_keys.append(f"{e.kid} {e.state}{note}")
        except CapstanError as exc:
            out.warnings.append(f"token keys: {exc}")
        return out
