"""The comfyui engine: workflows run by a real ComfyUI server the executor starts or reaches."""

from services.executor.comfyui.client import ComfyUIUnavailable
from services.executor.comfyui.engine import ComfyUIEngine
from services.executor.comfyui.settings import ComfyUISettings

__all__ = ["ComfyUIEngine", "ComfyUISettings", "ComfyUIUnavailable"]
