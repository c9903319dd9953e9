"""The webhook service's settings, read once from ``COMFYFLEET_*`` environment variables."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Self

from comfyfleet.common.addresses import AddressPolicy
from comfyfleet.common.config import (
    ConfigError,
    DatabaseConfig,
    NatsConfig,
    Settings,
    group,
    parse_duration,
    setting,
)

# Standard Webhooks' recommended schedule: after the first attempt fails, wait 5 s, 5 min,
# 30 min, 2 h, 5 h, 10 h and 10 h (plus jitter) before the next; then give up.
DEFAULT_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,10h"
DAY_S = 24 * 3600.0


def parse_schedule(text: str) -> tuple[float, ...]:
    """A comma-separated list of durations; an empty string means "never retry"."""
    parts = [p for p in text.split(",") if p.strip()]
    return tuple(parse_duration(p) for p in parts)


@dataclass(frozen=True)
class DeliverySettings(Settings):
    """How deliveries are sent, retried and given up on."""

    # Pauses before each retry; the number of retries is the schedule's length.
    retry_schedule_s: tuple[float, ...] = setting(
        "WEBHOOK_RETRY_SCHEDULE",
        parse=parse_schedule,
        factory=lambda: parse_schedule(DEFAULT_RETRY_SCHEDULE),
    )
    # Each pause grows by a random share of itself up to this, so retries of many
    # deliveries that failed together do not arrive together.
    retry_jitter: float = setting("WEBHOOK_RETRY_JITTER", 0.1)
    # The longest Retry-After (on 429 and 503) that is honoured as asked; longer ones are cut.
    max_retry_after_s: float = setting("WEBHOOK_MAX_RETRY_AFTER", DAY_S)
    # One attempt's limit, connecting and reading the answer included.
    request_timeout_s: float = setting("WEBHOOK_REQUEST_TIMEOUT", 15.0)
    # A claimed delivery stays invisible to other workers this long; a worker that died
    # mid-attempt thus gives it back once this has passed. Must exceed the request timeout
    # (read from the environment: the request timeout's plus 30 s when not set).
    claim_lease_s: float = setting("WEBHOOK_CLAIM_LEASE", 45.0)
    # Attempts in flight in this process, and to any one subscription: a healthy one, and
    # one whose last attempt failed (a slow or failing receiver holds only a small share of
    # the workers, so many can fail at once before healthy ones wait).
    max_in_flight: int = setting("WEBHOOK_MAX_IN_FLIGHT", 512)
    per_subscription_concurrency: int = setting("WEBHOOK_SUBSCRIPTION_CONCURRENCY", 64)
    failing_subscription_concurrency: int = setting("WEBHOOK_FAILING_SUBSCRIPTION_CONCURRENCY", 4)
    # How often workers look for due deliveries when nothing woke them (new events and
    # finished attempts wake them at once in this process).
    poll_interval_s: float = setting("WEBHOOK_POLL_INTERVAL", 1.0)
    # A subscription whose deliveries have failed without a success for this long is disabled.
    disable_after_s: float = setting("WEBHOOK_DISABLE_AFTER", 5 * DAY_S)
    # How long a rotated-out secret keeps signing when the rotation does not say.
    secret_overlap_s: float = setting("WEBHOOK_SECRET_OVERLAP", DAY_S)
    # The longest overlap a rotation may ask for.
    max_secret_overlap_s: float = setting("WEBHOOK_MAX_SECRET_OVERLAP", 7 * DAY_S)
    # Finished deliveries and their attempt log are kept this long, then pruned; 0 keeps
    # them for ever. Keep it longer than the event stream's age limit (7 days by default).
    retention_s: float = setting("WEBHOOK_RETENTION", 30 * DAY_S)
    # How often the pruning runs.
    retention_interval_s: float = setting("WEBHOOK_RETENTION_INTERVAL", 3600.0)

    def __post_init__(self) -> None:
        if not 0 <= self.retry_jitter <= 1:
            raise ConfigError("the retry jitter must be between 0 and 1")
        if self.request_timeout_s <= 0 or self.poll_interval_s <= 0:
            raise ConfigError("the request timeout and poll interval must be positive")
        if self.claim_lease_s <= self.request_timeout_s:
            raise ConfigError("the claim lease must be longer than the request timeout")
        limits = (
            self.max_in_flight,
            self.per_subscription_concurrency,
            self.failing_subscription_concurrency,
        )
        if min(limits) < 1:
            raise ConfigError("the concurrency limits must be at least 1")
        if self.disable_after_s <= 0 or self.secret_overlap_s < 0:
            raise ConfigError("disable_after must be positive and the secret overlap not negative")
        if self.retention_s < 0 or self.retention_interval_s <= 0:
            raise ConfigError("the retention must not be negative and its interval positive")

    @classmethod
    def from_env(cls, *, prefix: str = "", base: Self | None = None, **given: Any) -> Self:
        """As declared; a claim lease left unset is the request timeout's plus 30 s."""
        if "claim_lease_s" not in given and cls.read("claim_lease_s", prefix) is None:
            timeout = cls.read("request_timeout_s", prefix) or (base or cls()).request_timeout_s
            given["claim_lease_s"] = timeout + 30.0
        return super().from_env(prefix=prefix, base=base, **given)


@dataclass(frozen=True)
class ConsumerSettings(Settings):
    """The durable JetStream pull consumer that turns events into deliveries."""

    durable_name: str = setting("WEBHOOK_CONSUMER", "webhook")
    # An event not acked this long after it was handed out is handed out again.
    ack_wait_s: float = setting("WEBHOOK_ACK_WAIT", 30.0)
    # Hand-outs per event before JetStream gives up on it. High, because an event is only
    # handed out again when its deliveries could not be stored (the database is down).
    max_deliver: int = setting("WEBHOOK_MAX_DELIVER", 1000)
    # Events asked for at once (more are asked for as half of them arrive); also the most
    # stored in one transaction.
    fetch_batch: int = setting("WEBHOOK_FETCH_BATCH", 256)
    # How long one pull request stays open on the server; one lost (a reconnect) is noticed
    # after twice this.
    pull_expires_s: float = setting("WEBHOOK_PULL_EXPIRES", 5.0)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.durable_name):
            raise ConfigError("the consumer name may hold letters, digits, '-' and '_' only")
        if self.ack_wait_s <= 0 or self.pull_expires_s <= 0 or self.fetch_batch < 1:
            raise ConfigError("ack wait, pull expiry and fetch batch must be positive")


@dataclass(frozen=True)
class Config(Settings):
    grpc_addr: str = setting("GRPC_ADDR", "127.0.0.1:50054")
    database: DatabaseConfig = group(factory=DatabaseConfig)
    nats: NatsConfig = group(factory=NatsConfig)
    delivery: DeliverySettings = group(factory=DeliverySettings)
    consumer: ConsumerSettings = group(factory=ConsumerSettings)
    # Which destination addresses deliveries may connect to, beyond public ones.
    addresses: AddressPolicy = group(prefix="WEBHOOK_", factory=AddressPolicy)
    shutdown_grace_s: float = setting("SHUTDOWN_GRACE", 10.0)
    db_pool_size: int = setting("WEBHOOK_DB_POOL_SIZE", 10)
