"""Fuzz every parser a hostile peer, tenant or file feeds, 100,000 cases each.

    python bench/fuzz.py [--cases 100000] [--seed 1] [--target token,topology,...]

Targets (tests/fuzz/targets.py): the capability token verifier, the topology loader,
volume import, image import (the process runtime's store and the docker runtime's
streaming pass) and the node's request validators. Every input must be accepted or
refused with the parser's own clear error; anything else is a finding, printed with
the input that caused it. Prints cases per second next to a baseline measured in the
same run (the same number of inputs drawn without running the parser), so the
figure says what the parser costs rather than what the generator does. Exit status 1
when there was a finding.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz.targets import FACTORIES, Target, run


def _baseline(target: Target, cases: int, seed: int) -> float:
    """Seconds to draw ``cases`` inputs and do nothing with them."""
    idle = Target(target.name, target.strategy, lambda _data: "drawn", target.close)
    start = time.perf_counter()
    run(idle, cases=cases, seed=seed, stop_at_first=False)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", default=",".join(FACTORIES))
    parser.add_argument(
        "--baseline-cases", type=int, default=2_000, help="inputs drawn for the baseline"
    )
    args = parser.parse_args(argv)
    names = [n for n in args.target.split(",") if n]
    unknown = [n for n in names if n not in FACTORIES]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(FACTORIES)}")
    print(f"python {sys.version.split()[0]}, seed {args.seed}, load {os.getloadavg()[0]:.2f}")
    print(f"{'target':10} {'cases':>8} {'cases/s':>8} {'x draw':>7} {'findings':>8}  outcomes")
    found = 0
    for name in names:
        draw_s = _baseline(FACTORIES[name](), args.baseline_cases, args.seed) / args.baseline_cases
        start = time.perf_counter()
        result = run(FACTORIES[name](), cases=args.cases, seed=args.seed, stop_at_first=False)
        per_case = (time.perf_counter() - start) / max(result.cases, 1)
        top = sorted(result.outcomes.items(), key=lambda kv: -kv[1])[:4]
        outcomes = ", ".join(f"{k} {v}" for k, v in top)
        print(
            f"{name:10} {result.cases:8d} {1 / per_case:8.0f} {per_case / draw_s:7.2f}"
            f" {len(result.findings):8d}  {outcomes}"
        )
        for finding in result.findings[:20]:
            print(f"  FINDING {finding}")
        found += len(result.findings)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
