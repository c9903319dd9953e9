"""``comfyfleet budget [--tenant NAME] [--set USD]``: a tenant's monthly spending limit and
what it spent this month; admins set the limit."""

from __future__ import annotations

import argparse
import math
from typing import Any

from comfyfleet.cli.keys import tenant_of
from comfyfleet.cli.usage import UsageError
from comfyfleet.sdk import Client
from comfyfleet.tenants.v1 import tenants_pb2


def describe(budget: tenants_pb2.TenantBudget) -> str:
    start = budget.period_start_time.ToDatetime()
    end = budget.period_end_time.ToDatetime()
    limit = f"${budget.limit_usd:,.2f}" if budget.limit_usd else "no limit"
    left = (
        f", ${max(0.0, budget.limit_usd - budget.spent_usd):,.2f} left" if budget.limit_usd else ""
    )
    return (
        f"tenant {budget.tenant_id}: spent ${budget.spent_usd:,.2f} of {limit}{left}"
        f" ({start:%Y-%m-%d} to {end:%Y-%m-%d})"
    )


def cmd_budget(client: Client, args: argparse.Namespace) -> int:
    tenant_id = tenant_of(client, args.tenant)
    if args.set is None:
        budget = client.get_budget(tenant_id)
    else:
        if not math.isfinite(args.set) or args.set < 0:
            raise UsageError("--set takes a number of US dollars >= 0 (0 removes the limit)")
        if tenant_id == "-":
            tenant_id = client.get_budget().tenant_id
        budget = client.set_budget(tenant_id, args.set)
    print(describe(budget))
    return 0


def add_parser(sub: Any) -> None:
    budget = sub.add_parser(
        "budget", help="a tenant's monthly spending limit and what it spent this month"
    )
    budget.add_argument(
        "--tenant", help="a tenant by name (admin keys; default: the key's own tenant)"
    )
    budget.add_argument(
        "--set",
        type=float,
        metavar="USD",
        help="set the monthly limit in US dollars, 0 for none (admin keys)",
    )
    budget.set_defaults(run=cmd_budget)
