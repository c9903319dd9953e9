"""The gateway's settings, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from comfyfleet.common.addresses import AddressPolicy
from comfyfleet.common.config import (
    ConfigError,
    DatabaseConfig,
    Settings,
    env_int,
    env_str,
    group,
    setting,
)
from comfyfleet.common.grpcserver import MAX_MESSAGE_BYTES
from comfyfleet.workflow.budget import RESOURCE_BUDGET, ResourceBudget
from services.gateway.ratelimit import RateLimit
from services.gateway.tokens import JwtSettings

MIB = 1024 * 1024
DEFAULT_RATE = RateLimit(50.0, 100)


@dataclass(frozen=True)
class Limits(Settings):
    """How much one caller may ask of the gateway."""

    # Each key's rate when neither it nor its tenant sets one; 0 per second: no limit.
    rate: RateLimit = group(DEFAULT_RATE, prefix="GATEWAY_RATE_")
    # The largest request message (gRPC) or body (REST); larger ones are RESOURCE_EXHAUSTED.
    max_request_bytes: int = setting("GATEWAY_MAX_REQUEST_BYTES", MAX_MESSAGE_BYTES)
    # Input files given by URL: the largest download, and how long one may take.
    fetch_max_bytes: int = setting("GATEWAY_FETCH_MAX_BYTES", 32 * MIB)
    fetch_timeout_s: float = setting("GATEWAY_FETCH_TIMEOUT", 30.0)
    fetch_policy: AddressPolicy = group(prefix="GATEWAY_FETCH_", factory=AddressPolicy)
    # What one execution may ask for: a node output's bytes, an input image's decoded pixels.
    budget: ResourceBudget = RESOURCE_BUDGET

    @classmethod
    def from_env(cls, **given: Any) -> Self:
        """As declared, with the budget's ``COMFYFLEET_GATEWAY_MAX_TENSOR_BYTES`` and
        ``_MAX_INPUT_PIXELS``; checked."""
        d = RESOURCE_BUDGET
        budget = ResourceBudget(
            max_tensor_bytes=env_int("GATEWAY_MAX_TENSOR_BYTES", d.max_tensor_bytes),
            max_input_pixels=env_int("GATEWAY_MAX_INPUT_PIXELS", d.max_input_pixels),
        )
        limits = super().from_env(**{"budget": budget, **given})
        limits.check()
        return limits

    def check(self) -> None:
        if self.rate.per_second < 0 or self.rate.burst < 1:
            raise ConfigError("GATEWAY_RATE_PER_S must be >= 0 and GATEWAY_RATE_BURST >= 1")
        if not 1024 <= self.max_request_bytes <= MAX_MESSAGE_BYTES:
            raise ConfigError(f"GATEWAY_MAX_REQUEST_BYTES must be from 1024 to {MAX_MESSAGE_BYTES}")
        if self.fetch_max_bytes < 1 or self.fetch_timeout_s <= 0:
            raise ConfigError("GATEWAY_FETCH_MAX_BYTES and GATEWAY_FETCH_TIMEOUT must be > 0")
        if min(self.budget.max_tensor_bytes, self.budget.max_input_pixels) < 1:
            raise ConfigError("GATEWAY_MAX_TENSOR_BYTES and GATEWAY_MAX_INPUT_PIXELS must be > 0")


@dataclass(frozen=True)
class Config(Settings):
    grpc_addr: str = setting("GRPC_ADDR", "127.0.0.1:50051")
    rest_addr: str = setting("REST_ADDR", "127.0.0.1:8080")
    database: DatabaseConfig = group(factory=DatabaseConfig)
    scheduler_addr: str = setting("SCHEDULER_ADDR", "127.0.0.1:50052")
    models_addr: str = setting("MODELS_ADDR", "127.0.0.1:50053")
    webhook_addr: str = setting("WEBHOOK_ADDR", "127.0.0.1:50054")
    # Where to write a first admin key when the file does not exist yet ("" = never).
    admin_key_file: str = setting("ADMIN_KEY_FILE", "")
    # The tenant that first admin key belongs to.
    bootstrap_tenant: str = setting("BOOTSTRAP_TENANT", "default")
    key_cache_ttl_s: float = setting("KEY_CACHE_TTL", 5.0)
    shutdown_grace_s: float = setting("SHUTDOWN_GRACE", 5.0)
    limits: Limits = group(factory=Limits)
    # JWT bearer tokens are accepted only when a JWKS file is configured.
    jwt: JwtSettings | None = None
    # How long a request_id is remembered; a reuse after that counts as a new request.
    idempotency_retention_s: float = setting("GATEWAY_IDEMPOTENCY_RETENTION", 7 * 24 * 3600.0)
    # GET /ready waits this long for each dependency.
    ready_timeout_s: float = setting("GATEWAY_READY_TIMEOUT", 2.0)
    # The environment of executions that name none, when their tenant sets no default.
    default_environment: str = setting("DEFAULT_ENVIRONMENT", "native")
    # How long a known environment's catalog digest is trusted before it is asked again.
    catalog_recheck_s: float = setting("GATEWAY_CATALOG_RECHECK", 5.0)

    def __post_init__(self) -> None:
        if self.catalog_recheck_s < 0:
            raise ConfigError("COMFYFLEET_GATEWAY_CATALOG_RECHECK must be >= 0")

    @classmethod
    def from_env(cls, **given: Any) -> Self:
        jwt = JwtSettings.from_env(prefix="GATEWAY_") if env_str("GATEWAY_JWKS_FILE", "") else None
        return super().from_env(**{"jwt": jwt, **given})
