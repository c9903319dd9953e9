"""List page tokens."""

from __future__ import annotations

import pytest

from comfyfleet.common.errors import InvalidArgument
from services.scheduler.executions import _make_token, _read_token
from services.scheduler.lifecycle import State


def test_tokens_round_trip_with_their_filter() -> None:
    token = _make_token("exe_123", State.RUNNING)
    assert _read_token(token, State.RUNNING) == "exe_123"
    assert _read_token("", None) is None


@pytest.mark.parametrize("token", ["%%%", "bm90IGpzb24", "WzFd"])
def test_garbage_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument):
        _read_token(token, None)


def test_a_token_is_bound_to_its_state_filter() -> None:
    with pytest.raises(InvalidArgument):
        _read_token(_make_token("exe_1", State.QUEUED), None)
