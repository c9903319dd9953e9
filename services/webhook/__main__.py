"""``python -m services.webhook``: subscriptions and signed deliveries until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from comfyfleet.common.grpcserver import wait_for_shutdown_signal
from comfyfleet.common.telemetry import TelemetryConfig, setup_telemetry
from services.webhook.config import Config
from services.webhook.server import build_service


async def main() -> None:
    cfg = Config.from_env()
    setup_telemetry("webhook", TelemetryConfig.from_env())
    async with build_service(cfg) as service:
        logging.getLogger("comfyfleet.webhook").info(
            "webhook service serving gRPC on port %d", service.port
        )
        await wait_for_shutdown_signal()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main())
