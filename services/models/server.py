"""Wiring: the database pool, the object store, the registry and the gRPC server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from comfyfleet.common.db import open_pool
from comfyfleet.common.grpcserver import RunningServer, registration, serve
from comfyfleet.common.storage import ObjectStore
from comfyfleet.models.v1 import models_pb2_grpc
from services.models.config import Config
from services.models.registry import ModelRegistry, RegistryLimits
from services.models.servicer import ModelServicer

SCHEMA = "models"
MIGRATIONS = Path(__file__).parent / "migrations"


@asynccontextmanager
async def run_server(cfg: Config) -> AsyncIterator[RunningServer]:
    """Serves ModelService on cfg.grpc_addr until the context exits."""
    async with open_pool(cfg.database.url, SCHEMA, MIGRATIONS) as pool:
        store = ObjectStore.from_config(cfg.s3)
        await store.ensure_bucket()
        limits = RegistryLimits(
            max_model_bytes=cfg.max_model_bytes,
            presign_ttl_s=cfg.presign_ttl_s,
            part_size=cfg.part_size,
            spool_dir=cfg.spool_dir,
        )
        servicer = ModelServicer(ModelRegistry(pool, store, limits))
        reg = registration(servicer, models_pb2_grpc, "ModelService")
        async with serve(cfg.grpc_addr, [reg], grace=cfg.shutdown_grace_s) as server:
            yield server
