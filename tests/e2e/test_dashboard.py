"""The operations dashboard in headless Chromium, on the whole platform: it asks for an admin
key, shows a running execution's progress, a circuit breaker opening, the autoscaler's
decisions (an ECS service on moto's local ECS API, sized on queue pressure) and what each
tenant spent (local GPU time priced for the test).

Needs Debian's ``chromium`` (scripts/install-system-deps.sh) and the ``playwright`` package;
Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import boto3
import grpc
import pytest
from moto.server import ThreadedMotoServer

from comfyfleet.devstack import free_port
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.tenants.v1 import tenants_pb2, tenants_pb2_grpc
from tests.e2e.conftest import Platform
from tests.integration.scheduler.scripted_executor import fail, scripted_executor, succeed
from tests.support import eventually
from tests.support.paths import comfyui_ref

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "Debian's chromium is not installed (scripts/install-system-deps.sh installs it)",
        allow_module_level=True,
    )
playwright = pytest.importorskip("playwright.async_api", reason="pip install playwright")

TINY = (comfyui_ref() / "workflows" / "a_tiny.json").read_text()
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


REGION = "us-east-1"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
CLUSTER, SERVICE = "dashboard", "comfyfleet-executor"
# GPU time at $36 an hour on ECS (the cheaper provider, so work goes there first) and $72
# locally: every attempt costs a cent at least (billed per second).
PRICES = {"ecs": {"usd_per_hour": {"*": 36.0}}, "local": {"usd_per_hour": {"*": 72.0}}}


@pytest.fixture(scope="module")
def ecs_api() -> Iterator[str]:
    """moto's server as the ECS API, with an executor service of no tasks on it."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        ecs = boto3.client("ecs", region_name=REGION, endpoint_url=endpoint, **_keys())
        ecs.create_cluster(clusterName=CLUSTER)
        ecs.register_task_definition(
            family=SERVICE,
            containerDefinitions=[{"name": "executor", "image": "executor:dev", "memory": 512}],
        )
        ecs.create_service(
            cluster=CLUSTER, serviceName=SERVICE, taskDefinition=SERVICE, desiredCount=0
        )
        yield endpoint
    finally:
        server.stop()


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"],
    }


def desired_count(endpoint: str) -> int:
    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=endpoint, **_keys())
    [service] = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"]
    return int(service["desiredCount"])


@pytest.fixture(scope="module")
def platform_extra_env(ecs_api: str) -> dict[str, str]:
    return {
        **AWS,
        "COMFYFLEET_ECS_CLUSTER": CLUSTER,
        "COMFYFLEET_ECS_SERVICE": SERVICE,
        "COMFYFLEET_ECS_REGION": REGION,
        "COMFYFLEET_ECS_ENDPOINT_URL": ecs_api,
        # No warm pool: the replicas the dashboard shows follow the queue alone.
        "COMFYFLEET_ECS_WARM_POOL": "0",
        "COMFYFLEET_SCHEDULER_AUTOSCALE_INTERVAL_S": "0.5",
        "COMFYFLEET_SCHEDULER_PRICES": json.dumps(PRICES),
    }


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with playwright.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield await browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            await browser.close()


def admin(platform: Platform) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {platform.admin_key}"),)


async def submit(platform: Platform, count: int) -> list[str]:
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as ch:
        stub = executions_pb2_grpc.ExecutionServiceStub(ch)
        request = executions_pb2.CreateExecutionRequest(workflow_json=TINY, max_attempts=1)
        return [
            (await stub.CreateExecution(request, metadata=admin(platform))).id for _ in range(count)
        ]


async def log_in(page: Page, platform: Platform) -> None:
    await page.goto(f"{platform.rest_url}/dashboard")
    await page.fill("#key", platform.admin_key)
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#status[data-updates]")


async def test_a_key_without_the_admin_scope_sees_no_overview(
    platform: Platform, page: Page
) -> None:
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as ch:
        created = await tenants_pb2_grpc.TenantServiceStub(ch).CreateApiKey(
            tenants_pb2.CreateApiKeyRequest(tenant_id="-"), metadata=admin(platform)
        )
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{platform.rest_url}/v1/operations/overview",
            headers={"authorization": f"Bearer {created.secret}"},
        ) as refused,
    ):
        assert refused.status == 403
        assert (await refused.json())["details"][0]["reason"] == "MISSING_SCOPE"
    await page.goto(f"{platform.rest_url}/dashboard")
    await page.fill("#key", created.secret)
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#login:not([hidden])")
    assert "admin" in (await page.text_content("#login-error") or "")


async def test_the_dashboard_shows_progress_and_a_breaker_opening(
    platform: Platform, page: Page, tmp_path: Path
) -> None:
    await log_in(page, platform)
    assert await page.is_visible("#executors tr[data-id]")
    # Each environment's own queue and pool.
    native = await page.text_content("#environments tr[data-name=native]") or ""
    assert "1 / 1 slots" in native or "0 / 1 slots" in native, native
    # An executor that reports progress, then holds its attempt until the test lets it go.
    async with scripted_executor(
        platform.addrs.scheduler, "aa-held", succeed(steps=3, gated=True)
    ) as held:
        await submit(platform, 4)
        row = await page.wait_for_selector("#executions tr:has-text('3 / 3')", timeout=20_000)
        assert row is not None
        assert "RUNNING" in (await row.text_content() or "")
        await page.screenshot(path=str(tmp_path / "progress.png"), full_page=True)

        async with scripted_executor(platform.addrs.scheduler, "ab-broken", fail(retryable=True)):

            async def opened() -> None:
                await submit(platform, 2)
                assert await page.query_selector("#breakers tr[data-state=OPEN]")

            await eventually(opened, timeout=60, interval=1.0)
        await page.screenshot(path=str(tmp_path / "breaker.png"), full_page=True)
        held.servicer.gate.set()
    text = await page.text_content("#breakers tr[data-state=OPEN]") or ""
    assert "executor/ab-broken" in text or "provider/local" in text


async def tenant_key(platform: Platform, name: str, max_concurrency: int) -> tuple[str, str]:
    """A new tenant that runs at most ``max_concurrency`` executions at once; its id and a key."""
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as ch:
        stub = tenants_pb2_grpc.TenantServiceStub(ch)
        tenant = await stub.CreateTenant(
            tenants_pb2.CreateTenantRequest(
                tenant=tenants_pb2.Tenant(name=name, max_concurrency=max_concurrency)
            ),
            metadata=admin(platform),
        )
        created = await stub.CreateApiKey(
            tenants_pb2.CreateApiKeyRequest(tenant_id=tenant.id), metadata=admin(platform)
        )
    return tenant.id, created.secret


async def submit_as(platform: Platform, key: str, count: int) -> list[str]:
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as ch:
        stub = executions_pb2_grpc.ExecutionServiceStub(ch)
        request = executions_pb2.CreateExecutionRequest(workflow_json=TINY)
        auth = (("authorization", f"Bearer {key}"),)
        return [(await stub.CreateExecution(request, metadata=auth)).id for _ in range(count)]


async def test_the_dashboard_shows_scaling_decisions_and_costs(
    platform: Platform, page: Page, ecs_api: str, tmp_path: Path
) -> None:
    await log_in(page, platform)
    tenant, key = await tenant_key(platform, "scaled", max_concurrency=1)
    # An ECS task (the cheapest provider) holds the tenant's one running execution, so the
    # tenant's next ones wait in the queue: the autoscaler asks the ECS service for more.
    async with scripted_executor(
        platform.addrs.scheduler, "ecs-task-1", succeed(gated=True), provider="ecs"
    ) as task:
        [first] = await submit_as(platform, key, 1)

        async def held() -> None:
            assert [c.execution_id for c in task.servicer.calls] == [first]

        await eventually(held, timeout=20)
        ids = [first, *await submit_as(platform, key, 5)]
        decision = await page.wait_for_selector(
            "#scaling tr[data-provider=ecs][data-applied=true]", timeout=30_000
        )
        assert decision is not None
        text = await decision.text_content() or ""
        assert "waiting and no replica" in text or "queue depth" in text, text
        assert desired_count(ecs_api) > 0, "the decision reached the ECS API"
        await page.screenshot(path=str(tmp_path / "scaling.png"), full_page=True)
        task.servicer.gate.set()

        async with grpc.aio.insecure_channel(platform.addrs.gateway) as ch:
            stub = executions_pb2_grpc.ExecutionServiceStub(ch)
            auth = (("authorization", f"Bearer {key}"),)

            async def all_succeeded() -> None:
                for execution_id in ids:
                    got = await stub.GetExecution(
                        executions_pb2.GetExecutionRequest(id=execution_id), metadata=auth
                    )
                    assert got.state == executions_pb2.EXECUTION_STATE_SUCCEEDED, got

            await eventually(all_succeeded, timeout=90, interval=0.5)

    async def charged() -> None:
        row = await page.query_selector(f"#costs tr[data-tenant='{tenant}']")
        assert row is not None
        spent = float(await row.get_attribute("data-spent") or 0)
        assert spent >= 0.01 * len(ids)
        text = await row.text_content() or ""
        # The tenant by its name (its id on hover), with what it spent.
        assert f"${spent:.4f}" in text and text.startswith("scaled")

    await eventually(charged, timeout=20, interval=0.5)
    await page.screenshot(path=str(tmp_path / "costs.png"), full_page=True)
