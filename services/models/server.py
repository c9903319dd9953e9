"""Wiring: the database pool, the object store, the registry and the gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from services.models.uploads import ModelUploads, UploadLimits

log = logging.getLogger(__name__)

SCHEMA = "models"
MIGRATIONS = Path(__file__).parent / "migrations"


@asynccontextmanager
async def run_server(cfg: Config) -> AsyncIterator[RunningServer]:
    """Serves ModelService on cfg.grpc_addr until the context exits."""
    async with open_pool(
        cfg.database.url, SCHEMA, MIGRATIONS, apply=cfg.database.migrate_on_start
    ) as pool:
        store = ObjectStore.from_config(cfg.s3)
        await store.ensure_bucket()
        limits = RegistryLimits(
            max_model_bytes=cfg.max_model_bytes,
            presign_ttl_s=cfg.presign_ttl_s,
            part_size=cfg.part_size,
            spool_dir=cfg.spool_dir,
        )
        registry = ModelRegistry(pool, store, limits)
        uploads = ModelUploads(pool, registry, _upload_limits(cfg))
        servicer = ModelServicer(registry, uploads)
        reg = registration(servicer, models_pb2_grpc, "ModelService")
        sweeper = asyncio.create_task(_sweep_forever(uploads, cfg.upload_sweep_interval_s))
        try:
            async with serve(cfg.grpc_addr, [reg], grace=cfg.shutdown_grace_s) as server:
                yield server
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper


def _upload_limits(cfg: Config) -> UploadLimits:
    return UploadLimits(
        max_model_bytes=cfg.max_model_bytes,
        default_part_size=cfg.part_size,
        ttl_s=cfg.upload_ttl_s,
        stuck_after_s=cfg.upload_stuck_after_s,
        retention_s=cfg.upload_retention_s,
    )


async def _sweep_forever(uploads: ModelUploads, interval_s: float) -> None:
    """Aborts expired multipart uploads now and then, so their parts do not pile up."""
    while True:
        try:
            swept = await uploads.sweep()
            if swept:
                log.info("aborted %d expired multipart uploads", swept)
        except Exception:
            log.warning("sweeping expired uploads failed; trying again later", exc_info=True)
        await asyncio.sleep(interval_s)
