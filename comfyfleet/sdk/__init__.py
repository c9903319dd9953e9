"""The Python SDK: ``Client`` (blocking) and ``AsyncClient`` (asyncio) over gRPC."""

from comfyfleet.sdk.client import AsyncClient, Client
from comfyfleet.sdk.errors import ApiError
from comfyfleet.sdk.settings import Settings

__all__ = ["ApiError", "AsyncClient", "Client", "Settings"]
