"""Property tests of the gateway's checks: keys, rate limits, request ids, tenant limits,
workflows and input URLs. Every input either passes or gets the typed error; none crashes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfyfleet.common.addresses import AddressPolicy
from comfyfleet.common.errors import InvalidArgument
from comfyfleet.common.workflowcheck import check_workflow
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.workflow.catalog import NATIVE_CATALOG
from services.gateway import keys
from services.gateway.fetch import FetchFailed, _check_url
from services.gateway.idempotency import MAX_REQUEST_ID, fill_request_id
from services.gateway.ratelimit import Gcra, RateLimit
from services.gateway.tenants import (
    MAX_BURST,
    MAX_CONCURRENCY,
    MAX_RATE_PER_SECOND,
    Rate,
    check_tenant,
)
from services.gateway.validation import workflow_text

SETTINGS = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@SETTINGS
@given(st.text(max_size=80))
def test_parsing_any_string_as_a_key_never_fails(text: str) -> None:
    parsed = keys.parse(text)
    assert parsed is None or text.startswith("cfk_")


@SETTINGS
@given(st.data())
def test_a_changed_character_never_authenticates(data: st.DataObject) -> None:
    new = keys.generate()
    assert keys.parse(new.token) is not None
    position = data.draw(st.integers(0, len(new.token) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != new.token[position]))
    mutated = new.token[:position] + replacement + new.token[position + 1 :]
    parsed = keys.parse(mutated)
    # A typo is caught by the checksum, or, failing that, the secret no longer matches.
    assert (
        parsed is None or parsed.key_id != new.key_id or not keys.matches(parsed, new.secret_sha256)
    )


@SETTINGS
@given(
    st.floats(0.5, 50),
    st.integers(1, 20),
    st.lists(st.floats(0, 0.5), min_size=1, max_size=200),
)
def test_gcra_never_admits_more_than_burst_plus_rate_times_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    now = [0.0]
    gcra = Gcra(clock=lambda: now[0])
    limit = RateLimit(rate, burst)
    admitted: list[float] = []
    for gap in gaps:
        now[0] += gap
        wait = gcra.retry_after("k", limit)
        if wait is None:
            admitted.append(now[0])
        else:
            assert wait > 0
    for i, start in enumerate(admitted):
        in_window = [t for t in admitted[i:] if t - start <= 1.0]
        assert len(in_window) <= burst + rate * 1.0 + 1e-6


@SETTINGS
@given(st.floats(0.5, 100), st.integers(1, 10), st.integers(1, 100))
def test_gcra_admits_requests_that_wait_as_told(rate: float, burst: int, requests: int) -> None:
    now = [0.0]
    gcra = Gcra(clock=lambda: now[0])
    limit = RateLimit(rate, burst)
    for _ in range(requests):
        wait = gcra.retry_after("k", limit)
        if wait is not None:
            now[0] += wait
            assert gcra.retry_after("k", limit) is None


@SETTINGS
@given(st.text(max_size=200), st.text(max_size=200))
def test_request_ids_are_taken_or_refused_with_a_field_violation(
    given_id: str, header: str
) -> None:
    request = executions_pb2.CreateExecutionRequest(request_id=given_id)
    try:
        chosen = fill_request_id(request, [("idempotency-key", header)])
    except InvalidArgument as err:
        assert err.violations[0].field == "request_id"
        differ = given_id and header.strip() and header.strip() != given_id
        wanted = given_id or header.strip()
        assert differ or len(wanted) > MAX_REQUEST_ID or not wanted.isprintable()
        return
    assert chosen == request.request_id == (given_id or header.strip())
    assert len(chosen) <= MAX_REQUEST_ID
    assert chosen.isprintable()


@SETTINGS
@given(
    st.text(max_size=70),
    st.integers(-10, 2 * MAX_CONCURRENCY),
    st.floats(allow_nan=True),
    st.integers(-5, 2 * MAX_BURST),
)
def test_tenant_fields_pass_exactly_when_within_their_ranges(
    name: str, concurrency: int, rate: float, burst: int
) -> None:
    valid = (
        bool(name)
        and name[0].isascii()
        and name[0].islower()
        and 2 <= len(name) <= 63
        and all(c.isascii() and (c.islower() or c.isdigit() or c == "-") for c in name)
        and 0 <= concurrency <= MAX_CONCURRENCY
        and 0 <= rate <= MAX_RATE_PER_SECOND
        and 0 <= burst <= MAX_BURST
    )
    try:
        check_tenant(name, concurrency, Rate(rate, burst))
    except InvalidArgument as err:
        assert not valid and err.violations
        return
    assert valid


node = st.fixed_dictionaries(
    {
        "class_type": st.sampled_from(["LoadImage", "SaveImage", "ImageInvert", "Nope", ""]),
        "inputs": st.dictionaries(
            st.sampled_from(["image", "images", "filename_prefix", "x"]),
            st.one_of(
                st.text(max_size=8),
                st.integers(),
                st.lists(st.text(max_size=3) | st.integers(), max_size=3),
            ),
            max_size=3,
        ),
    }
)


NODE_IDS = st.text(max_size=3)


def test_a_unicode_digit_node_id_is_not_a_crash() -> None:
    with pytest.raises(InvalidArgument):
        check_workflow(
            json.dumps({"\u00b2": {"class_type": "SaveImage", "inputs": {}}}), NATIVE_CATALOG
        )


@SETTINGS
@given(
    st.one_of(
        st.dictionaries(NODE_IDS, node, max_size=4),
        st.from_type(type(None)),
        st.integers(),
        st.text(max_size=10),
    )
)
def test_any_workflow_is_accepted_or_refused_with_violations(graph: Any) -> None:
    try:
        text = workflow_text(json.dumps(graph), None)
        check_workflow(text, NATIVE_CATALOG)
    except InvalidArgument as err:
        assert err.violations or err.message
        return
    assert isinstance(graph, dict) and graph


@SETTINGS
@given(
    st.text(max_size=60)
    | st.from_regex(r"https?://[a-z0-9.:\[\]@-]{0,30}/[a-z]{0,5}", fullmatch=True)
)
def test_input_urls_are_checked_or_refused_in_words(url: str) -> None:
    try:
        _check_url(url, AddressPolicy())
    except FetchFailed as err:
        assert str(err)
        return
    assert url.startswith(("http://", "https://"))
