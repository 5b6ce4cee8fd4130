"""Capability token throughput against the raw Ed25519 operations it wraps.

    python bench/bench_tokens.py [--n 500] [--rounds 31]

Each round mints fresh tokens, then times, back to back: raw Ed25519 sign and
verify over exactly those tokens' signing inputs (one distinct message per call,
as in real use), mint, and full token verification (every check plus the replay
cache; the signature through libsodium). The raw baselines are OpenSSL's (through
``cryptography``): the verify ratio says what the whole check costs against the bare
OpenSSL verify it replaced. Raw and wrapped series alternate within each round so that frequency
scaling or a noisy neighbour hits both alike; times are medians over rounds and
ratios medians of the per-round ratios. Python work between OpenSSL calls costs
some cache warmth, so run on an idle machine: ratios rise with the load average.
Goals: mint <= 1.5x a raw sign, full verification <= 0.75x a raw OpenSSL verify.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pki._jose import b64url_encode
from pki.tokenkeys import TokenKeyStore
from pki.tokens import ReplayCache, TokenVerifier, mint

ISS = "spiffe://bench.test/orchestrator/main"
SUB = "spiffe://bench.test/node/node-1"
AUD = "spiffe://bench.test/node/node-2"
OP = "container.start"
RES = "c-0123456789abcdef"
MINT_GOAL = 1.5
VERIFY_GOAL = 0.75


def _timed(body: Callable[[int], object], first: int, stop: int) -> float:
    """Seconds per call of body(i) for i in range(first, stop)."""
    start = time.perf_counter()
    for i in range(first, stop):
        body(i)
    return (time.perf_counter() - start) / (stop - first)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="operations per series per round")
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args(argv)
    n, rounds = args.n, args.rounds

    with tempfile.TemporaryDirectory() as tmp:
        store = TokenKeyStore.create(Path(tmp) / "token-keys")
        signer = store.signer()
        keyset = store.keyset()
    public = keyset.get(signer.kid)
    assert public is not None
    cnf = b64url_encode(hashlib.sha256(os.urandom(600)).digest())
    verifier = TokenVerifier(
        keyset,
        audience=AUD,
        issuers=[ISS],
        replay=ReplayCache(max_entries=n * rounds + 1),
    )

    def mint_one(_: int = 0) -> str:
        return mint(signer, iss=ISS, sub=SUB, aud=AUD, op=OP, res=RES, cnf=cnf)

    sample = mint_one()
    raw_sign = signer._key.sign  # the bare cryptography call, no wrapper
    raw_verify = public.verify

    series: dict[str, list[float]] = {"sign": [], "mint": [], "verify": [], "check": []}
    for _ in range(rounds):
        tokens = [mint_one() for _ in range(n)]
        # The raw operations work on the same inputs as the wrapped ones: this
        # round's signing inputs and signatures, one distinct message per call.
        inputs = [t.rpartition(".")[0].encode("ascii") for t in tokens]
        signatures = [raw_sign(m) for m in inputs]

        def sign_raw(i: int, inputs: list[bytes] = inputs) -> object:
            return raw_sign(inputs[i])

        def verify_raw(
            i: int, inputs: list[bytes] = inputs, signatures: list[bytes] = signatures
        ) -> object:
            raw_verify(signatures[i], inputs[i])
            return None

        def verify_one(i: int, tokens: list[str] = tokens) -> object:
            return verifier.verify(tokens[i], peer_id=SUB, peer_thumbprint=cnf, op=OP, res=RES)

        # Each wrapped operation is timed between two halves of its raw
        # counterpart, so a load change during the round hits both alike.
        half = n // 2
        sign_a = _timed(sign_raw, 0, half)
        series["mint"].append(_timed(mint_one, 0, n))
        series["sign"].append((sign_a + _timed(sign_raw, half, n)) / 2)
        verify_a = _timed(verify_raw, 0, half)
        series["check"].append(_timed(verify_one, 0, n))
        series["verify"].append((verify_a + _timed(verify_raw, half, n)) / 2)

    med = {k: statistics.median(v) for k, v in series.items()}
    # Median of the per-round ratios: robust to rounds disturbed by other load.
    mint_ratio = statistics.median(
        m / s for m, s in zip(series["mint"], series["sign"], strict=True)
    )
    verify_ratio = statistics.median(
        c / v for c, v in zip(series["check"], series["verify"], strict=True)
    )
    print(
        f"python {sys.version.split()[0]}, {n} ops x {rounds} rounds, "
        f"token {len(sample)} bytes, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"raw Ed25519 sign    {1 / med['sign']:10.0f}/s  {med['sign'] * 1e6:7.1f} us")
    print(f"mint                {1 / med['mint']:10.0f}/s  {med['mint'] * 1e6:7.1f} us")
    print(f"raw OpenSSL verify  {1 / med['verify']:10.0f}/s  {med['verify'] * 1e6:7.1f} us")
    print(f"verify (all checks) {1 / med['check']:10.0f}/s  {med['check'] * 1e6:7.1f} us")
    ok_mint = mint_ratio <= MINT_GOAL
    ok_verify = verify_ratio <= VERIFY_GOAL
    print(
        f"mint/sign     {mint_ratio:5.2f}x  (goal <= {MINT_GOAL}x)  {'ok' if ok_mint else 'MISSED'}"
    )
    print(
        f"verify/verify {verify_ratio:5.2f}x  (goal <= {VERIFY_GOAL}x)  "
        f"{'ok' if ok_verify else 'MISSED'}"
    )
    return 0 if ok_mint and ok_verify else 1


if __name__ == "__main__":
    sys.exit(main())
