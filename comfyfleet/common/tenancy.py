"""How the gateway tells internal services whose request they serve.

Internal services trust this metadata: only the gateway is reachable from outside, and it
always overwrites it with the tenant of the authenticated key.
"""

from __future__ import annotations

import grpc

from comfyfleet.common.errors import Unauthenticated

TENANT_KEY = "x-comfyfleet-tenant"


def tenant_metadata(tenant: str) -> tuple[tuple[str, str], ...]:
    return ((TENANT_KEY, tenant),)


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    """The tenant the gateway authenticated, or UNAUTHENTICATED when the call has none."""
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_KEY and isinstance(value, str) and value:
            return value
    raise Unauthenticated("the call carries no tenant")
