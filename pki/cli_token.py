"""``capstan token``: explain a capability token to a human; mint one for debugging.

``inspect`` decodes without trusting anything; with ``--jwks`` it also checks the
form, kid and signature exactly as a node would. It cannot check the binding
(audience, caller certificate, operation, resource, replay): only the node sees the
live call. ``mint`` signs with the orchestrator's active token key, for operators
and the walk-through; the orchestrator mints its own tokens in production.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any, TypeGuard

import click
from cryptography.hazmat.primitives import serialization

from pki._jose import thumbprint_of_der
from pki.authority import Authority
from pki.certs import identity_of, load_pem_chain
from pki.duration import parse_duration
from pki.errors import ConfigError, InvalidToken, PKIError
from pki.files import read_file
from pki.identity import Identity, Kind
from pki.tokenkeys import KeySet, TokenKeyStore
from pki.tokens import (
    CNF_MEMBER,
    MAX_TOKEN_BYTES,
    TOKEN_TYPE,
    check_header,
    check_signature,
    decode_unverified,
    mint,
    request_digest,
)

__all__ = ["token_group"]

TOKEN_KEYS_DIR = "token-keys"  # noqa: S105 - a directory name

# What each claim means, in the order a reader wants them.
_MEANINGS: dict[str, str] = {
    "iss": "issuer: the orchestrator that minted it",
    "sub": "caller: the SPIFFE id its certificate must carry",
    "aud": "target: the only node that accepts it",
    "op": "the one operation it allows",
    "res": "the resource it applies to",
    "req": "SHA-256 of the request parameters the call must carry",
    "cnf": "bound to the caller certificate with this x5t#S256 thumbprint",
    "iat": "issued at",
    "nbf": "not valid before",
    "exp": "expires at",
    "jti": "unique id: a node accepts it once",
    "epoch": "orchestrator leadership epoch: nodes refuse older epochs",
}
_HEADER_MEANINGS: dict[str, str] = {
    "alg": "signature algorithm (must be EdDSA; the node never takes it from the token)",
    "typ": f"token type (must be {TOKEN_TYPE})",
    "kid": "id of the signing key, looked up in the node's JWKS",
}
_TIME_CLAIMS = ("iat", "nbf", "exp")


@click.group("token")
def token_group() -> None:
    """Capability tokens: inspect them, mint one for debugging."""


def _utc(ts: float) -> str:
    try:
        return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "out of range"


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}".replace(".0 ", " ")
    return f"{seconds:.0f} s"


def _relative(ts: float, now: float) -> str:
    delta = ts - now
    if abs(delta) < 1:
        return "now"
    return f"in {_span(delta)}" if delta > 0 else f"{_span(delta)} ago"


def _is_time(value: object) -> TypeGuard[int]:
    return type(value) is int


def _status(claims: dict[str, Any], now: float) -> tuple[str, str]:
    """(status word, explanation) of the token's lifetime at ``now``, leeway ignored."""
    nbf, exp = claims.get("nbf"), claims.get("exp")
    if not _is_time(exp) or not _is_time(nbf):
        return "malformed", "nbf/exp missing or not integers: every node refuses it"
    if now >= exp:
        return "expired", f"expired {_span(now - exp)} ago"
    if now < nbf:
        return "not-yet-valid", f"not valid for another {_span(nbf - now)}"
    return "valid", f"within its lifetime for {_span(exp - now)} more"


def _read_token(token: str) -> str:
    if token == "-":  # noqa: S105 - stdin, not a password
        token = sys.stdin.read(MAX_TOKEN_BYTES * 2)
    token = token.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    return token


def _render_value(name: str, value: object, now: float) -> str:
    if name in _TIME_CLAIMS and _is_time(value):
        return f"{value}  {_utc(value)} ({_relative(value, now)})"
    if name == "cnf" and isinstance(value, dict) and set(value) == {CNF_MEMBER}:
        return f"{CNF_MEMBER}={value[CNF_MEMBER]}"
    if isinstance(value, str):
        return value
    return json.dumps(value)


@token_group.command("inspect")
@click.argument("token")
@click.option(
    "--jwks",
    type=click.Path(path_type=Path, dir_okay=False),
    help="JWKS file (capstan pki jwks): also check the signature and kid.",
)
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--now", type=float, help="Unix time to judge the lifetime at (default: now).")
def inspect_cmd(*, token: str, jwks: Path | None, output: str, now: float | None) -> None:
    """Decode and explain TOKEN ('-' reads it from stdin).

    Exits non-zero when every node would refuse it for its shape (header or lifetime
    claims), and when --jwks is given and the signature does not verify.
    """
    at = time.time() if now is None else now
    text = _read_token(token)
    header_seg, header, claims = decode_unverified(text)
    try:
        check_header(header_seg)
        header_problem = None
    except InvalidToken as exc:
        header_problem = exc.detail
    signature: dict[str, Any] = {"checked": False, "valid": None, "detail": "not checked"}
    if jwks is not None:
        keys = KeySet.from_file(jwks)
        try:
            check_signature(text, keys)
            signature = {"checked": True, "valid": True, "detail": f"valid, key from {jwks}"}
        except InvalidToken as exc:
            signature = {"checked": True, "valid": False, "detail": exc.detail}
    status, explanation = _status(claims, at)

    if output == "json":
        times = {
            n: {"unix": claims[n], "utc": _utc(claims[n]), "relative": _relative(claims[n], at)}
            for n in _TIME_CLAIMS
            if _is_time(claims.get(n))
        }
        click.echo(
            json.dumps(
                {
                    "header": header,
                    "header_problem": header_problem,
                    "claims": claims,
                    "times": times,
                    "status": status,
                    "expired": status == "expired",
                    "signature": signature,
                },
                indent=2,
            )
        )
    else:
        _print_text(
            header=header,
            header_problem=header_problem,
            claims=claims,
            signature=signature,
            status=status,
            explanation=explanation,
            now=at,
        )
    if signature["valid"] is False:
        raise InvalidToken(str(signature["detail"]))
    # A token every node refuses whatever the call is a failure scripts must see;
    # an expired token is only old (its status says so), not refused for its shape.
    if header_problem is not None:
        raise InvalidToken(header_problem)
    if status == "malformed":
        raise InvalidToken(f"malformed: {explanation}")


def _print_text(
    *,
    header: dict[str, Any],
    header_problem: str | None,
    claims: dict[str, Any],
    signature: dict[str, Any],
    status: str,
    explanation: str,
    now: float,
) -> None:
    echo = click.echo
    echo("header")
    for name, value in header.items():
        meaning = _HEADER_MEANINGS.get(name, "NOT ACCEPTED by nodes")
        echo(f"  {name:<6} {_render_value(name, value, now):<40} {meaning}")
    echo(
        f"  => {'refused by every node: ' + header_problem if header_problem else 'accepted shape'}"
    )
    echo("claims")
    for name in [*_MEANINGS, *(n for n in claims if n not in _MEANINGS)]:
        if name not in claims:
            if name != "req":
                echo(f"  {name:<6} {'(missing)':<40} {_MEANINGS[name]}")
            continue
        meaning = _MEANINGS.get(name, "extra claim (carried to the node)")
        echo(f"  {name:<6} {_render_value(name, claims[name], now):<40} {meaning}")
    iat, exp = claims.get("iat"), claims.get("exp")
    if _is_time(iat) and _is_time(exp):
        echo(f"lifetime   {exp - iat} s (exp - iat)")
    echo(f"status     {status}: {explanation} (at {_utc(now)})")
    echo(f"signature  {signature['detail']}")
    echo(
        "note       the node also checks aud, sub, cnf, op, res, req and the replay "
        "cache against the live call"
    )


def _identity(value: str, trust_domain: str | None, what: str) -> str:
    """A SPIFFE id, or KIND/NAME expanded with the PKI's trust domain."""
    if value.startswith("spiffe://"):
        return value
    if trust_domain is None or value.count("/") != 1:
        raise ConfigError(f"{what} must be a spiffe:// id (or KIND/NAME with --dir)")
    return f"spiffe://{trust_domain}/{value}"


def _pki_identities(directory: Path) -> tuple[str | None, list[str]]:
    """The PKI's trust domain and its live orchestrator identities, if a CA lives there."""
    try:
        authority = Authority.open(directory)
    except PKIError:
        return None, []
    names = sorted(
        {r.name for r in authority.list() if r.kind is Kind.ORCHESTRATOR and not r.revoked}
    )
    td = authority.trust_domain
    return td, [Identity(td, Kind.ORCHESTRATOR, n).uri for n in names]


@token_group.command("mint")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="PKI directory (its token-keys/ holds the signing key).",
)
@click.option("--sub", help="Caller SPIFFE id (default: the --cnf-cert identity).")
@click.option("--aud", required=True, help="Target node: SPIFFE id or node/NAME.")
@click.option("--op", required=True, help="Operation, e.g. container.start.")
@click.option("--res", required=True, help="Resource id.")
@click.option(
    "--cnf-cert",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The caller's certificate (PEM) the token is bound to.",
)
@click.option("--iss", help="Issuer (default: the PKI's only orchestrator identity).")
@click.option("--ttl", default="60s", show_default=True, help="Lifetime, e.g. 60s, 5m.")
@click.option(
    "--epoch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Orchestrator leadership epoch (a single orchestrator runs at 1; "
    "`capstan version` shows the live one).",
)
@click.option("--req", "req", help="Request digest to bind (see --req-fields).")
@click.option("--req-fields", help="JSON object of request fields; its digest is bound.")
def mint_cmd(
    *,
    directory: Path,
    sub: str | None,
    aud: str,
    op: str,
    res: str,
    cnf_cert: Path,
    iss: str | None,
    ttl: str,
    epoch: int,
    req: str | None,
    req_fields: str | None,
) -> None:
    """Mint a capability token with the active token key (debugging, walk-through)."""
    store = TokenKeyStore.open(directory / TOKEN_KEYS_DIR)
    trust_domain, orchestrators = _pki_identities(directory)
    cert = load_pem_chain(read_file(cnf_cert, "certificate"), str(cnf_cert))[0]
    cnf = thumbprint_of_der(cert.public_bytes(serialization.Encoding.DER))
    cert_id = identity_of(cert).uri
    subject = cert_id if sub is None else _identity(sub, trust_domain, "--sub")
    if subject != cert_id:
        click.echo(
            f"warning: --sub {subject} is not the certificate's identity {cert_id}; "
            "nodes will refuse this token",
            err=True,
        )
    if iss is None:
        if len(orchestrators) != 1:
            raise ConfigError(
                "give --iss: the PKI has "
                f"{len(orchestrators) or 'no'} orchestrator identities to choose from"
            )
        iss = orchestrators[0]
    if req is not None and req_fields is not None:
        raise ConfigError("give --req or --req-fields, not both")
    if req_fields is not None:
        try:
            fields = json.loads(req_fields)
        except ValueError as exc:
            raise ConfigError(f"--req-fields is not JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise ConfigError("--req-fields must be a JSON object")
        req = request_digest(fields)
    token = mint(
        store.signer(),
        iss=_identity(iss, trust_domain, "--iss"),
        sub=subject,
        aud=_identity(aud, trust_domain, "--aud"),
        op=op,
        res=res,
        cnf=cnf,
        req=req,
        ttl=parse_duration(ttl),
        epoch=epoch,
    )
    click.echo(token)
    # stderr: stdout stays the token alone, for $(capstan token mint ...).
    click.echo(
        f"epoch {epoch}: nodes refuse a token whose epoch is older than the newest they have seen",
        err=True,
    )
