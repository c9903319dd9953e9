"""Which environment an execution runs in, and the errors that say it cannot be checked."""

from __future__ import annotations

from comfyfleet.common.errors import error_info, field_violations
from services.gateway.environments import pending_catalog, resolve_environment, unknown_environment


def test_the_request_then_the_tenant_then_the_platform() -> None:
    assert resolve_environment("a", "b", "native") == "a"
    assert resolve_environment("", "b", "native") == "b"
    assert resolve_environment("", "", "native") == "native"


def test_an_unknown_environment_names_the_field() -> None:
    status = unknown_environment("nowhere").to_status()
    [violation] = field_violations(status)
    assert (violation.field, violation.reason) == ("environment", "ENVIRONMENT_NOT_FOUND")
    info = error_info(status)
    assert info is not None and info.metadata["environment"] == "nowhere"
    other = unknown_environment("x", "why", "tenant.default_environment").to_status()
    assert field_violations(other)[0].field == "tenant.default_environment"


def test_a_pending_catalog_is_a_failed_precondition_saying_what_to_do() -> None:
    error = pending_catalog("later")
    assert error.reason == "ENVIRONMENT_CATALOG_PENDING"
    assert "no executor of it has registered" in error.message
