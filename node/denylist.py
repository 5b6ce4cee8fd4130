"""The revoked-serial deny list a node enforces on every call.

File format: one certificate serial per line, hexadecimal (as ``openssl x509 -serial``
prints it, optional ``0x``) ; ``#`` starts a comment. The orchestrator pushes this file
to every node; the node re-reads it when it changes.
"""

from __future__ import annotations

from pki.errors import ConfigError


def parse_deny_list(data: bytes) -> frozenset[int]:
    serials: set[int] = set()
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError("deny list is not ASCII text") from None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        digits = line[2:] if line.lower().startswith("0x") else line
        try:
            serial = int(digits.replace(":", ""), 16)
        except ValueError:
            raise ConfigError(
                f"deny list line {lineno}: {line!r} is not a hexadecimal serial"
            ) from None
        serials.add(serial)
    return frozenset(serials)


def format_deny_list(serials: set[int] | frozenset[int]) -> bytes:
    # Never empty: receivers read an empty field as "unchanged", so an empty list
    # must still say something to clear earlier revocations.
    header = f"# capstan deny list: {len(serials)} revoked serial(s)\n"
    return (header + "".join(f"{s:X}\n" for s in sorted(serials))).encode("ascii")
