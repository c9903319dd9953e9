"""Wiring of the gateway: database, peers, servicers, gRPC and REST servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web

from comfyfleet.common.db import open_pool
from comfyfleet.common.grpcserver import (
    Registration,
    RunningServer,
    channel,
    registration,
    serve,
)
from comfyfleet.environments.v1 import environments_pb2_grpc
from comfyfleet.executions.v1 import executions_pb2_grpc
from comfyfleet.models.v1 import models_pb2_grpc
from comfyfleet.operations.v1 import operations_pb2_grpc
from comfyfleet.scheduler.v1 import scheduler_pb2_grpc
from comfyfleet.tenants.v1 import tenants_pb2_grpc
from comfyfleet.webhooks.v1 import webhooks_pb2_grpc
from services.gateway.auth import Authenticator
from services.gateway.bootstrap import ensure_admin_key
from services.gateway.config import Config
from services.gateway.dashboard import dashboard_handler
from services.gateway.environments import EnvironmentCatalogs
from services.gateway.fetch import FetchSettings, InputFetcher
from services.gateway.idempotency import Ledger
from services.gateway.operations import OperationsReader, Peers
from services.gateway.operations_servicer import OperationsServicer
from services.gateway.readiness import Check, database_check, grpc_health_check, ready_handler
from services.gateway.rest import RestOptions, RunningRest, build_rest_app, serve_rest
from services.gateway.servicer import (
    EnvironmentsServicer,
    ExecutionsServicer,
    ModelsServicer,
    WebhooksServicer,
)
from services.gateway.tenant_servicer import TenantsServicer
from services.gateway.tenants import TenantStore
from services.gateway.textcheck import TextInterceptor
from services.gateway.tokens import JwksVerifier

MIGRATIONS = Path(__file__).parent / "migrations"
PRUNE_INTERVAL_S = 3600.0
log = logging.getLogger(__name__)


PUBLIC_SERVICES = (
    "comfyfleet.executions.v1.ExecutionService",
    "comfyfleet.tenants.v1.TenantService",
    "comfyfleet.webhooks.v1.WebhookService",
    "comfyfleet.models.v1.ModelService",
    "comfyfleet.operations.v1.OperationsService",
    "comfyfleet.environments.v1.EnvironmentService",
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
        pool = await stack.enter_async_context(
            open_pool(cfg.database.url, "gateway", MIGRATIONS, apply=cfg.database.migrate_on_start)
        )
        store = TenantStore(pool)
        if cfg.admin_key_file:
            await ensure_admin_key(store, Path(cfg.admin_key_file), cfg.bootstrap_tenant)
        fetcher = await stack.enter_async_context(InputFetcher.open(_fetch_settings(cfg)))
        channels = _peer_channels(cfg, stack)
        server = await stack.enter_async_context(
            serve(
                cfg.grpc_addr,
                _registrations(cfg, store, Ledger(pool), channels, fetcher),
                grace=cfg.shutdown_grace_s,
                max_receive_bytes=cfg.limits.max_request_bytes,
                api_metrics=True,
                interceptors=[TextInterceptor()],
            )
        )
        checks = {"database": database_check(pool)}
        checks.update({name: grpc_health_check(ch) for name, ch in channels.items()})
        app = _rest_app(cfg, server.port, checks)
        rest = await stack.enter_async_context(serve_rest(cfg.rest_addr, app))
        pruner = asyncio.create_task(_prune_forever(Ledger(pool), cfg.idempotency_retention_s))
        stack.push_async_callback(_cancel, pruner)
        yield Gateway(server, rest, store)


def _peer_channels(cfg: Config, stack: AsyncExitStack) -> dict[str, grpc.aio.Channel]:
    """One channel per internal service, closed with the gateway."""
    peers = {"scheduler": cfg.scheduler_addr, "models": cfg.models_addr}
    peers["webhook"] = cfg.webhook_addr
    channels = {name: channel(addr) for name, addr in peers.items()}
    for ch in channels.values():
        stack.push_async_callback(ch.close)
    return channels


def _registrations(
    cfg: Config,
    store: TenantStore,
    ledger: Ledger,
    channels: dict[str, grpc.aio.Channel],
    fetcher: InputFetcher,
) -> list[Registration]:
    auth = Authenticator(
        store,
        cache_ttl_s=cfg.key_cache_ttl_s,
        default_rate=cfg.limits.rate,
        tokens=JwksVerifier(cfg.jwt) if cfg.jwt else None,
    )
    scheduler = executions_pb2_grpc.ExecutionServiceStub(channels["scheduler"])
    webhooks = webhooks_pb2_grpc.WebhookServiceStub(channels["webhook"])
    models = models_pb2_grpc.ModelServiceStub(channels["models"])
    environments = environments_pb2_grpc.EnvironmentServiceStub(channels["scheduler"])
    catalogs = EnvironmentCatalogs(environments, recheck_s=cfg.catalog_recheck_s)
    return [
        registration(
            ExecutionsServicer(
                auth,
                ledger,
                scheduler,
                catalogs,
                fetcher,
                cfg.default_environment,
                budget=cfg.limits.budget,
            ),
            executions_pb2_grpc,
            "ExecutionService",
        ),
        registration(
            EnvironmentsServicer(auth, ledger, environments, catalogs),
            environments_pb2_grpc,
            "EnvironmentService",
        ),
        registration(
            TenantsServicer(
                auth,
                ledger,
                store,
                scheduler_pb2_grpc.SchedulerServiceStub(channels["scheduler"]),
                catalogs,
            ),
            tenants_pb2_grpc,
            "TenantService",
        ),
        registration(WebhooksServicer(auth, ledger, webhooks), webhooks_pb2_grpc, "WebhookService"),
        registration(ModelsServicer(auth, models, ledger), models_pb2_grpc, "ModelService"),
        registration(
            OperationsServicer(auth, _operations_reader(store, channels)),
            operations_pb2_grpc,
            "OperationsService",
        ),
    ]


def _operations_reader(
    store: TenantStore, channels: dict[str, grpc.aio.Channel]
) -> OperationsReader:
    peers = Peers(
        scheduler=scheduler_pb2_grpc.SchedulerServiceStub(channels["scheduler"]),
        executions=executions_pb2_grpc.ExecutionServiceStub(channels["scheduler"]),
        webhooks=webhooks_pb2_grpc.WebhookServiceStub(channels["webhook"]),
    )

    async def tenant_names(limit: int) -> dict[str, str]:
        return {t.id: t.name for t in await store.list_tenants(limit, "")}

    return OperationsReader(peers, tenant_names)


def _rest_app(cfg: Config, grpc_port: int, checks: dict[str, Check]) -> web.Application:
    # REST is a client of our own gRPC server, as grpc-gateway is: one code path for both.
    app = build_rest_app(
        f"127.0.0.1:{grpc_port}",
        PUBLIC_SERVICES,
        options=RestOptions(max_body_bytes=cfg.limits.max_request_bytes),
    )
    app.router.add_get("/ready", ready_handler(checks, cfg.ready_timeout_s))
    app.router.add_get("/dashboard", dashboard_handler())
    return app


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _fetch_settings(cfg: Config) -> FetchSettings:
    limits = cfg.limits
    return FetchSettings(limits.fetch_max_bytes, limits.fetch_timeout_s, limits.fetch_policy)


async def _prune_forever(ledger: Ledger, retention_s: float) -> None:
    """Forgets old request ids now and then, so the ledger does not grow without bound."""
    while True:
        try:
            forgotten = await ledger.prune(retention_s)
            if forgotten:
                log.info("forgot %d request ids older than %gs", forgotten, retention_s)
        except Exception:
            log.warning("pruning request ids failed; trying again later", exc_info=True)
        await asyncio.sleep(PRUNE_INTERVAL_S)
