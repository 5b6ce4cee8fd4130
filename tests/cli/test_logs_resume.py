"""``logs -f`` resumes after its grant ends without repeating or losing output."""

from __future__ import annotations

from orchestrator.client import _resumed


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_resume_at_a_known_offset_skips_exactly_what_was_printed() -> None:
    log = b"".join(f"line {i}\n".encode() for i in range(500))
    printed = log[:1234]
    for size in (1, 7, 100, 5000):
        rest = b"".join(_resumed(iter(_chunks(log, size)), skip=len(printed), recent=b""))
        assert printed + rest == log


def test_resume_after_a_tail_continues_after_the_last_printed_bytes() -> None:
    log = b"".join(f"line {i}\n".encode() for i in range(500))
    printed_tail = log[2000:3000]  # the first read was a tail: its offset is unknown
    for size in (3, 64, 4096):
        rest = b"".join(_resumed(iter(_chunks(log, size)), skip=None, recent=printed_tail))
        assert rest == log[3000:]
