"""How the gateway tells internal services whose request they serve.

Internal services trust this metadata: only the gateway is reachable from outside, and it
always overwrites it with the tenant of the authenticated key.
"""

from __future__ import annotations

import grpc

from comfyfleet.common.errors import Unauthenticated

TENANT_KEY = "x-comfyfleet-tenant"
# The most executions of the tenant that may run at once, when the tenant sets its own cap
# (absent: the scheduler's default). Sent with CreateExecution.
MAX_CONCURRENCY_KEY = "x-comfyfleet-tenant-max-concurrency"


def tenant_metadata(tenant: str, *, max_concurrency: int = 0) -> tuple[tuple[str, str], ...]:
    if max_concurrency > 0:
        return ((TENANT_KEY, tenant), (MAX_CONCURRENCY_KEY, str(max_concurrency)))
    return ((TENANT_KEY, tenant),)


def max_concurrency_of(context: grpc.aio.ServicerContext) -> int | None:
    """The tenant's own concurrency cap the gateway sent, or None for the default."""
    for key, value in context.invocation_metadata() or ():
        if key == MAX_CONCURRENCY_KEY and isinstance(value, str) and value.isdigit():
            return int(value) or None
    return None


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    """The tenant the gateway authenticated, or UNAUTHENTICATED when the call has none."""
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_KEY and isinstance(value, str) and value:
            return value
    raise Unauthenticated("the call carries no tenant")
