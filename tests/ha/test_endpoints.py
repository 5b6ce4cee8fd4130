"""The callers' list of orchestrators: follow a named leader, rotate on failure, and
do not spin on orchestrators that all refuse."""

from __future__ import annotations

import grpc
import pytest

from protos.wire.leader import LEADER_METADATA, Endpoints, leader_of


class Refusal(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, trailing: tuple[tuple[str, str], ...]) -> None:
        self._code, self._trailing = code, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing


def test_a_named_leader_is_followed_and_a_failure_moves_on() -> None:
    e = Endpoints(["a:1", "b:2", "c:3", "a:1"])
    assert e.all == ("a:1", "b:2", "c:3")
    assert e.failed("a:1", "c:3") == "c:3" and e.take_move()
    assert e.failed("c:3") == "a:1"  # connection refused: the next one
    assert e.failed("b:2") == "a:1", "a stale failure of another address moves nothing"
    assert e.failed("a:1", "d:4") == "d:4" and e.all[-1] == "d:4"


def test_moves_restart_the_backoff_once_per_address_between_good_streams() -> None:
    e = Endpoints(["a:1", "b:2"])
    assert e.failed(e.current()) and e.take_move()
    assert not e.take_move(), "taken once"
    e.failed(e.current())
    assert e.take_move()
    e.failed(e.current())
    assert not e.take_move(), "every orchestrator refused: back off now"
    e.settled()
    e.failed(e.current())
    assert e.take_move()


def test_leader_of_reads_only_an_unavailable_refusal() -> None:
    named = ((LEADER_METADATA, "b:2"),)
    assert leader_of(Refusal(grpc.StatusCode.UNAVAILABLE, named)) == "b:2"
    assert leader_of(Refusal(grpc.StatusCode.PERMISSION_DENIED, named)) == ""
    assert leader_of(Refusal(grpc.StatusCode.UNAVAILABLE, ())) == ""
    assert leader_of(ValueError("not a call")) == ""
    with pytest.raises(ValueError, match="at least one"):
        Endpoints([])
