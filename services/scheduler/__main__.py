"""``python -m services.scheduler``: serve until SIGTERM, then stop gracefully."""

from comfyfleet.common.service import run_service
from services.scheduler.config import Config
from services.scheduler.server import running_scheduler

if __name__ == "__main__":
    run_service("scheduler", Config.from_env, running_scheduler)
