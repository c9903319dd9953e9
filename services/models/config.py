"""The models service's settings, read once from COMFYFLEET_* variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from comfyfleet.common.config import (
    ConfigError,
    DatabaseConfig,
    S3Config,
    env_float,
    env_int,
    env_str,
)

GIB = 1024**3
MIB = 1024**2
# S3 refuses multipart parts under 5 MiB (except the last one).
MIN_PART_SIZE = 5 * MIB


@dataclass(frozen=True)
class Config:
    grpc_addr: str
    database: DatabaseConfig
    s3: S3Config
    max_model_bytes: int = 64 * GIB
    presign_ttl_s: float = 900.0
    part_size: int = 64 * MIB
    spool_dir: Path | None = None
    # Multipart uploads: how long part URLs work, how often the sweep runs, when a completion
    # that stopped moving counts as dead, and how long finished uploads are remembered.
    upload_ttl_s: float = 24 * 3600.0
    upload_sweep_interval_s: float = 60.0
    upload_stuck_after_s: float = 3600.0
    upload_retention_s: float = 7 * 24 * 3600.0
    # Under Kubernetes' default 30 s termination grace, so the pool still closes cleanly.
    shutdown_grace_s: float = 25.0

    @classmethod
    def from_env(cls) -> Config:
        """COMFYFLEET_GRPC_ADDR, DATABASE_URL, S3_*, MODELS_MAX_BYTES, MODELS_PRESIGN_TTL_S,
        MODELS_PART_SIZE, MODELS_SPOOL_DIR, MODELS_UPLOAD_TTL_S, MODELS_UPLOAD_SWEEP_INTERVAL_S,
        MODELS_UPLOAD_STUCK_AFTER_S, MODELS_UPLOAD_RETENTION_S, SHUTDOWN_GRACE_S."""
        spool_dir = env_str("MODELS_SPOOL_DIR", "")
        cfg = cls(
            grpc_addr=env_str("GRPC_ADDR", "127.0.0.1:50053"),
            database=DatabaseConfig.from_env(),
            s3=S3Config.from_env(),
            max_model_bytes=env_int("MODELS_MAX_BYTES", cls.max_model_bytes),
            presign_ttl_s=env_float("MODELS_PRESIGN_TTL_S", cls.presign_ttl_s),
            part_size=env_int("MODELS_PART_SIZE", cls.part_size),
            spool_dir=Path(spool_dir) if spool_dir else None,
            upload_ttl_s=env_float("MODELS_UPLOAD_TTL_S", cls.upload_ttl_s),
            upload_sweep_interval_s=env_float(
                "MODELS_UPLOAD_SWEEP_INTERVAL_S", cls.upload_sweep_interval_s
            ),
            upload_stuck_after_s=env_float("MODELS_UPLOAD_STUCK_AFTER_S", cls.upload_stuck_after_s),
            upload_retention_s=env_float("MODELS_UPLOAD_RETENTION_S", cls.upload_retention_s),
            shutdown_grace_s=env_float("SHUTDOWN_GRACE_S", cls.shutdown_grace_s),
        )
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.max_model_bytes <= 0:
            raise ConfigError("COMFYFLEET_MODELS_MAX_BYTES must be positive")
        # S3 presigned URLs live at most 7 days.
        if not 0 < self.presign_ttl_s <= 7 * 24 * 3600:
            raise ConfigError("COMFYFLEET_MODELS_PRESIGN_TTL_S must be in (0, 604800]")
        if not 0 < self.upload_ttl_s <= 7 * 24 * 3600:
            raise ConfigError("COMFYFLEET_MODELS_UPLOAD_TTL_S must be in (0, 604800]")
        for name, value in (
            ("UPLOAD_SWEEP_INTERVAL_S", self.upload_sweep_interval_s),
            ("UPLOAD_STUCK_AFTER_S", self.upload_stuck_after_s),
            ("UPLOAD_RETENTION_S", self.upload_retention_s),
        ):
            if value <= 0:
                raise ConfigError(f"COMFYFLEET_MODELS_{name} must be positive")
        if self.part_size < MIN_PART_SIZE:
            raise ConfigError(f"COMFYFLEET_MODELS_PART_SIZE must be at least {MIN_PART_SIZE}")
