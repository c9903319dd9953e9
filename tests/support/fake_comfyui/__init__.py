"""A fake ComfyUI for tests: the captured protocol of ComfyUI 0.3.64, canned outputs."""

from tests.support.fake_comfyui.server import Behaviour, FakeComfyUI, RunningFake, running_fake

__all__ = ["Behaviour", "FakeComfyUI", "RunningFake", "running_fake"]
