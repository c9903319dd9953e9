"""python -m services.models: the model registry's gRPC server, until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from comfyfleet.common.grpcserver import wait_for_shutdown_signal
from comfyfleet.common.telemetry import TelemetryConfig, setup_telemetry
from services.models.config import Config
from services.models.server import run_server

log = logging.getLogger("services.models")


async def main() -> None:
    cfg = Config.from_env()
    setup_telemetry("models", TelemetryConfig.from_env())
    async with run_server(cfg) as server:
        log.info("models service listening on port %d", server.port)
        await wait_for_shutdown_signal()
        log.info("shutting down: finishing calls in flight for up to %ss", cfg.shutdown_grace_s)
        await server.stop(grace=cfg.shutdown_grace_s)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main())
