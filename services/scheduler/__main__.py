"""``python -m services.scheduler``: serve until SIGTERM, then stop gracefully."""

from __future__ import annotations

import asyncio
import logging

from comfyfleet.common.grpcserver import wait_for_shutdown_signal
from comfyfleet.common.telemetry import TelemetryConfig, setup_telemetry
from services.scheduler.config import Config
from services.scheduler.server import running_scheduler


async def main() -> None:
    cfg = Config.from_env()
    setup_telemetry("scheduler", TelemetryConfig.from_env())
    async with running_scheduler(cfg) as scheduler:
        await wait_for_shutdown_signal()
        await scheduler.shutdown()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(main())
