"""List page tokens."""

from __future__ import annotations

import pytest

from comfyfleet.common.errors import InvalidArgument
from services.scheduler.executions import decode_page_token, encode_page_token
from services.scheduler.lifecycle import State


def test_tokens_round_trip_with_their_filter() -> None:
    token = encode_page_token("exe_123", State.RUNNING)
    assert decode_page_token(token, State.RUNNING) == "exe_123"
    assert decode_page_token("", None) is None


@pytest.mark.parametrize("token", ["%%%", "bm90IGpzb24", "WzFd"])
def test_garbage_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument):
        decode_page_token(token, None)


def test_a_token_is_bound_to_its_state_filter() -> None:
    with pytest.raises(InvalidArgument):
        decode_page_token(encode_page_token("exe_1", State.QUEUED), None)
