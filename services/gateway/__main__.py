"""``python -m services.gateway``: the public API until SIGTERM."""

from comfyfleet.common.service import run_service
from services.gateway.config import Config
from services.gateway.server import build_gateway

if __name__ == "__main__":
    run_service("gateway", Config.from_env, build_gateway)
