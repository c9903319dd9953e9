"""Who may touch which tenant, and which scopes a key may grant."""

from __future__ import annotations

import pytest
from google.protobuf import field_mask_pb2

from comfyfleet.common.errors import InvalidArgument, NotFound, PermissionDenied
from comfyfleet.tenants.v1 import tenants_pb2
from services.gateway.auth import Principal
from services.gateway.tenant_servicer import granted_scopes, update_fields
from services.gateway.tenants import DEFAULT_SCOPES

ADMIN = Principal("ten_a", "k1", frozenset({"admin"}))
MANAGER = Principal("ten_b", "k2", frozenset({"keys:write", "executions:write"}))


def test_own_tenant_by_id_or_dash_and_another_is_not_found() -> None:
    assert MANAGER.tenant("-") == "ten_b"
    assert MANAGER.tenant("ten_b") == "ten_b"
    with pytest.raises(NotFound):
        MANAGER.tenant("ten_a")
    assert ADMIN.tenant("ten_b") == "ten_b"
    with pytest.raises(InvalidArgument):
        MANAGER.tenant("")


def test_admin_grants_anything_known_and_defaults() -> None:
    assert granted_scopes(ADMIN, ["admin"]) == ["admin"]
    assert granted_scopes(ADMIN, []) == list(DEFAULT_SCOPES)


def test_a_key_grants_only_scopes_it_holds() -> None:
    assert granted_scopes(MANAGER, ["executions:write"]) == ["executions:write"]
    assert granted_scopes(MANAGER, []) == ["executions:write"]
    for escalation in (["admin"], ["models:write"], ["executions:write", "webhooks:write"]):
        with pytest.raises(PermissionDenied):
            granted_scopes(MANAGER, escalation)


def test_unknown_scopes_are_invalid_before_anything_else() -> None:
    with pytest.raises(InvalidArgument):
        granted_scopes(MANAGER, ["root"])


def test_scopes_are_required_per_method() -> None:
    MANAGER.require("keys:write")
    ADMIN.require("webhooks:write")
    with pytest.raises(PermissionDenied):
        MANAGER.require("models:write")


def update(mask: list[str], **tenant: object) -> tenants_pb2.UpdateTenantRequest:
    return tenants_pb2.UpdateTenantRequest(
        tenant=tenants_pb2.Tenant(id="ten_a", **tenant),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=mask),
    )


def test_update_fields_from_the_mask_or_from_what_is_set() -> None:
    assert update_fields(update(["max_concurrency"])) == {"max_concurrency"}
    assert update_fields(update([], max_concurrency=3)) == {"max_concurrency"}
    rate = tenants_pb2.RateLimit(requests_per_second=1)
    assert update_fields(update([], rate_limit=rate)) == {"rate_limit"}
    assert update_fields(update([])) == set()
    with pytest.raises(InvalidArgument):
        update_fields(update(["name"]))
