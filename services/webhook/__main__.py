"""``python -m services.webhook``: subscriptions and signed deliveries until SIGTERM."""

from comfyfleet.common.service import run_service
from services.webhook.config import Config
from services.webhook.server import build_service

if __name__ == "__main__":
    run_service("webhook", Config.from_env, build_service)
