"""Wiring of the gateway: database, peers, servicers, gRPC and REST servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from comfyfleet.common.db import open_pool
from comfyfleet.common.grpcserver import RunningServer, channel, registration, serve
from comfyfleet.executions.v1 import executions_pb2_grpc
from comfyfleet.models.v1 import models_pb2_grpc
from comfyfleet.tenants.v1 import tenants_pb2_grpc
from comfyfleet.webhooks.v1 import webhooks_pb2_grpc
from comfyfleet.workflow.catalog import NATIVE_CATALOG
from services.gateway.auth import Authenticator
from services.gateway.bootstrap import ensure_admin_key
from services.gateway.config import Config
from services.gateway.rest import RunningRest, build_rest_app, serve_rest
from services.gateway.servicer import (
    ExecutionsServicer,
    ModelsServicer,
    TenantsServicer,
    WebhooksServicer,
)
from services.gateway.tenants import TenantStore

MIGRATIONS = Path(__file__).parent / "migrations"


PUBLIC_SERVICES = (
    "comfyfleet.executions.v1.ExecutionService",
    "comfyfleet.tenants.v1.TenantService",
    "comfyfleet.webhooks.v1.WebhookService",
    "comfyfleet.models.v1.ModelService",
)


@dataclass
class Gateway:
    grpc: RunningServer
    rest: RunningRest
    store: TenantStore

    @property
    def port(self) -> int:
        return self.grpc.port


@asynccontextmanager
async def build_gateway(cfg: Config) -> AsyncIterator[Gateway]:
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(open_pool(cfg.database.url, "gateway", MIGRATIONS))
        store = TenantStore(pool)
        if cfg.admin_key_file:
            await ensure_admin_key(store, Path(cfg.admin_key_file), cfg.bootstrap_tenant)
        auth = Authenticator(store, cache_ttl_s=cfg.key_cache_ttl_s)
        scheduler = channel(cfg.scheduler_addr)
        models = channel(cfg.models_addr)
        webhooks = channel(cfg.webhook_addr)
        for ch in (scheduler, models, webhooks):
            stack.push_async_callback(ch.close)
        registrations = [
            registration(
                ExecutionsServicer(
                    auth, executions_pb2_grpc.ExecutionServiceStub(scheduler), NATIVE_CATALOG
                ),
                executions_pb2_grpc,
                "ExecutionService",
            ),
            registration(TenantsServicer(auth, store), tenants_pb2_grpc, "TenantService"),
            registration(
                WebhooksServicer(auth, webhooks_pb2_grpc.WebhookServiceStub(webhooks)),
                webhooks_pb2_grpc,
                "WebhookService",
            ),
            registration(
                ModelsServicer(auth, models_pb2_grpc.ModelServiceStub(models)),
                models_pb2_grpc,
                "ModelService",
            ),
        ]
        server = await stack.enter_async_context(
            serve(cfg.grpc_addr, registrations, grace=cfg.shutdown_grace_s)
        )
        # REST is a client of our own gRPC server, as grpc-gateway is: one code path for both.
        grpc_target = f"127.0.0.1:{server.port}"
        rest = await stack.enter_async_context(
            serve_rest(cfg.rest_addr, build_rest_app(grpc_target, PUBLIC_SERVICES))
        )
        yield Gateway(server, rest, store)
