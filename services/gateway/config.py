"""The gateway's settings, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from comfyfleet.common.config import DatabaseConfig, env_float, env_str


@dataclass(frozen=True)
class Config:
    grpc_addr: str
    rest_addr: str
    database: DatabaseConfig
    scheduler_addr: str
    models_addr: str
    webhook_addr: str
    # Where to write a first admin key when the file does not exist yet ("" = never).
    admin_key_file: str
    # The tenant that first admin key belongs to.
    bootstrap_tenant: str
    key_cache_ttl_s: float
    shutdown_grace_s: float

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            grpc_addr=env_str("GRPC_ADDR", "127.0.0.1:50051"),
            rest_addr=env_str("REST_ADDR", "127.0.0.1:8080"),
            database=DatabaseConfig.from_env(),
            scheduler_addr=env_str("SCHEDULER_ADDR", "127.0.0.1:50052"),
            models_addr=env_str("MODELS_ADDR", "127.0.0.1:50053"),
            webhook_addr=env_str("WEBHOOK_ADDR", "127.0.0.1:50054"),
            admin_key_file=env_str("ADMIN_KEY_FILE", ""),
            bootstrap_tenant=env_str("BOOTSTRAP_TENANT", "default"),
            key_cache_ttl_s=env_float("KEY_CACHE_TTL_S", 5.0),
            shutdown_grace_s=env_float("SHUTDOWN_GRACE_S", 5.0),
        )
