"""HTTP parts -> request messages, and responses -> JSON, on a test-only service's descriptors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from google.protobuf import json_format, message

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from services.gateway.rest.routing import Route, RouteTable, routes_of
from services.gateway.rest.transcode import (
    HttpInput,
    JsonOptions,
    build_request,
    response_json,
    sequence_of,
)
from tests.unit.rest import kitchen

TABLE = RouteTable(routes_of([kitchen.service()]))


def _transcode(
    method: str,
    path: str,
    *,
    query: Mapping[str, Sequence[str]] | None = None,
    body: bytes = b"",
    last_event_id: str | None = None,
    options: JsonOptions | None = None,
) -> message.Message:
    found = TABLE.lookup(method, path)
    assert found.route is not None, f"{method} {path} found no route"
    given = HttpInput(found.variables, query or {}, body, last_event_id)
    return build_request(found.route, given, options or JsonOptions())


def _violations(**kwargs: object) -> list[FieldViolation]:
    with pytest.raises(InvalidArgument) as caught:
        _transcode(**kwargs)  # type: ignore[arg-type]
    return caught.value.violations


def _as_dict(msg: message.Message) -> dict[str, object]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def test_query_parameters_fill_scalars_of_every_kind() -> None:
    query = {
        "count": ["7"],
        "big": ["9007199254740993"],
        "flag": ["true"],
        "ratio": ["0.25"],
        "color": ["COLOR_BLUE"],
        "blob": ["aGk="],
    }
    got = _as_dict(_transcode("GET", "/v1/items/i1", query=query))
    assert got == {
        "id": "i1",
        "count": 7,
        "big": "9007199254740993",
        "flag": True,
        "ratio": 0.25,
        "color": "COLOR_BLUE",
        "blob": "aGk=",
    }


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("T", True), ("False", False), ("0", False)]
)
def test_booleans_parse_as_grpc_gateway_does(raw: str, expected: bool) -> None:
    msg = _transcode("GET", "/v1/items/i1", query={"flag": [raw]})
    assert msg.flag is expected  # type: ignore[attr-defined]


def test_enums_by_name_or_number() -> None:
    assert _transcode("GET", "/v1/items/i", query={"color": ["2"]}).color == 2  # type: ignore[attr-defined]
    msg = _transcode("GET", "/v1/items/i", query={"colors": ["COLOR_RED", "2"]})
    assert list(msg.colors) == [1, 2]  # type: ignore[attr-defined]


def test_repeated_nested_map_and_well_known_types() -> None:
    query = {
        "tags": ["a", "b"],
        "nums": ["1", "2", "3"],
        "nested.inner.leaf": ["deep"],
        "nested.name": ["n"],
        "labels[env]": ["prod"],
        "labels[team]": ["ml"],
        "counts[x]": ["3"],
        "whenTime": ["2024-05-01T12:00:00Z"],
        "wait": ["1.5s"],
        "maybe_count": ["0"],
        "maybeFlag": ["false"],
    }
    got = _as_dict(_transcode("GET", "/v1/items/i", query=query))
    assert got["tags"] == ["a", "b"]
    assert got["nums"] == [1, 2, 3]
    assert got["nested"] == {"name": "n", "inner": {"leaf": "deep"}}
    assert got["labels"] == {"env": "prod", "team": "ml"}
    assert got["counts"] == {"x": 3}
    assert got["when_time"] == "2024-05-01T12:00:00Z"
    assert got["wait"] == "1.500s"
    # Wrappers keep presence: an explicit zero and false are set, not absent.
    assert got["maybe_count"] == 0
    assert got["maybe_flag"] is False


def test_lower_camel_and_original_names_both_work() -> None:
    a = _transcode("GET", "/v1/items/i", query={"after_sequence": ["5"]})
    b = _transcode("GET", "/v1/items/i", query={"afterSequence": ["5"]})
    assert a == b
    assert a.after_sequence == 5  # type: ignore[attr-defined]


def test_unknown_parameters_are_ignored() -> None:
    msg = _transcode("GET", "/v1/items/i", query={"access_token": ["x"], "nested.nope": ["y"]})
    assert _as_dict(msg) == {"id": "i"}


def test_path_bound_fields_ignore_query_parameters() -> None:
    assert _transcode("GET", "/v1/items/real", query={"id": ["fake"]}).id == "real"  # type: ignore[attr-defined]


def test_bad_query_values_name_their_parameter() -> None:
    violations = _violations(
        method="GET",
        path="/v1/items/i",
        query={"count": ["x"], "flag": ["maybe"], "color": ["PURPLE"], "wait": ["5"]},
    )
    assert sorted(v.field for v in violations) == ["color", "count", "flag", "wait"]
    assert all(v.reason == "INVALID_QUERY_PARAMETER" for v in violations)
    assert all(v.description for v in violations)


def test_a_singular_field_takes_one_value() -> None:
    [violation] = _violations(method="GET", path="/v1/items/i", query={"count": ["1", "2"]})
    assert violation.field == "count"
    assert "one value" in violation.description


def test_messages_cannot_come_from_one_query_value() -> None:
    [violation] = _violations(method="GET", path="/v1/items/i", query={"nested": ["x"]})
    assert violation.field == "nested"


def test_body_star_fills_the_message_and_ignores_the_query() -> None:
    body = b'{"id": "b1", "count": 3, "nested": {"inner": {"leaf": "x"}}, "when_time": "2024-01-01T00:00:00Z"}'
    msg = _transcode("POST", "/v1/items", body=body, query={"count": ["9"]})
    assert _as_dict(msg) == {
        "id": "b1",
        "count": 3,
        "nested": {"inner": {"leaf": "x"}},
        "when_time": "2024-01-01T00:00:00Z",
    }


def test_an_empty_body_is_an_empty_message() -> None:
    assert _as_dict(_transcode("POST", "/v1/items", body=b"  ")) == {}
    assert _as_dict(_transcode("POST", "/v1/items", body=b"null")) == {}


def test_malformed_json_is_a_violation_without_a_field() -> None:
    [violation] = _violations(method="POST", path="/v1/items", body=b'{"id": ')
    assert violation.field == ""
    assert violation.reason == "INVALID_JSON"
    assert "not valid JSON" in violation.description


def test_lone_surrogates_anywhere_in_a_body_name_where_they_are() -> None:
    # Only a "\ud800" escape makes one (a body that is UTF-8 cannot hold one raw); protobuf
    # cannot carry it, and json_format crashed on one where it expected a message.
    body = (
        rb'{"id": "\\ud800 is escaped, fine", "nesteds": ["\ud83d"], "labels": {"\udc00": "x"},'
        rb' "tags": ["ok \ud83d\ude00", "\ud800"]}'
    )
    violations = _violations(method="POST", path="/v1/items", body=body)
    assert sorted((v.field, v.reason) for v in violations) == [
        ('labels["\\udc00"]', "INVALID_TEXT"),
        ("nesteds[0]", "INVALID_TEXT"),
        ("tags[1]", "INVALID_TEXT"),
    ]


def test_body_star_must_be_an_object() -> None:
    [violation] = _violations(method="POST", path="/v1/items", body=b"[1, 2]")
    assert "JSON object" in violation.description


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"count": "many"}', "count"),
        (b'{"nested": {"inner": {"n": 1.5}}}', "nested.inner.n"),
        (b'{"tags": "not-a-list"}', "tags"),
        (b'{"whenTime": "yesterday"}', "whenTime"),
    ],
)
def test_type_mismatches_name_the_field(body: bytes, field: str) -> None:
    [violation] = _violations(method="POST", path="/v1/items", body=body)
    assert violation.field == field
    assert violation.reason == "INVALID_FIELD_VALUE"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"id": "x", "typo": 1}', "typo"),
        (b'{"id": "x", "nesteds": [{"name": "a"}, {"nam": "b"}]}', "nesteds[1].nam"),
        (b'{"id": "x", "color": "PURPLE"}', "color"),
    ],
)
def test_unknown_names_are_dropped_unless_configured_otherwise(body: bytes, field: str) -> None:
    # grpc-gateway's DiscardUnknown drops unknown fields and unknown enum names alike.
    assert _as_dict(_transcode("POST", "/v1/items", body=body)).get("id") == "x"
    strict = JsonOptions(discard_unknown=False)
    [violation] = _violations(method="POST", path="/v1/items", body=body, options=strict)
    assert violation.field == field


def test_body_field_takes_the_body_and_query_fills_the_rest() -> None:
    msg = _transcode(
        "PUT",
        "/v1/items/i/nested",
        body=b'{"name": "n"}',
        query={"count": ["2"], "nested.name": ["q"]},
    )
    assert _as_dict(msg) == {"id": "i", "count": 2, "nested": {"name": "n"}}


def test_a_repeated_body_field() -> None:
    msg = _transcode("PUT", "/v1/items/i/tags", body=b'["a", "b"]')
    assert list(msg.tags) == ["a", "b"]  # type: ignore[attr-defined]


def test_path_variables_win_over_the_body() -> None:
    msg = _transcode("PATCH", "/v1/items/from-path", body=b'{"id": "from-body", "count": 1}')
    assert msg.item.id == "from-path"  # type: ignore[attr-defined]


def test_patch_implies_the_update_mask_from_the_body() -> None:
    msg = _transcode(
        "PATCH",
        "/v1/items/i",
        body=b'{"count": 1, "nested": {"inner": {"leaf": "x"}}, "labels": {"a": "b"}}',
    )
    assert sorted(msg.update_mask.paths) == ["count", "labels", "nested.inner.leaf"]  # type: ignore[attr-defined]


def test_an_explicit_update_mask_is_kept_in_either_spelling() -> None:
    for raw in ("when_time,nested.name", "whenTime,nested.name"):
        msg = _transcode("PATCH", "/v1/items/i", body=b'{"count": 1}', query={"update_mask": [raw]})
        assert list(msg.update_mask.paths) == ["when_time", "nested.name"]  # type: ignore[attr-defined]


def test_nested_path_variables_of_additional_bindings() -> None:
    msg = _transcode("GET", "/v1/shelves/top/items/i9")
    assert _as_dict(msg) == {"id": "i9", "nested": {"name": "top"}}


def test_multi_segment_path_variables() -> None:
    assert _transcode("GET", "/v1/files/a/b.txt").id == "files/a/b.txt"  # type: ignore[attr-defined]


def test_last_event_id_resumes_after_the_sequence_and_wins_over_the_query() -> None:
    msg = _transcode(
        "GET", "/v1/items/i:watch", query={"after_sequence": ["1"]}, last_event_id="41"
    )
    assert msg.after_sequence == 41  # type: ignore[attr-defined]


def test_a_bad_last_event_id_is_a_violation_of_the_header() -> None:
    [violation] = _violations(method="GET", path="/v1/items/i:watch", last_event_id="abc")
    assert violation.field == "Last-Event-ID"


def _route(name: str) -> Route:
    return next(r for r in TABLE.routes if r.method.name == name)


def test_responses_write_unpopulated_fields_by_default() -> None:
    item = kitchen.message_class("Item")(id="x")
    got = response_json(item, "", JsonOptions())
    assert got["id"] == "x"
    assert got["count"] == 0
    assert got["tags"] == []
    assert "nested" not in got  # messages have presence: unset stays absent
    assert response_json(item, "", JsonOptions(emit_unpopulated=False)) == {"id": "x"}


def test_response_body_picks_one_field() -> None:
    item_cls = kitchen.message_class("Item")
    item = item_cls(id="x", tags=["a"])
    item.nested.name = "n"
    assert response_json(item, _route("ReplaceNested").response_body, JsonOptions()) == {
        "name": "n"
    }
    assert response_json(item, _route("ReplaceTags").response_body, JsonOptions()) == ["a"]
    assert response_json(item_cls(), "nested", JsonOptions()) == {}


def test_sequence_is_read_when_the_message_has_one() -> None:
    assert sequence_of(kitchen.message_class("Item")(sequence=12)) == 12
    assert sequence_of(kitchen.message_class("Nested")()) is None
