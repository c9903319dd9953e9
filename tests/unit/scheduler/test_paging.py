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


def test_a_token_is_bound_to_its_label_filter_whatever_the_order_of_pairs() -> None:
    token = encode_page_token("exe_7", None, {"env": "prod", "team": "a"})
    assert decode_page_token(token, None, {"team": "a", "env": "prod"}) == "exe_7"
    for other in (None, {}, {"env": "prod"}, {"env": "prod", "team": "b"}):
        with pytest.raises(InvalidArgument) as caught:
            decode_page_token(token, None, other)
        assert [v.field for v in caught.value.violations] == ["page_token"]


def test_an_unfiltered_token_refuses_a_label_filter() -> None:
    token = encode_page_token("exe_7", None)
    assert decode_page_token(token, None, {}) == "exe_7"
    with pytest.raises(InvalidArgument):
        decode_page_token(token, None, {"env": "prod"})


def test_tokens_stay_short_however_long_the_labels() -> None:
    labels = {f"key{i}": "v" * 256 for i in range(64)}
    assert len(encode_page_token("exe_" + "x" * 26, State.QUEUED, labels)) < 200
