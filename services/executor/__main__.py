"""``python -m services.executor``: serve the ExecutorService until SIGTERM (or, in serverless
mode, until its share of work is done); a failed warmup workflow exits 1 unregistered."""

from comfyfleet.common.service import run_service
from services.executor.config import Config
from services.executor.server import running_executor
from services.executor.serverless import WarmupFailed

if __name__ == "__main__":
    run_service("executor", Config.from_env, running_executor, refusals=(WarmupFailed,))
