"""``python -m services.executor``: serve the ExecutorService until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from comfyfleet.common.grpcserver import wait_for_shutdown_signal
from services.executor.config import Config
from services.executor.server import running_executor


async def main() -> None:
    cfg = Config.from_env()
    async with running_executor(cfg) as executor:
        logging.getLogger(__name__).info(
            "executor %s serving on port %d", executor.identity.executor_id, executor.port
        )
        await wait_for_shutdown_signal()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main())
