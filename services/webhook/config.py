"""The webhook service's settings, read once from ``COMFYFLEET_*`` environment variables."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from comfyfleet.common.addresses import IPNetwork, parse_networks
from comfyfleet.common.config import (
    ConfigError,
    DatabaseConfig,
    NatsConfig,
    env_bool,
    env_duration,
    env_float,
    env_int,
    env_str,
    parse_duration,
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
class DeliverySettings:
    """How deliveries are sent, retried and given up on."""

    # Pauses before each retry; the number of retries is the schedule's length.
    retry_schedule_s: tuple[float, ...] = field(
        default_factory=lambda: parse_schedule(DEFAULT_RETRY_SCHEDULE)
    )
    # Each pause grows by a random share of itself up to this, so retries of many
    # deliveries that failed together do not arrive together.
    retry_jitter: float = 0.1
    # The longest Retry-After (on 429 and 503) that is honoured as asked; longer ones are cut.
    max_retry_after_s: float = DAY_S
    # One attempt's limit, connecting and reading the answer included.
    request_timeout_s: float = 15.0
    # A claimed delivery stays invisible to other workers this long; a worker that died
    # mid-attempt thus gives it back once this has passed. Must exceed the request timeout.
    claim_lease_s: float = 45.0
    # Attempts in flight in this process, and to any one subscription: a healthy one, and
    # one whose last attempt failed (a slow or failing receiver holds only a small share of
    # the workers, so many can fail at once before healthy ones wait).
    max_in_flight: int = 512
    per_subscription_concurrency: int = 64
    failing_subscription_concurrency: int = 4
    # How often workers look for due deliveries when nothing woke them (new events and
    # finished attempts wake them at once in this process).
    poll_interval_s: float = 1.0
    # A subscription whose deliveries have failed without a success for this long is disabled.
    disable_after_s: float = 5 * DAY_S
    # How long a rotated-out secret keeps signing when the rotation does not say.
    secret_overlap_s: float = DAY_S
    # The longest overlap a rotation may ask for.
    max_secret_overlap_s: float = 7 * DAY_S
    # Finished deliveries and their attempt log are kept this long, then pruned; 0 keeps
    # them for ever. Keep it longer than the event stream's age limit (7 days by default).
    retention_s: float = 30 * DAY_S
    # How often the pruning runs.
    retention_interval_s: float = 3600.0

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
    def from_env(cls) -> DeliverySettings:
        d = cls()
        timeout = env_duration("WEBHOOK_REQUEST_TIMEOUT", d.request_timeout_s)
        return cls(
            retry_schedule_s=parse_schedule(
                env_str("WEBHOOK_RETRY_SCHEDULE", DEFAULT_RETRY_SCHEDULE)
            ),
            retry_jitter=env_float("WEBHOOK_RETRY_JITTER", d.retry_jitter),
            max_retry_after_s=env_duration("WEBHOOK_MAX_RETRY_AFTER", d.max_retry_after_s),
            request_timeout_s=timeout,
            claim_lease_s=env_duration("WEBHOOK_CLAIM_LEASE", timeout + 30.0),
            max_in_flight=env_int("WEBHOOK_MAX_IN_FLIGHT", d.max_in_flight),
            per_subscription_concurrency=env_int(
                "WEBHOOK_SUBSCRIPTION_CONCURRENCY", d.per_subscription_concurrency
            ),
            failing_subscription_concurrency=env_int(
                "WEBHOOK_FAILING_SUBSCRIPTION_CONCURRENCY", d.failing_subscription_concurrency
            ),
            poll_interval_s=env_duration("WEBHOOK_POLL_INTERVAL", d.poll_interval_s),
            disable_after_s=env_duration("WEBHOOK_DISABLE_AFTER", d.disable_after_s),
            secret_overlap_s=env_duration("WEBHOOK_SECRET_OVERLAP", d.secret_overlap_s),
            max_secret_overlap_s=env_duration("WEBHOOK_MAX_SECRET_OVERLAP", d.max_secret_overlap_s),
            retention_s=env_duration("WEBHOOK_RETENTION", d.retention_s),
            retention_interval_s=env_duration("WEBHOOK_RETENTION_INTERVAL", d.retention_interval_s),
        )


@dataclass(frozen=True)
class ConsumerSettings:
    """The durable JetStream pull consumer that turns events into deliveries."""

    durable_name: str = "webhook"
    # An event not acked this long after it was handed out is handed out again.
    ack_wait_s: float = 30.0
    # Hand-outs per event before JetStream gives up on it. High, because an event is only
    # handed out again when its deliveries could not be stored (the database is down).
    max_deliver: int = 1000
    # Events asked for at once (more are asked for as half of them arrive); also the most
    # stored in one transaction.
    fetch_batch: int = 256
    # How long one pull request stays open on the server; one lost (a reconnect) is noticed
    # after twice this.
    pull_expires_s: float = 5.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.durable_name):
            raise ConfigError("the consumer name may hold letters, digits, '-' and '_' only")
        if self.ack_wait_s <= 0 or self.pull_expires_s <= 0 or self.fetch_batch < 1:
            raise ConfigError("ack wait, pull expiry and fetch batch must be positive")

    @classmethod
    def from_env(cls) -> ConsumerSettings:
        d = cls()
        return cls(
            durable_name=env_str("WEBHOOK_CONSUMER", d.durable_name),
            ack_wait_s=env_duration("WEBHOOK_ACK_WAIT", d.ack_wait_s),
            max_deliver=env_int("WEBHOOK_MAX_DELIVER", d.max_deliver),
            fetch_batch=env_int("WEBHOOK_FETCH_BATCH", d.fetch_batch),
            pull_expires_s=env_duration("WEBHOOK_PULL_EXPIRES", d.pull_expires_s),
        )


@dataclass(frozen=True)
class AddressSettings:
    """Which destination addresses deliveries may connect to, beyond public ones."""

    # Lets deliveries reach 127.0.0.0/8 and ::1 (tests and `make up`), nothing else private.
    allow_loopback: bool = False
    # Networks reachable although private or reserved (an operator's internal receivers).
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_env(cls) -> AddressSettings:
        return cls(
            allow_loopback=env_bool("WEBHOOK_ALLOW_LOOPBACK", False),
            allowed_networks=parse_networks(env_str("WEBHOOK_ALLOWED_NETWORKS", "")),
        )


@dataclass(frozen=True)
class Config:
    grpc_addr: str
    database: DatabaseConfig
    nats: NatsConfig
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    consumer: ConsumerSettings = field(default_factory=ConsumerSettings)
    addresses: AddressSettings = field(default_factory=AddressSettings)
    shutdown_grace_s: float = 10.0
    db_pool_size: int = 10

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            grpc_addr=env_str("GRPC_ADDR", "127.0.0.1:50054"),
            database=DatabaseConfig.from_env(),
            nats=NatsConfig.from_env(),
            delivery=DeliverySettings.from_env(),
            consumer=ConsumerSettings.from_env(),
            addresses=AddressSettings.from_env(),
            shutdown_grace_s=env_duration("SHUTDOWN_GRACE", 10.0),
            db_pool_size=env_int("WEBHOOK_DB_POOL_SIZE", 10),
        )
