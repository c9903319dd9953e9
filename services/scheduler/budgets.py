"""Per-tenant monthly budgets: what a tenant may spend in a calendar month (UTC), and the
refusal of new work once it is spent. Attempts add their cost to the tenant's month as they
end (``ExecutionStore``); this module reads that ledger."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from comfyfleet.common.errors import (
    FieldViolation,
    InvalidArgument,
    QuotaViolation,
    ResourceExhausted,
)


def month_of(now: datetime) -> tuple[datetime, datetime]:
    """The first moment of ``now``'s month (UTC) and of the next one."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


@dataclass(frozen=True)
class Budget:
    tenant: str
    # 0: no limit.
    limit_usd: float
    spent_usd: float
    period_start: datetime
    period_end: datetime

    @property
    def exhausted(self) -> bool:
        return self.limit_usd > 0 and self.spent_usd >= self.limit_usd

    def refusal(self, now: datetime) -> ResourceExhausted:
        """RESOURCE_EXHAUSTED with a QuotaFailure naming the budget, and RetryInfo pointing at
        the next month, when spending starts again."""
        return ResourceExhausted(
            f"tenant {self.tenant!r} has spent its monthly budget of ${self.limit_usd:.2f}"
            f" (${self.spent_usd:.2f} so far this month)",
            retry_after_s=max(0.0, (self.period_end - now).total_seconds()),
            quota=[
                QuotaViolation(
                    subject=f"tenant:{self.tenant}",
                    description=f"monthly budget of ${self.limit_usd:.2f} spent",
                )
            ],
            reason="BUDGET_EXHAUSTED",
        )


def check_budget_request(tenant: str, limit_usd: float) -> None:
    violations = []
    if not tenant:
        violations.append(FieldViolation("tenant", "the tenant's id is required"))
    if not math.isfinite(limit_usd) or limit_usd < 0:
        violations.append(FieldViolation("limit_usd", "must be a number >= 0 (0: no limit)"))
    if violations:
        raise InvalidArgument("the budget is invalid", violations)


class Budgets:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, tenant: str) -> Budget:
        row = await self.pool.fetchrow(
            "SELECT now() AS now,"
            " (SELECT limit_usd FROM tenant_budgets WHERE tenant = $1) AS limit_usd,"
            " (SELECT spent_usd FROM tenant_spend WHERE tenant = $1"
            "  AND period = date_trunc('month', now() AT TIME ZONE 'UTC')::date) AS spent_usd",
            tenant,
        )
        start, end = month_of(row["now"])
        return Budget(tenant, row["limit_usd"] or 0.0, row["spent_usd"] or 0.0, start, end)

    async def set(self, tenant: str, limit_usd: float) -> Budget:
        """Sets (0: removes) the tenant's limit; checked before anything changes."""
        check_budget_request(tenant, limit_usd)
        if limit_usd == 0:
            await self.pool.execute("DELETE FROM tenant_budgets WHERE tenant = $1", tenant)
        else:
            await self.pool.execute(
                "INSERT INTO tenant_budgets (tenant, limit_usd, updated_at) VALUES ($1, $2, now())"
                " ON CONFLICT (tenant) DO UPDATE SET limit_usd = $2, updated_at = now()",
                tenant,
                limit_usd,
            )
        return await self.get(tenant)

    async def check(self, tenant: str) -> None:
        """Refuses new work of a tenant whose budget is spent."""
        budget = await self.get(tenant)
        if budget.exhausted:
            raise budget.refusal(datetime.now(UTC))
