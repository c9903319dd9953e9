"""``python -m services.models``: the model registry's gRPC server, until SIGTERM."""

from comfyfleet.common.service import run_service
from services.models.config import Config
from services.models.server import run_server

if __name__ == "__main__":
    run_service("models", Config.from_env, run_server)
