"""``capstan pki``: create the CA, issue and revoke certificates, manage token keys.

Every failure is raised as a CapstanError; the root command turns it into one
``error: ...`` line and a non-zero exit. Commands check their output locations
before they change the PKI state, so a refused command leaves nothing behind.
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from pki.authority import REVOCATION_REASONS, Authority, CertRecord
from pki.certs import (
    dns_names,
    extended_key_usage,
    identity_of,
    ip_addresses,
    key_description,
    load_pem_chain,
    role_of,
    thumbprint,
)
from pki.cli_token import token_group  # re-exported: the root command imports both groups here
from pki.duration import parse_duration
from pki.errors import CapstanError, ConfigError, PKIExistsError
from pki.files import atomic_write, read_file
from pki.identity import Kind, validate_name
from pki.tokenkeys import TokenKeyStore

__all__ = ["pki_group", "token_group"]

_KINDS = click.Choice([k.value for k in Kind])
_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}

_dir_option = click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="PKI directory.",
)


def _sans_options(fn: Any) -> Any:
    fn = click.option("--ttl", help="Lifetime, e.g. 90s, 15m, 24h, 30d (default per kind).")(fn)
    fn = click.option("--role", help="User role: admin, viewer or tenant:NAME.")(fn)
    fn = click.option("--ip", "ips", multiple=True, help="IP SAN (servers); repeatable.")(fn)
    fn = click.option("--dns", multiple=True, help="DNS SAN (servers); repeatable.")(fn)
    return fn


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ttl(text: str | None) -> float | None:
    return None if text is None else parse_duration(text)


@click.group("pki")
def pki_group() -> None:
    """Certificate authority: identities, certificates, revocation and token keys."""


@pki_group.command("init")
@_dir_option
@click.option("--trust-domain", required=True, help="e.g. capstan.example.org")
@click.option("--force", is_flag=True, help="Replace an existing PKI (all its keys).")
def init_cmd(directory: Path, trust_domain: str, force: bool) -> None:
    """Create a root CA, an intermediate CA and the token signing keys."""
    authority = Authority.init(directory, trust_domain, force=force)
    click.echo(f"created PKI for trust domain {authority.trust_domain} in {directory}")
    click.echo(
        f"root key {directory / 'root.key'} is needed only to re-create the intermediate: "
        "keep it offline"
    )


@pki_group.command("issue")
@_dir_option
@click.argument("kind", type=_KINDS)
@click.argument("name")
@_sans_options
@click.option(
    "--out",
    "outdir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory receiving NAME.crt, NAME.key and ca.crt (created 0700 if missing).",
)
@click.option("--force", is_flag=True, help="Replace an existing NAME.key in --out.")
def issue_cmd(
    *,
    directory: Path,
    kind: str,
    name: str,
    dns: tuple[str, ...],
    ips: tuple[str, ...],
    role: str | None,
    ttl: str | None,
    outdir: Path,
    force: bool,
) -> None:
    """Issue a key and certificate for KIND NAME into --out."""
    lifetime = _ttl(ttl)
    authority = Authority.open(directory)
    # Refuse before issuing: a certificate nobody received should not be recorded.
    if outdir.exists() and not outdir.is_dir():
        raise ConfigError(f"output path {outdir} is not a directory")
    if not outdir.is_dir():
        # It will hold a private key: only its owner may list or enter it.
        try:
            outdir.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {outdir}: {exc.strerror}") from None
        outdir.chmod(0o700)  # mkdir's mode is masked by the umask
    key_path = outdir / f"{validate_name(name, f'{kind} name')}.key"
    if key_path.exists() and not force:
        raise PKIExistsError(f"{key_path} already exists; refusing to overwrite it (--force)")
    issued = authority.issue(kind, name, dns=dns, ips=ips, role=role, ttl=lifetime)
    paths = authority.write_issued(issued, outdir, overwrite=force)
    click.echo(
        f"issued {issued.identity.uri} serial {issued.serial:x} "
        f"valid until {_iso(issued.not_after)}"
    )
    for path in paths:
        click.echo(f"  wrote {path}")


@pki_group.command("sign-csr")
@_dir_option
@click.option("--csr", "csr_path", required=True, type=click.Path(path_type=Path), help="PEM CSR.")
@click.argument("kind", type=_KINDS)
@click.argument("name")
@_sans_options
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="File receiving the certificate chain (leaf, intermediate).",
)
def sign_csr_cmd(
    *,
    directory: Path,
    csr_path: Path,
    kind: str,
    name: str,
    dns: tuple[str, ...],
    ips: tuple[str, ...],
    role: str | None,
    ttl: str | None,
    out: Path,
) -> None:
    """Sign a CSR's key for KIND NAME; identity and SANs come from the arguments only."""
    lifetime = _ttl(ttl)
    authority = Authority.open(directory)
    csr = read_file(csr_path, "CSR file")
    if not out.parent.is_dir():
        raise ConfigError(f"output directory {out.parent} does not exist")
    if out.is_dir():
        raise ConfigError(f"{out} is a directory")
    issued = authority.sign_csr(csr, kind, name, dns=dns, ips=ips, role=role, ttl=lifetime)
    try:
        atomic_write(out, issued.chain_pem)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from None
    click.echo(
        f"signed {issued.identity.uri} serial {issued.serial:x} "
        f"valid until {_iso(issued.not_after)}; wrote {out}"
    )


@pki_group.command("revoke")
@_dir_option
@click.argument("target", metavar="SERIAL|NAME|KIND/NAME")
@click.option(
    "--reason",
    default="unspecified",
    type=click.Choice(list(REVOCATION_REASONS)),
    show_default=True,
)
def revoke_cmd(directory: Path, target: str, reason: str) -> None:
    """Revoke one serial (hex) or every live certificate of a name."""
    authority = Authority.open(directory)
    for serial in authority.revoke(target, reason=reason):
        click.echo(f"revoked {serial:x} ({reason})")
    click.echo("regenerate the CRL with `capstan pki crl` for outside tools")


@pki_group.command("crl")
@_dir_option
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
def crl_cmd(directory: Path, out: Path) -> None:
    """Write a CRL, signed by the intermediate, of every revoked certificate."""
    authority = Authority.open(directory)
    if not out.parent.is_dir():
        raise ConfigError(f"output directory {out.parent} does not exist")
    if out.is_dir():
        raise ConfigError(f"{out} is a directory")
    pem = authority.crl()
    try:
        atomic_write(out, pem)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from None
    click.echo(f"wrote CRL with {len(authority.revoked_serials())} revoked serial(s) to {out}")


def _status(rec: CertRecord, now: float) -> str:
    if rec.revoked:
        return f"revoked ({rec.reason})"
    return "expired" if rec.not_after <= now else "valid"


@pki_group.command("list")
@_dir_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def list_cmd(directory: Path, output: str) -> None:
    """List every certificate the PKI issued."""
    records = Authority.open(directory).list()
    now = time.time()
    if output == "json":
        docs = [dict(r.to_json(), status=_status(r, now)) for r in records]
        click.echo(json.dumps(docs, indent=2))
        return
    rows = [("SERIAL", "KIND", "NAME", "ROLE", "NOT AFTER", "STATUS")]
    rows += [
        (f"{r.serial:x}", r.kind.value, r.name, r.role or "-", _iso(r.not_after), _status(r, now))
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _inspect(cert: x509.Certificate) -> dict[str, Any]:
    try:
        identity: str | None = identity_of(cert).uri
        identity_error = None
    except CapstanError as exc:
        identity, identity_error = None, str(exc)
    try:
        role = role_of(cert)
    except CapstanError as exc:
        role = f"invalid ({exc})"
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    doc: dict[str, Any] = {
        "identity": identity,
        "role": role,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "key": key_description(cert),
        "ca": ca,
        "eku": [_EKU_NAMES.get(o, o.dotted_string) for o in extended_key_usage(cert)],
        "san": {
            "uri": uris,
            "dns": dns_names(cert),
            "ip": [str(ip) for ip in ip_addresses(cert)],
        },
        "x5t#S256": thumbprint(cert),
    }
    if identity_error is not None:
        doc["identity_error"] = identity_error
    return doc


@pki_group.command("inspect")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def inspect_cmd(file: Path, output: str) -> None:
    """Show identity, role, SANs, EKU, validity, issuer, serial and x5t#S256 of a certificate."""
    chain = load_pem_chain(read_file(file, "certificate file"), str(file))
    docs = [_inspect(c) for c in chain]
    if output == "json":
        click.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
        return
    for n, doc in enumerate(docs):
        if n:
            click.echo("")
        click.echo(f"certificate {n} of {len(docs)}:")
        ident = doc["identity"] or f"none ({doc.get('identity_error', 'no spiffe SAN')})"
        lines = [
            ("identity", ident),
            ("role", doc["role"] or "-"),
            ("subject", doc["subject"]),
            ("issuer", doc["issuer"]),
            ("serial", doc["serial"]),
            ("valid", f"{doc['not_before']} .. {doc['not_after']}"),
            ("key", doc["key"]),
            ("ca", "yes" if doc["ca"] else "no"),
            ("eku", ", ".join(doc["eku"]) or "-"),
            ("uri san", ", ".join(doc["san"]["uri"]) or "-"),
            ("dns san", ", ".join(doc["san"]["dns"]) or "-"),
            ("ip san", ", ".join(doc["san"]["ip"]) or "-"),
            ("x5t#S256", doc["x5t#S256"]),
        ]
        for label, value in lines:
            click.echo(f"  {label + ':':<10} {value}")


def _token_keys(directory: Path) -> TokenKeyStore:
    Authority.open(directory)  # the PKI itself must be sound, with one error message if not
    return TokenKeyStore.open(directory / "token-keys")


@pki_group.command("jwks")
@_dir_option
def jwks_cmd(directory: Path) -> None:
    """Print the public token keys (JWKS) that nodes trust."""
    click.echo(json.dumps(_token_keys(directory).jwks(), indent=2))


@pki_group.command("rotate-token-key")
@_dir_option
def rotate_token_key_cmd(directory: Path) -> None:
    """Make a new token signing key active; the old one stays trusted until retired."""
    kid = _token_keys(directory).rotate()
    click.echo(f"active token key is now {kid}; the previous key verifies until retired")


@pki_group.command("retire-token-key")
@_dir_option
@click.argument("kid")
def retire_token_key_cmd(directory: Path, kid: str) -> None:
    """Stop trusting a verify-only token key and delete its private key."""
    _token_keys(directory).retire(kid)
    click.echo(f"retired token key {kid}")


@pki_group.command("etcd")
@_dir_option
@click.option(
    "--member", "members", multiple=True, metavar="NAME",
    help="An etcd member: its server and peer certificate; repeatable.",
)
@click.option(
    "--client", "clients", multiple=True, metavar="NAME",
    help="An etcd client (an orchestrator): client certificate; repeatable.",
)
@click.option("--ip", "ips", multiple=True, help="IP SAN of the members (default 127.0.0.1).")
@click.option("--dns", multiple=True, help="DNS SAN of the members (default localhost).")
@click.option("--ttl", help="Lifetime, e.g. 365d (default one year).")
@click.option("--force", is_flag=True, help="Replace existing keys of these names.")
def etcd_cmd(
    *,
    directory: Path,
    members: tuple[str, ...],
    clients: tuple[str, ...],
    ips: tuple[str, ...],
    dns: tuple[str, ...],
    ttl: str | None,
    force: bool,
) -> None:
    """Certificates for etcd's client and peer mTLS, under DIR/etcd/ from a CA of their
    own (the cluster CA would let every node's certificate into the store)."""
    from pki import etcd

    if not members and not clients:
        raise click.UsageError("give at least one --member or --client")
    lifetime = _ttl(ttl) or etcd.DEFAULT_TTL
    for name in members:
        files = etcd.issue_member(
            directory, name, ips=ips or ("127.0.0.1",), dns=dns or ("localhost",),
            ttl=lifetime, force=force,
        )
        click.echo(f"etcd member {name}: {files.cert} {files.key}")
    for name in clients:
        files = etcd.issue_client(directory, name, ttl=lifetime, force=force)
        click.echo(f"etcd client {name}: {files.cert} {files.key}")
    click.echo(f"etcd CA: {etcd.etcd_dir(directory) / 'ca.crt'} (trusted by etcd only)")


@pki_group.command("rotate-secrets-key")
@_dir_option
def rotate_secrets_key_cmd(directory: Path) -> None:
    """Make a new key-encryption key for secrets active.

    The orchestrator re-wraps every secret's data key under it when it next takes the
    lead (restart it, or let a follower take over). The old key file stays: no command
    deletes it, since only the store knows whether a record still needs it.
    """
    from pki.secretkeys import SecretKeyStore

    kid = SecretKeyStore.open_or_create(Path(directory) / "secret-keys").rotate()
    click.echo(f"active secrets key is now {kid}; restart the orchestrator to re-wrap secrets")
