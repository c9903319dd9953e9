"""Budgets through the public API: an admin sets a tenant's monthly limit over REST, the
tenant reads its spending, and once the limit is spent new work is refused."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest

from comfyfleet.cli.main import main
from tests.e2e.conftest import Platform
from tests.support.eventually import eventually
from tests.support.paths import comfyui_ref

REF = comfyui_ref()
WORKFLOW = json.loads((REF / "workflows" / "r01_invert.json").read_text())
SHAPES = (REF / "inputs" / "shapes.png").read_bytes()


@pytest.fixture(scope="module")
def platform_extra_env() -> dict[str, str]:
    # The local pool billed at $3,600 an hour in whole seconds: every execution costs $1.
    prices = {"local": {"usd_per_hour": {"*": 3600.0}, "increment_s": 1, "minimum_s": 1}}
    return {"COMFYFLEET_SCHEDULER_PRICES": json.dumps(prices)}


def submission() -> dict[str, Any]:
    return {
        "workflow": WORKFLOW,
        "inputs": [{"name": "shapes.png", "content": base64.b64encode(SHAPES).decode()}],
    }


async def test_a_spent_budget_refuses_new_work_until_raised(platform: Platform) -> None:
    admin = {"Authorization": f"Bearer {platform.admin_key}"}
    async with aiohttp.ClientSession(platform.rest_url, headers=admin) as http:
        async with http.post("/v1/tenants", json={"name": "frugal"}) as response:
            assert response.status == 200, await response.text()
            tenant = (await response.json())["id"]
        async with http.post(
            f"/v1/tenants/{tenant}/apiKeys", json={"scopes": ["executions:write"]}
        ) as response:
            key = (await response.json())["secret"]
        user = {"Authorization": f"Bearer {key}"}

        # Bad input changes nothing; only admins set budgets.
        async with http.patch(f"/v1/tenants/{tenant}/budget", json={"limitUsd": -1}) as response:
            assert response.status == 400
            body = await response.json()
            [bad] = [d for d in body["details"] if d["@type"].endswith("BadRequest")]
            violations = bad["fieldViolations"]
            assert [v["field"] for v in violations] == ["limit_usd"]
        async with http.patch(
            f"/v1/tenants/{tenant}/budget", json={"limitUsd": 0.5}, headers=user
        ) as response:
            assert response.status == 403
        async with http.patch("/v1/tenants/nobody/budget", json={"limitUsd": 0.5}) as response:
            assert response.status == 404

        async with http.patch(f"/v1/tenants/{tenant}/budget", json={"limitUsd": 0.5}) as response:
            assert response.status == 200, await response.text()
            budget = await response.json()
        assert budget["tenantId"] == tenant and budget["limitUsd"] == 0.5
        assert budget.get("spentUsd", 0) == 0

        # Not spent yet: the first execution runs, and costs its one billed second.
        async with http.post("/v1/executions", json=submission(), headers=user) as response:
            assert response.status == 200, await response.text()
            first = (await response.json())["id"]

        async def spent() -> dict[str, Any]:
            async with http.get("/v1/tenants/-/budget", headers=user) as response:
                assert response.status == 200
                got: dict[str, Any] = await response.json()
            assert got.get("spentUsd", 0) >= 1.0, got
            return got

        got = await eventually(spent, timeout=90)
        assert got["periodStartTime"] < got["periodEndTime"]
        async with http.get(f"/v1/executions/{first}", headers=user) as response:
            assert (await response.json())["state"] == "EXECUTION_STATE_SUCCEEDED"

        # Spent: refused with 429 and a QuotaFailure, and nothing is created.
        async with http.post("/v1/executions", json=submission(), headers=user) as response:
            assert response.status == 429, await response.text()
            body = await response.json()
        kinds = [d["@type"].rsplit(".", 1)[-1] for d in body["details"]]
        assert "QuotaFailure" in kinds, body
        async with http.get("/v1/executions", headers=user) as response:
            assert [e["id"] for e in (await response.json())["executions"]] == [first]

        # Raised: work is accepted again.
        async with http.patch(f"/v1/tenants/{tenant}/budget", json={"limitUsd": 100}) as response:
            assert response.status == 200
        async with http.post("/v1/executions", json=submission(), headers=user) as response:
            assert response.status == 200, await response.text()


async def test_the_cli_shows_and_sets_budgets(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    async def cli(key: str, *argv: str) -> tuple[int, str, str]:
        args = ["--addr", platform.addrs.gateway, "--api-key", key, *argv]
        code = await asyncio.to_thread(main, args)
        out, err = capsys.readouterr()
        return code, out, err

    admin = platform.admin_key
    code, out, _ = await cli(admin, "keys", "create", "--tenant", "cli-budget")
    assert code == 0
    user = out.strip()

    code, out, err = await cli(admin, "budget", "--tenant", "cli-budget", "--set", "12.5")
    assert code == 0, err
    assert "spent $0.00 of $12.50, $12.50 left" in out
    code, out, _ = await cli(user, "budget")
    assert code == 0 and "of $12.50" in out
    # Only admins set limits, and a limit is a number >= 0.
    code, _, err = await cli(user, "budget", "--set", "100")
    assert code == 2 and "admin" in err
    code, _, err = await cli(admin, "budget", "--tenant", "cli-budget", "--set", "-3")
    assert code == 2 and ">= 0" in err
    code, out, _ = await cli(admin, "budget", "--tenant", "cli-budget", "--set", "0")
    assert code == 0 and "no limit" in out
