"""Ids sort in the order one process made them, the property list pages rely on."""

from __future__ import annotations

import re

import pytest

from comfyfleet.common import ids


@pytest.fixture(autouse=True)
def _restore_last_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that move the clock forward must not leave future ids to the rest of the run."""
    monkeypatch.setattr(ids, "_last", ids._last)


def test_ids_made_in_a_burst_sort_in_order() -> None:
    made = [ids.new_id("sub") for _ in range(5000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_shape_is_prefix_and_26_base32_characters() -> None:
    assert re.fullmatch(r"exe_[0-9a-hjkmnp-tv-z]{26}", ids.new_id("exe"))


def test_one_millisecond_still_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_700_000_000_000_000_000)
    made = [ids.new_id("msg") for _ in range(200)]
    assert made == sorted(made)
    assert len(set(made)) == 200


def test_a_clock_that_steps_back_does_not_reorder(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_800_000_000_000_000_000]
    monkeypatch.setattr(ids.time, "time_ns", lambda: now[0])
    first = ids.new_id("evt")
    now[0] -= 5_000_000_000
    second = ids.new_id("evt")
    assert second > first


def test_a_later_millisecond_starts_a_fresh_random_part(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_900_000_000_000_000_000]
    monkeypatch.setattr(ids.time, "time_ns", lambda: now[0])
    ids.new_id("evt")
    now[0] += 1_000_000
    later = ids.new_id("evt")
    body = int("".join(f"{ids._ALPHABET.index(c):05b}" for c in later[4:]), 2)
    assert body >> 80 == now[0] // 1_000_000
