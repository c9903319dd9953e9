"""The gateway's settings, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from comfyfleet.common.addresses import AddressPolicy, parse_networks
from comfyfleet.common.config import (
    ConfigError,
    DatabaseConfig,
    env_bool,
    env_float,
    env_int,
    env_str,
)
from comfyfleet.common.grpcserver import MAX_MESSAGE_BYTES
from comfyfleet.workflow.budget import RESOURCE_BUDGET, ResourceBudget
from services.gateway.ratelimit import RateLimit
from services.gateway.tokens import JwtSettings

MIB = 1024 * 1024
DEFAULT_RATE = RateLimit(50.0, 100)


@dataclass(frozen=True)
class Limits:
    """How much one caller may ask of the gateway."""

    # Each key's rate when neither it nor its tenant sets one; 0 per second: no limit.
    rate: RateLimit = DEFAULT_RATE
    # The largest request message (gRPC) or body (REST); larger ones are RESOURCE_EXHAUSTED.
    max_request_bytes: int = MAX_MESSAGE_BYTES
    # Input files given by URL: the largest download, and how long one may take.
    fetch_max_bytes: int = 32 * MIB
    fetch_timeout_s: float = 30.0
    fetch_policy: AddressPolicy = field(default_factory=AddressPolicy)
    # What one execution may ask for: a node output's bytes, an input image's decoded pixels.
    budget: ResourceBudget = RESOURCE_BUDGET

    @classmethod
    def from_env(cls) -> Limits:
        d = cls()
        return cls(
            rate=RateLimit(
                env_float("GATEWAY_RATE_PER_S", d.rate.per_second),
                env_int("GATEWAY_RATE_BURST", d.rate.burst),
            ),
            max_request_bytes=env_int("GATEWAY_MAX_REQUEST_BYTES", d.max_request_bytes),
            fetch_max_bytes=env_int("GATEWAY_FETCH_MAX_BYTES", d.fetch_max_bytes),
            fetch_timeout_s=env_float("GATEWAY_FETCH_TIMEOUT_S", d.fetch_timeout_s),
            fetch_policy=AddressPolicy(
                allow_loopback=env_bool("GATEWAY_FETCH_ALLOW_LOOPBACK", False),
                allowed_networks=parse_networks(env_str("GATEWAY_FETCH_ALLOWED_NETWORKS", "")),
            ),
            budget=ResourceBudget(
                max_tensor_bytes=env_int("GATEWAY_MAX_TENSOR_BYTES", d.budget.max_tensor_bytes),
                max_input_pixels=env_int("GATEWAY_MAX_INPUT_PIXELS", d.budget.max_input_pixels),
            ),
        )

    def check(self) -> None:
        if self.rate.per_second < 0 or self.rate.burst < 1:
            raise ConfigError("GATEWAY_RATE_PER_S must be >= 0 and GATEWAY_RATE_BURST >= 1")
        if not 1024 <= self.max_request_bytes <= MAX_MESSAGE_BYTES:
            raise ConfigError(f"GATEWAY_MAX_REQUEST_BYTES must be from 1024 to {MAX_MESSAGE_BYTES}")
        if self.fetch_max_bytes < 1 or self.fetch_timeout_s <= 0:
            raise ConfigError("GATEWAY_FETCH_MAX_BYTES and GATEWAY_FETCH_TIMEOUT_S must be > 0")
        if min(self.budget.max_tensor_bytes, self.budget.max_input_pixels) < 1:
            raise ConfigError("GATEWAY_MAX_TENSOR_BYTES and GATEWAY_MAX_INPUT_PIXELS must be > 0")


def jwt_from_env() -> JwtSettings | None:
    """JWT bearer tokens are accepted only when a JWKS file is configured."""
    jwks = env_str("GATEWAY_JWKS_FILE", "")
    if not jwks:
        return None
    d = JwtSettings(Path(jwks))
    return JwtSettings(
        jwks_file=Path(jwks),
        issuer=env_str("GATEWAY_JWT_ISSUER", ""),
        audience=env_str("GATEWAY_JWT_AUDIENCE", ""),
        tenant_claim=env_str("GATEWAY_JWT_TENANT_CLAIM", d.tenant_claim),
        scope_claim=env_str("GATEWAY_JWT_SCOPE_CLAIM", d.scope_claim),
    )


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
    limits: Limits = field(default_factory=Limits)
    jwt: JwtSettings | None = None
    # How long a request_id is remembered; a reuse after that counts as a new request.
    idempotency_retention_s: float = 7 * 24 * 3600.0
    # GET /ready waits this long for each dependency.
    ready_timeout_s: float = 2.0
    # The environment of executions that name none, when their tenant sets no default.
    default_environment: str = "native"
    # How long a known environment's catalog digest is trusted before it is asked again.
    catalog_recheck_s: float = 5.0

    @classmethod
    def from_env(cls) -> Config:
        cfg = cls(
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
            limits=Limits.from_env(),
            jwt=jwt_from_env(),
            idempotency_retention_s=env_float(
                "GATEWAY_IDEMPOTENCY_RETENTION_S", cls.idempotency_retention_s
            ),
            ready_timeout_s=env_float("GATEWAY_READY_TIMEOUT_S", cls.ready_timeout_s),
            default_environment=env_str("DEFAULT_ENVIRONMENT", cls.default_environment),
            catalog_recheck_s=env_float("GATEWAY_CATALOG_RECHECK_S", cls.catalog_recheck_s),
        )
        cfg.limits.check()
        if cfg.catalog_recheck_s < 0:
            raise ConfigError("COMFYFLEET_GATEWAY_CATALOG_RECHECK_S must be >= 0")
        return cfg
