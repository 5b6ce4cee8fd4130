"""Every file in bad_topologies/ must be refused with exactly the problems it announces.

A file announces a problem with a trailing comment on the line the problem must be
reported at: ``# expect <field path>: <part of the message>`` (path ``-`` for the
document itself). The test checks the line, the path and the message of each
problem, that nothing else is reported, and that the rendered error reads
``<file>:<line>: <path>: <message>``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.errors import TopologyError
from orchestrator.topology import load_topology_file

CORPUS = Path(__file__).parent / "bad_topologies"
_EXPECT_RE = re.compile(r"# expect (\S.*?): (.+?)(?=\s+# expect |\s*$)")


def expectations(path: Path) -> list[tuple[int, str, str]]:
    found = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        for field, message in _EXPECT_RE.findall(line):
            found.append((number, "" if field == "-" else field, message))
    return found


FILES = sorted(CORPUS.glob("*.yaml"))


def test_corpus_is_there() -> None:
    assert len(FILES) >= 100
    for path in FILES:
        assert expectations(path), f"{path.name} announces no problem"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_bad_topology_is_refused_with_field_and_line(path: Path) -> None:
    with pytest.raises(TopologyError) as exc:
        load_topology_file(path)
    problems = exc.value.problems
    expected = expectations(path)
    got = [(p.line, p.path, p.message) for p in problems]
    assert len(got) == len(expected), f"expected {expected}, got {got}"
    remaining = list(got)
    for line, field, fragment in expected:
        match = next(
            (g for g in remaining if g[0] == line and g[1] == field and fragment in g[2]), None
        )
        assert match is not None, f"no problem at line {line} for {field!r} ~ {fragment!r}: {got}"
        remaining.remove(match)
        where = f"{path}:{line}: {field}: " if field else f"{path}:{line}: "
        assert where in str(exc.value)
