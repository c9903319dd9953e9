"""The native engine: ComfyUI API-format workflows executed by our own torch nodes."""

from services.executor.native.engine import NativeEngine, pick_device
from services.executor.native.registry import native_registry

__all__ = ["NativeEngine", "native_registry", "pick_device"]
