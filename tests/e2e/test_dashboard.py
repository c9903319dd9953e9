"""The operations dashboard in headless Chromium, on the whole platform: it asks for an admin
key, shows a running execution's progress, and shows a circuit breaker opening.

Needs Debian's ``chromium`` (scripts/install-system-deps.sh) and the ``playwright`` package;
Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import grpc
import pytest

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
