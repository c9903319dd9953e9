"""``python -m services.gateway``: the public API until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from comfyfleet.common.grpcserver import wait_for_shutdown_signal
from comfyfleet.common.telemetry import TelemetryConfig, setup_telemetry
from services.gateway.config import Config
from services.gateway.server import build_gateway


async def main() -> None:
    cfg = Config.from_env()
    setup_telemetry("gateway", TelemetryConfig.from_env())
    async with build_gateway(cfg) as gateway:
        logging.getLogger("comfyfleet.gateway").info(
            "gateway serving gRPC on port %d", gateway.port
        )
        await wait_for_shutdown_signal()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main())
