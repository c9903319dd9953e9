"""The models service's settings, read once from COMFYFLEET_* variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from comfyfleet.common.config import (
    ConfigError,
    DatabaseConfig,
    S3Config,
    Settings,
    group,
    setting,
)

GIB = 1024**3
MIB = 1024**2
# S3 refuses multipart parts under 5 MiB (except the last one).
MIN_PART_SIZE = 5 * MIB


@dataclass(frozen=True)
class Config(Settings):
    grpc_addr: str = setting("GRPC_ADDR", "127.0.0.1:50053")
    database: DatabaseConfig = group(factory=DatabaseConfig)
    s3: S3Config = group(factory=S3Config)
    max_model_bytes: int = setting("MODELS_MAX_BYTES", 64 * GIB)
    presign_ttl_s: float = setting("MODELS_PRESIGN_TTL", 900.0)
    part_size: int = setting("MODELS_PART_SIZE", 64 * MIB)
    spool_dir: Path | None = setting("MODELS_SPOOL_DIR", None)
    # Multipart uploads: how long part URLs work, how often the sweep runs, when a completion
    # that stopped moving counts as dead, and how long finished uploads are remembered.
    upload_ttl_s: float = setting("MODELS_UPLOAD_TTL", 24 * 3600.0)
    upload_sweep_interval_s: float = setting("MODELS_UPLOAD_SWEEP_INTERVAL", 60.0)
    upload_stuck_after_s: float = setting("MODELS_UPLOAD_STUCK_AFTER", 3600.0)
    upload_retention_s: float = setting("MODELS_UPLOAD_RETENTION", 7 * 24 * 3600.0)
    # Under Kubernetes' default 30 s termination grace, so the pool still closes cleanly.
    shutdown_grace_s: float = setting("SHUTDOWN_GRACE", 25.0)

    @classmethod
    def from_env(cls, **given: Any) -> Self:
        cfg = super().from_env(**given)
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.max_model_bytes <= 0:
            raise ConfigError(f"{self.variable('max_model_bytes')} must be positive")
        # S3 presigned URLs live at most 7 days.
        for name in ("presign_ttl_s", "upload_ttl_s"):
            if not 0 < getattr(self, name) <= 7 * 24 * 3600:
                raise ConfigError(f"{self.variable(name)} must be in (0, 604800]")
        for name in ("upload_sweep_interval_s", "upload_stuck_after_s", "upload_retention_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{self.variable(name)} must be positive")
        if self.part_size < MIN_PART_SIZE:
            raise ConfigError(f"{self.variable('part_size')} must be at least {MIN_PART_SIZE}")
