"""A tenant's subscriptions: validation, storage, updates and secret rotation.

Every query is scoped by tenant: another tenant's subscription is simply not found.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from comfyfleet.common.addresses import AddressPolicy
from comfyfleet.common.errors import FieldViolation, InvalidArgument, NotFound
from comfyfleet.common.ids import new_id
from services.webhook.deliveries import disable_subscription
from services.webhook.filters import filter_violations
from services.webhook.paging import Page
from services.webhook.signing import new_secret

MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 1024
MAX_REQUEST_ID_LENGTH = 128
MUTABLE_FIELDS = ("url", "event_types", "description", "enabled")


@dataclass(frozen=True)
class Subscription:
    id: str
    tenant: str
    url: str
    event_types: tuple[str, ...]
    description: str
    enabled: bool
    disabled_reason: str
    create_time: datetime
    update_time: datetime
    # The signing secret; set only where the API shows it (creation and rotation).
    secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class SubscriptionFields:
    """What a client chooses about a subscription."""

    url: str
    event_types: tuple[str, ...] = ()
    description: str = ""
    enabled: bool = True


def url_problem(url: str, policy: AddressPolicy) -> str | None:
    """Why ``url`` cannot receive deliveries, or None."""
    if not url:
        return "required"
    if len(url) > MAX_URL_LENGTH:
        return f"at most {MAX_URL_LENGTH} characters"
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it validates the port
    except ValueError as err:
        return f"not a valid URL: {err}"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    refused = policy.refusal_for_host(parts.hostname)
    return f"deliveries to this address are refused: {refused}" if refused else None


def field_violations(
    values: Mapping[str, Any], policy: AddressPolicy, prefix: str
) -> list[FieldViolation]:
    """The problems of the subscription fields in ``values`` (a subset of MUTABLE_FIELDS)."""
    out: list[FieldViolation] = []
    if "url" in values and (problem := url_problem(values["url"], policy)):
        out.append(FieldViolation(f"{prefix}.url", problem))
    if "event_types" in values:
        out += filter_violations(values["event_types"], f"{prefix}.event_types")
    if len(values.get("description", "")) > MAX_DESCRIPTION_LENGTH:
        out.append(
            FieldViolation(f"{prefix}.description", f"at most {MAX_DESCRIPTION_LENGTH} characters")
        )
    return out


def _check(values: Mapping[str, Any], policy: AddressPolicy, prefix: str) -> None:
    if violations := field_violations(values, policy, prefix):
        raise InvalidArgument("the subscription is not valid", violations)


def _row(row: asyncpg.Record, secret: str = "") -> Subscription:
    return Subscription(
        id=row["id"],
        tenant=row["tenant"],
        url=row["url"],
        event_types=tuple(row["event_types"]),
        description=row["description"],
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        secret=secret,
    )


def _not_found(subscription_id: str) -> NotFound:
    return NotFound(f"subscription {subscription_id!r} not found", metadata={"id": subscription_id})


_COLUMNS = (
    "id, tenant, url, event_types, description, enabled, disabled_reason, create_time, update_time"
)


class Subscriptions:
    """Subscriptions of all tenants, each call scoped to one."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        policy: AddressPolicy,
        *,
        default_overlap_s: float,
        max_overlap_s: float,
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._default_overlap_s = default_overlap_s
        self._max_overlap_s = max_overlap_s

    async def create(
        self, tenant: str, fields: SubscriptionFields, request_id: str = ""
    ) -> Subscription:
        """A new enabled subscription with a fresh secret; a repeated request_id returns the
        subscription the first request made (with its current secret)."""
        values = {
            "url": fields.url,
            "event_types": fields.event_types,
            "description": fields.description,
        }
        _check(values, self._policy, "subscription")
        if len(request_id) > MAX_REQUEST_ID_LENGTH:
            raise InvalidArgument(
                "request_id is too long",
                [FieldViolation("request_id", f"at most {MAX_REQUEST_ID_LENGTH} characters")],
            )
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"INSERT INTO subscriptions (id, tenant, url, event_types, description, request_id)"
                f" VALUES ($1, $2, $3, $4, $5, $6)"
                f" ON CONFLICT (tenant, request_id) WHERE request_id IS NOT NULL DO NOTHING"
                f" RETURNING {_COLUMNS}",
                new_id("sub"),
                tenant,
                fields.url,
                list(fields.event_types),
                fields.description,
                request_id or None,
            )
            if row is None:
                return await self._replay_create(conn, tenant, request_id)
            secret = new_secret()
            await conn.execute(
                "INSERT INTO subscription_secrets (subscription_id, secret) VALUES ($1, $2)",
                row["id"],
                secret,
            )
        return _row(row, secret)

    async def _replay_create(
        self, conn: asyncpg.Connection, tenant: str, request_id: str
    ) -> Subscription:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS}, (SELECT secret FROM subscription_secrets k"
            "   WHERE k.subscription_id = s.id AND k.expire_time IS NULL) AS secret"
            " FROM subscriptions s WHERE tenant = $1 AND request_id = $2",
            tenant,
            request_id,
        )
        if row is None:  # deleted since the first request
            raise NotFound(f"the subscription created by request {request_id!r} was deleted")
        return _row(row, row["secret"] or "")

    async def get(self, tenant: str, subscription_id: str) -> Subscription:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM subscriptions WHERE id = $1 AND tenant = $2",
            subscription_id,
            tenant,
        )
        if row is None:
            raise _not_found(subscription_id)
        return _row(row)

    async def list_page(
        self, tenant: str, page_size: int, page_token: str
    ) -> tuple[list[Subscription], str]:
        """One page of the tenant's subscriptions, oldest first, and the next page's token."""
        page = Page.of(page_size, page_token, f"subscriptions:{tenant}")
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM subscriptions WHERE tenant = $1 AND ($2::text IS NULL OR id > $2)"
            " ORDER BY id LIMIT $3",
            tenant,
            page.after,
            page.size + 1,
        )
        return [_row(r) for r in rows[: page.size]], page.next_token([r["id"] for r in rows])

    async def update(
        self, tenant: str, subscription_id: str, changes: Mapping[str, Any]
    ) -> Subscription:
        """Applies ``changes`` (fields of MUTABLE_FIELDS). Enabling clears the platform's
        reason for disabling; disabling fails the deliveries still pending."""
        _check(changes, self._policy, "subscription")
        async with self._pool.acquire() as conn, conn.transaction():
            current = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM subscriptions WHERE id = $1 AND tenant = $2 FOR UPDATE",
                subscription_id,
                tenant,
            )
            if current is None:
                raise _not_found(subscription_id)
            merged = replace(_row(current), **_as_columns(changes))
            if current["enabled"] and not merged.enabled:
                await disable_subscription(conn, subscription_id, "", announce=False)
            row = await conn.fetchrow(
                f"UPDATE subscriptions SET url = $2, event_types = $3, description = $4,"
                f" enabled = $5, update_time = now(),"
                f" disabled_reason = CASE WHEN $5 THEN '' ELSE disabled_reason END,"
                f" failing_since = CASE WHEN $5 THEN NULL ELSE failing_since END"
                f" WHERE id = $1 RETURNING {_COLUMNS}",
                subscription_id,
                merged.url,
                list(merged.event_types),
                merged.description,
                merged.enabled,
            )
        return _row(row)

    async def delete(self, tenant: str, subscription_id: str) -> None:
        """Removes the subscription with its secrets, deliveries and their attempts."""
        status = await self._pool.execute(
            "DELETE FROM subscriptions WHERE id = $1 AND tenant = $2", subscription_id, tenant
        )
        if status.endswith(" 0"):
            raise _not_found(subscription_id)

    async def rotate_secret(
        self, tenant: str, subscription_id: str, overlap_s: float | None
    ) -> tuple[Subscription, datetime]:
        """A new current secret; older ones sign on for ``overlap_s`` at most (None: the
        default). Returns the subscription with the new secret and when the old ones end."""
        overlap = self._overlap(overlap_s)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE subscriptions SET update_time = now() WHERE id = $1 AND tenant = $2"
                f" RETURNING {_COLUMNS}, now() AS now",
                subscription_id,
                tenant,
            )
            if row is None:
                raise _not_found(subscription_id)
            ends = row["now"] + overlap
            await _retire_secrets(conn, subscription_id, ends)
            secret = new_secret()
            await conn.execute(
                "INSERT INTO subscription_secrets (subscription_id, secret) VALUES ($1, $2)",
                subscription_id,
                secret,
            )
        return _row(row, secret), ends

    def _overlap(self, overlap_s: float | None) -> timedelta:
        if overlap_s is None:
            return timedelta(seconds=self._default_overlap_s)
        if not 0 <= overlap_s <= self._max_overlap_s:
            raise InvalidArgument(
                "the overlap is out of range",
                [
                    FieldViolation(
                        "overlap", f"must be between 0 and {self._max_overlap_s:g} seconds"
                    )
                ],
            )
        return timedelta(seconds=overlap_s)


async def _retire_secrets(conn: asyncpg.Connection, subscription_id: str, ends: datetime) -> None:
    """Forgets secrets already expired; the others, the current one included, end at ``ends``
    at the latest."""
    await conn.execute(
        "DELETE FROM subscription_secrets WHERE subscription_id = $1 AND expire_time <= now()",
        subscription_id,
    )
    await conn.execute(
        "UPDATE subscription_secrets SET expire_time = LEAST(coalesce(expire_time, $2), $2)"
        " WHERE subscription_id = $1",
        subscription_id,
        ends,
    )


def _as_columns(changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(changes)
    if "event_types" in out:
        out["event_types"] = tuple(out["event_types"])
    return out
