"""What the gateway tells internal services about the tenant it serves."""

from __future__ import annotations

from typing import Any

from comfyfleet.common.tenancy import (
    MAX_CONCURRENCY_KEY,
    TENANT_KEY,
    max_concurrency_of,
    tenant_metadata,
)


class Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> Any:
        return self.metadata


def test_a_tenant_cap_travels_only_when_the_tenant_sets_one() -> None:
    assert tenant_metadata("ten_a") == ((TENANT_KEY, "ten_a"),)
    assert tenant_metadata("ten_a", max_concurrency=0) == ((TENANT_KEY, "ten_a"),)
    with_cap = tenant_metadata("ten_a", max_concurrency=3)
    assert (MAX_CONCURRENCY_KEY, "3") in with_cap
    assert max_concurrency_of(Context(with_cap)) == 3  # type: ignore[arg-type]
    assert max_concurrency_of(Context(tenant_metadata("ten_a"))) is None  # type: ignore[arg-type]
    assert max_concurrency_of(Context(((MAX_CONCURRENCY_KEY, "x"),))) is None  # type: ignore[arg-type]
