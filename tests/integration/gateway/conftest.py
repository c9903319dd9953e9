"""A real gateway on a real PostgreSQL; internal services only where a test starts them."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from comfyfleet.common.config import DatabaseConfig
from comfyfleet.tenants.v1 import tenants_pb2, tenants_pb2_grpc
from services.gateway.config import Config, Limits
from services.gateway.server import Gateway, build_gateway

# Nothing listens on the discard port: calls to an internal service fail fast.
UNREACHABLE = "127.0.0.1:9"
Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def read_key(path: Path) -> str:
    return path.read_text().strip()


@dataclass
class Gw:
    gateway: Gateway
    channel: grpc.aio.Channel
    tenants: tenants_pb2_grpc.TenantServiceStub
    admin: Metadata

    @property
    def rest_url(self) -> str:
        return self.gateway.rest.url

    async def tenant(self, name: str, **fields: Any) -> tenants_pb2.Tenant:
        request = tenants_pb2.CreateTenantRequest(tenant=tenants_pb2.Tenant(name=name, **fields))
        return await self.tenants.CreateTenant(request, metadata=self.admin)

    async def key(self, tenant_id: str, *scopes: str, **fields: Any) -> Metadata:
        """A new key of the tenant, as call metadata."""
        request = tenants_pb2.CreateApiKeyRequest(
            tenant_id=tenant_id, api_key=tenants_pb2.ApiKey(scopes=list(scopes), **fields)
        )
        created = await self.tenants.CreateApiKey(request, metadata=self.admin)
        return bearer(created.secret)


@pytest.fixture
def gateway_config(fresh_database: str, tmp_path: Path) -> Config:
    return Config(
        grpc_addr="127.0.0.1:0",
        rest_addr="127.0.0.1:0",
        database=DatabaseConfig(fresh_database),
        scheduler_addr=UNREACHABLE,
        models_addr=UNREACHABLE,
        webhook_addr=UNREACHABLE,
        admin_key_file=str(tmp_path / "admin.key"),
        bootstrap_tenant="default",
        key_cache_ttl_s=0.0,
        shutdown_grace_s=1.0,
        # Unlimited unless a test sets limits: most tests make many quick calls.
        limits=Limits(rate=dataclasses.replace(Limits().rate, per_second=0.0)),
    )


StartGateway = Callable[..., contextlib.AbstractAsyncContextManager[Gw]]


@pytest.fixture
def start_gateway(gateway_config: Config) -> StartGateway:
    """``async with start_gateway(**config changes) as gw:``."""

    @contextlib.asynccontextmanager
    async def start(**changes: Any) -> AsyncIterator[Gw]:
        cfg = dataclasses.replace(gateway_config, **changes)
        async with build_gateway(cfg) as gateway:
            admin = bearer(read_key(Path(cfg.admin_key_file)))
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                yield Gw(gateway, channel, tenants_pb2_grpc.TenantServiceStub(channel), admin)

    return start


@pytest.fixture
async def gw(start_gateway: StartGateway) -> AsyncIterator[Gw]:
    async with start_gateway() as running:
        yield running
