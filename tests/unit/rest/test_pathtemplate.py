"""HttpRule path templates: grammar, matching, decoding and which template is more specific."""

from __future__ import annotations

import pytest

from services.gateway.rest.pathtemplate import TemplateError, parse


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/executions", "/v1/executions", {}),
        ("/v1/executions/{id}", "/v1/executions/abc", {"id": "abc"}),
        ("/v1/executions/{id}:cancel", "/v1/executions/abc:cancel", {"id": "abc"}),
        ("/v1/models:resolve", "/v1/models:resolve", {}),
        ("/v1/{a.b}/x", "/v1/val/x", {"a.b": "val"}),
        (
            "/v1/{name=projects/*/things/*}",
            "/v1/projects/p1/things/t1",
            {"name": "projects/p1/things/t1"},
        ),
        ("/v1/{name=files/**}", "/v1/files/a/b/c.txt", {"name": "files/a/b/c.txt"}),
        ("/v1/{name=files/**}", "/v1/files", {"name": "files"}),
        ("/v1/{path=**}:get", "/v1/a/b:get", {"path": "a/b"}),
        ("/v1/*/x/{id}", "/v1/anything/x/7", {"id": "7"}),
        (
            "/v1/tenants/{tenant_id}/apiKeys/{id}:revoke",
            "/v1/tenants/t/apiKeys/k:revoke",
            {"tenant_id": "t", "id": "k"},
        ),
    ],
)
def test_matches_and_binds_variables(template: str, path: str, expected: dict[str, str]) -> None:
    assert parse(template).match(path) == expected


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/v1/executions", "/v1/executions/x"),
        ("/v1/executions/{id}", "/v1/executions"),
        ("/v1/executions/{id}", "/v1/executions/"),
        ("/v1/executions/{id}", "/v1/executions/a/b"),
        ("/v1/executions/{id}:cancel", "/v1/executions/abc"),
        ("/v1/executions/{id}:cancel", "/v1/executions/abc:watch"),
        ("/v1/executions/{id}:cancel", "/v1/executions/:cancel"),
        ("/v1/{name=projects/*/things/*}", "/v1/projects/p1/others/t1"),
        ("/v1/models:resolve", "/v1/models"),
        ("/v1/x", "v1/x"),
    ],
)
def test_does_not_match(template: str, path: str) -> None:
    assert parse(template).match(path) is None


def test_a_template_without_verb_keeps_a_colon_in_the_value() -> None:
    # grpc-gateway does the same: GET /v1/executions/a:b asks for the execution "a:b".
    assert parse("/v1/executions/{id}").match("/v1/executions/a:cancel") == {"id": "a:cancel"}


def test_single_segment_values_are_fully_decoded() -> None:
    assert parse("/v1/x/{id}").match("/v1/x/a%2Fb%20c") == {"id": "a/b c"}


def test_multi_segment_values_keep_encoded_slashes() -> None:
    got = parse("/v1/{name=files/**}").match("/v1/files/dir/a%2Fb%20c")
    assert got == {"name": "files/dir/a%2Fb c"}


def test_literals_compare_decoded() -> None:
    assert parse("/v1/executions").match("/v1/%65xecutions") == {}


def test_parse_structure() -> None:
    template = parse("/v1/{name=projects/*/things/**}:publish")
    assert template.verb == "publish"
    assert [v.field_path for v in template.variables] == ["name"]
    assert (template.variables[0].start, template.variables[0].end) == (1, 5)
    assert len(template.segments) == 5


@pytest.mark.parametrize(
    "bad",
    [
        "v1/x",
        "/v1/{id",
        "/v1/id}",
        "/v1/{a={b}}",
        "/v1/**/x",
        "/v1/{9bad}",
        "/v1/{id}/{id}",
        "/v1/x:",
    ],
)
def test_rejects_invalid_templates(bad: str) -> None:
    with pytest.raises(TemplateError):
        parse(bad)


def _most_specific(path: str, *templates: str) -> str:
    matching = [parse(t) for t in templates if parse(t).match(path) is not None]
    return max(matching, key=lambda t: t.rank).source


def test_literal_segments_win_over_variables() -> None:
    assert _most_specific("/v1/things/special", "/v1/things/{id}", "/v1/things/special") == (
        "/v1/things/special"
    )
    assert _most_specific("/v1/a/b", "/v1/{x}/b", "/v1/a/{y}") == "/v1/a/{y}"


def test_single_wildcards_win_over_double() -> None:
    assert _most_specific("/v1/a/b", "/v1/{rest=**}", "/v1/a/{id}") == "/v1/a/{id}"


def test_a_verb_wins_over_a_variable_that_would_swallow_it() -> None:
    assert (
        _most_specific(
            "/v1/executions/abc:watch", "/v1/executions/{id}", "/v1/executions/{id}:watch"
        )
        == "/v1/executions/{id}:watch"
    )
