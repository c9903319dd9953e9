"""The SDK's retry decisions without I/O: which answers are tried again, how long it waits,
and the request_id that makes a retried create safe."""

from __future__ import annotations

import random

import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.sdk.errors import ApiError
from comfyfleet.sdk.retry import NO_RETRY, RetryPolicy, with_request_id
from comfyfleet.sdk.settings import Settings


def error(code: int, retry_after_s: float | None = None) -> ApiError:
    status = status_pb2.Status(code=code, message="x")
    if retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after_s * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return ApiError(status)


@pytest.mark.parametrize(
    "code",
    [
        code_pb2.INTERNAL,
        code_pb2.UNKNOWN,
        code_pb2.INVALID_ARGUMENT,
        code_pb2.DEADLINE_EXCEEDED,
        code_pb2.RESOURCE_EXHAUSTED,
        code_pb2.NOT_FOUND,
    ],
    ids=code_pb2.Code.Name,
)
def test_only_unavailable_is_tried_again(code: int) -> None:
    policy = RetryPolicy()
    assert policy.wait_before_retry(1, error(code)) is None
    assert policy.wait_before_retry(1, error(code_pb2.UNAVAILABLE)) is not None


def test_backoff_grows_with_full_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=20, initial_backoff_s=0.5, max_backoff_s=3.0)
    unavailable = error(code_pb2.UNAVAILABLE)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (10, 3.0)]:
        waits = [
            policy.wait_before_retry(attempt, unavailable, random.Random(seed))
            for seed in range(200)
        ]
        assert all(w is not None and 0 <= w <= ceiling for w in waits)
        assert max(w for w in waits if w is not None) > 0.8 * ceiling


def test_the_platforms_retry_delay_is_the_least_wait() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=0.1)
    wait = policy.wait_before_retry(1, error(code_pb2.UNAVAILABLE, retry_after_s=1.5))
    assert wait == 1.5


def test_a_delay_longer_than_the_policy_allows_is_not_waited_for() -> None:
    policy = RetryPolicy(max_wait_s=10)
    assert policy.wait_before_retry(1, error(code_pb2.UNAVAILABLE, retry_after_s=60)) is None


def test_tries_are_bounded() -> None:
    policy = RetryPolicy(max_attempts=3)
    unavailable = error(code_pb2.UNAVAILABLE)
    assert policy.wait_before_retry(2, unavailable) is not None
    assert policy.wait_before_retry(3, unavailable) is None
    assert NO_RETRY.wait_before_retry(1, unavailable) is None


def test_a_create_without_a_request_id_gets_one_and_keeps_it() -> None:
    request = executions_pb2.CreateExecutionRequest(workflow_json="{}")
    with_request_id(request)
    first = request.request_id
    assert first.startswith("sdk-")
    with_request_id(request)
    assert request.request_id == first
    given = executions_pb2.CreateExecutionRequest(request_id="mine")
    assert with_request_id(given).request_id == "mine"  # type: ignore[attr-defined]
    read = executions_pb2.GetExecutionRequest(id="exe_1")
    assert with_request_id(read) == executions_pb2.GetExecutionRequest(id="exe_1")


def test_settings_bound_the_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_MAX_ATTEMPTS", "3")
    assert Settings.discover("a:1", "k").retry.max_attempts == 3
    assert Settings.discover("a:1", "k", max_attempts=1).retry == NO_RETRY
    monkeypatch.delenv("COMFYFLEET_MAX_ATTEMPTS")
    assert Settings.discover("a:1", "k").retry == RetryPolicy()
