"""The executor's settings, read once from ``COMFYFLEET_*`` environment variables.

An executor holds no database, NATS or storage credentials: everything it reads or writes
comes as presigned URLs in the requests the scheduler sends it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from comfyfleet.common.config import ConfigError, Settings, setting
from comfyfleet.common.environments import (
    NATIVE,
    load_spec_file,
    name_problem,
    spec_violations,
)
from comfyfleet.environments.v1 import environments_pb2
from comfyfleet.workflow.budget import RESOURCE_BUDGET
from services.executor.comfyui.settings import ComfyUISettings

DEVICES = ("auto", "cpu", "cuda")
PROVIDERS = ("local", "ecs", "runpod")
ENGINES = ("native", "comfyui")


def _spec(path: str) -> environments_pb2.Environment:
    """``COMFYFLEET_ENVIRONMENT_SPEC``: a JSON file of the Environment's fields."""
    return load_spec_file(Path(path))


@dataclass(frozen=True)
class Config(Settings):
    """Everything the executor process needs."""

    # Where the ExecutorService listens ("host:port"; port 0 picks a free one).
    grpc_addr: str = setting("GRPC_ADDR", "127.0.0.1:50055")
    # The scheduler's SchedulerService, which the executor registers with.
    scheduler_addr: str = setting("SCHEDULER_ADDR", "127.0.0.1:50052")
    # False runs a standalone executor that registers nowhere (driven by hand or by tests).
    register: bool = setting("EXECUTOR_REGISTER", True)
    # The address the scheduler dials back; empty: derived from the bound address.
    advertise_addr: str = setting("EXECUTOR_ADVERTISE_ADDR", "")
    # Stable across restarts; empty: derived from the host name and the port.
    executor_id: str = setting("EXECUTOR_ID", "")
    provider: str = setting("EXECUTOR_PROVIDER", "local")
    # "auto" takes CUDA when torch sees a GPU.
    device: str = setting("EXECUTOR_DEVICE", "auto")
    # Attempt folders and the model cache live here.
    work_dir: Path = setting(
        "EXECUTOR_WORK_DIR", Path(tempfile.gettempdir()) / "comfyfleet-executor"
    )
    # The model cache's bound on disk; least recently used models are evicted past it.
    model_cache_bytes: int = setting("EXECUTOR_MODEL_CACHE_BYTES", 50 * 1024**3)
    # The bound on model weights kept loaded on the device between runs (native engine);
    # None: ``weights_budget_fraction`` of the device memory free when the executor starts
    # (VRAM on CUDA, RAM on CPU). 0 keeps nothing loaded once a run ends.
    weights_budget_bytes: int | None = setting("EXECUTOR_WEIGHTS_BUDGET_BYTES", None)
    weights_budget_fraction: float = setting("EXECUTOR_WEIGHTS_BUDGET_FRACTION", 0.5)
    # The bound on any one tensor a native run allocates: a larger one fails the node as a
    # workflow error instead of OOM-killing the executor. None: ``memory_budget_fraction`` of
    # the memory available when the executor starts, less the weights budget. Every
    # allocation is also checked against the memory available at that moment.
    memory_budget_bytes: int | None = setting("EXECUTOR_MEMORY_BUDGET_BYTES", None)
    memory_budget_fraction: float = setting("EXECUTOR_MEMORY_BUDGET_FRACTION", 0.9)
    # The largest input image a native run decodes, in pixels per frame (its header is read
    # first: a decompression bomb is refused before it is decoded).
    max_input_pixels: int = setting("EXECUTOR_MAX_INPUT_PIXELS", RESOURCE_BUDGET.max_input_pixels)
    # How long a running attempt may finish after SIGTERM before it is handed back.
    shutdown_grace_s: float = setting("EXECUTOR_SHUTDOWN_GRACE", 30.0)
    # How long a cancelled run may take to stop at its next check before the stream ends
    # without it (the slot stays busy until the engine thread really returns).
    cancel_grace_s: float = setting("EXECUTOR_CANCEL_GRACE", 10.0)
    # Until the scheduler answers with its own interval, and between registration retries.
    register_retry_s: float = setting("EXECUTOR_REGISTER_RETRY", 2.0)
    # A download or upload that stalls this long fails the attempt (retryable).
    transfer_timeout_s: float = setting("EXECUTOR_TRANSFER_TIMEOUT", 300.0)
    # Serverless mode, when either is set: exit once idle this long, or once this many
    # attempts ran (0: no limit). The RunPod worker counts idle job polls instead of seconds.
    idle_exit_s: float = setting("EXECUTOR_IDLE_EXIT", 0.0)
    max_jobs: int = setting("EXECUTOR_MAX_JOBS", 0)
    idle_exit_polls: int = setting("EXECUTOR_IDLE_EXIT_POLLS", 0)
    # A workflow (file path or inline JSON) run once at start, before any work is taken,
    # with its loaders reading from the inputs dir.
    warmup_workflow: str = setting("EXECUTOR_WARMUP_WORKFLOW", "")
    warmup_inputs_dir: Path | None = setting("EXECUTOR_WARMUP_INPUTS_DIR", None)
    # "native" (our torch engine) or "comfyui" (a real ComfyUI, started or reached).
    engine: str = setting("EXECUTOR_ENGINE", "native")
    # Set exactly when the engine is "comfyui" (COMFYFLEET_COMFYUI_*).
    comfyui: ComfyUISettings | None = None
    # The environment the executor runs (COMFYFLEET_ENVIRONMENT): only its executions reach
    # it. "" takes "native" for the native engine; a comfyui executor must name one.
    environment: str = setting("ENVIRONMENT", "")
    # What the environment is (COMFYFLEET_ENVIRONMENT_SPEC, a JSON file of the Environment's
    # fields): the scheduler declares the environment with it when nobody did.
    environment_spec: environments_pb2.Environment | None = setting(
        "ENVIRONMENT_SPEC", None, parse=_spec, compare=False
    )

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"COMFYFLEET_EXECUTOR_ENGINE must be one of {ENGINES}")
        if (self.engine == "comfyui") != (self.comfyui is not None):
            raise ConfigError(
                "COMFYFLEET_EXECUTOR_ENGINE=comfyui, and only it, takes COMFYFLEET_COMFYUI_COMMAND or _URL"
            )
        if self.device not in DEVICES:
            raise ConfigError(f"COMFYFLEET_EXECUTOR_DEVICE must be one of {DEVICES}")
        if self.provider not in PROVIDERS:
            raise ConfigError(f"COMFYFLEET_EXECUTOR_PROVIDER must be one of {PROVIDERS}")
        if min(self.shutdown_grace_s, self.cancel_grace_s, self.register_retry_s) <= 0:
            raise ConfigError("executor grace periods and retry intervals must be positive")
        if self.model_cache_bytes < 0:
            raise ConfigError("COMFYFLEET_EXECUTOR_MODEL_CACHE_BYTES must not be negative")
        if self.weights_budget_bytes is not None and self.weights_budget_bytes < 0:
            raise ConfigError("COMFYFLEET_EXECUTOR_WEIGHTS_BUDGET_BYTES must not be negative")
        if not 0 < self.weights_budget_fraction <= 1:
            raise ConfigError("COMFYFLEET_EXECUTOR_WEIGHTS_BUDGET_FRACTION must be in (0, 1]")
        if self.memory_budget_bytes is not None and self.memory_budget_bytes < 1:
            raise ConfigError("COMFYFLEET_EXECUTOR_MEMORY_BUDGET_BYTES must be positive")
        if not 0 < self.memory_budget_fraction <= 1:
            raise ConfigError("COMFYFLEET_EXECUTOR_MEMORY_BUDGET_FRACTION must be in (0, 1]")
        if self.max_input_pixels < 1:
            raise ConfigError("COMFYFLEET_EXECUTOR_MAX_INPUT_PIXELS must be positive")
        if min(self.idle_exit_s, self.max_jobs, self.idle_exit_polls) < 0:
            raise ConfigError("executor serverless limits must not be negative (0: no limit)")
        self._check_environment()

    def _check_environment(self) -> None:
        if not self.environment and self.engine == NATIVE:
            object.__setattr__(self, "environment", NATIVE)
        if not self.environment:
            raise ConfigError(f"COMFYFLEET_ENVIRONMENT is required for the {self.engine} engine")
        problem = name_problem(self.environment)
        if problem:
            raise ConfigError(f"COMFYFLEET_ENVIRONMENT: {problem}")
        spec = self.environment_spec
        if spec is None:
            return
        if spec.name and spec.name != self.environment:
            raise ConfigError(
                f"COMFYFLEET_ENVIRONMENT_SPEC names {spec.name!r},"
                f" COMFYFLEET_ENVIRONMENT {self.environment!r}"
            )
        if spec.engine and spec.engine != self.engine:
            raise ConfigError(
                f"COMFYFLEET_ENVIRONMENT_SPEC is for the {spec.engine} engine; this executor runs"
                f" {self.engine}"
            )
        problems = spec_violations(self.declared_environment(), "spec")
        if problems:
            listed = "; ".join(f"{v.field}: {v.description}" for v in problems)
            raise ConfigError(f"COMFYFLEET_ENVIRONMENT_SPEC: {listed}")

    def declared_environment(self) -> environments_pb2.Environment:
        """The environment as the executor declares it when it registers: the spec file's
        fields (when there is one), with the name and engine filled in."""
        env = environments_pb2.Environment()
        if self.environment_spec is not None:
            env.CopyFrom(self.environment_spec)
        env.name, env.engine = self.environment, self.engine
        return env

    @classmethod
    def from_env(cls, **given: Any) -> Self:
        """As declared; ``COMFYFLEET_COMFYUI_*`` are read for the comfyui engine only."""
        engine = cls.read("engine") or cls.engine
        comfyui = ComfyUISettings.from_env() if engine == "comfyui" else None
        return super().from_env(**{"comfyui": comfyui, **given})
