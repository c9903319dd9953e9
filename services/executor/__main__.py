"""``python -m services.executor``: serve the ExecutorService until SIGTERM (or, in serverless
mode, until its share of work is done)."""

from __future__ import annotations

import asyncio
import logging
import sys

from comfyfleet.common.telemetry import TelemetryConfig, setup_telemetry
from services.executor.config import Config
from services.executor.server import running_executor
from services.executor.serverless import WarmupFailed

log = logging.getLogger(__name__)


async def main() -> int:
    cfg = Config.from_env()
    setup_telemetry("executor", TelemetryConfig.from_env())
    try:
        async with running_executor(cfg) as executor:
            log.info("executor %s serving on port %d", executor.identity.executor_id, executor.port)
            reason = await executor.until_stopped()
            log.info("executor %s stopping after %s", executor.identity.executor_id, reason)
    except WarmupFailed as err:
        log.error("executor not started: %s", err)
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sys.exit(asyncio.run(main()))
