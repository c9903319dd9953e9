"""An execution's own webhook event filter, and lists by labels, across the whole platform:
the CLI and the SDK over gRPC, raw HTTP over REST, a real webhook receiver."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import nats
import pytest

from comfyfleet.cli.main import main as cli
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.sdk import AsyncClient, Settings
from tests.e2e.conftest import Platform
from tests.e2e.receiver import Receiver, webhook_receiver
from tests.support import eventually
from tests.support.paths import comfyui_ref

REF = comfyui_ref()
WORKFLOW = REF / "workflows" / "r01_invert.json"
SHAPES = REF / "inputs" / "shapes.png"
SCOPES = ("executions:write", "webhooks:write")


class Cli:
    """``comfyfleet`` in-process against the platform, its output captured."""

    def __init__(self, platform: Platform, capsys: pytest.CaptureFixture[str]) -> None:
        self.platform = platform
        self.capsys = capsys

    async def __call__(self, key: str, *argv: str) -> tuple[int, str, str]:
        args = ["--addr", self.platform.addrs.gateway, "--api-key", key, *argv]
        code = await asyncio.to_thread(cli, args)
        out, err = self.capsys.readouterr()
        return code, out, err

    async def new_tenant_key(self, tenant: str) -> str:
        scopes = [a for s in SCOPES for a in ("--scope", s)]
        code, out, err = await self(
            self.platform.admin_key, "keys", "create", "--tenant", tenant, *scopes
        )
        assert code == 0, err
        return out.strip()


def delivered(receiver: Receiver, execution_id: str) -> dict[str, str]:
    """Event id -> type of every delivery the receiver got about the execution."""
    bodies = [json.loads(r.body) for r in receiver.requests]
    return {
        b["data"]["eventId"]: b["type"]
        for b in bodies
        if b["data"].get("executionId") == execution_id
    }


async def intake_caught_up(platform: Platform) -> None:
    """The webhook service has turned every event on the stream into its deliveries."""
    nc = await nats.connect(platform.env["COMFYFLEET_NATS_URL"])
    try:
        info = await nc.jetstream().consumer_info(platform.env["COMFYFLEET_NATS_STREAM"], "webhook")
    finally:
        await nc.close()
    assert (info.num_pending, info.num_ack_pending) == (0, 0), info


async def test_an_execution_sends_only_the_events_it_chose_to_webhooks(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Cli(platform, capsys)
    key = await run.new_tenant_key("hook-filter")
    with webhook_receiver() as receiver:
        async with AsyncClient(Settings(platform.addrs.gateway, key)) as client:
            subscription = await client.create_subscription(receiver.url, ["execution.*"])
            code, _, err = await run(
                key,
                "submit",
                str(WORKFLOW),
                "--input",
                f"shapes.png={SHAPES}",
                "--webhook-event",
                "execution.succeeded",
                "--wait",
            )
            assert code == 0, err
            chosen = err.split("submitted ", 1)[1].split()[0]
            assert list((await client.get(chosen)).webhook_events) == ["execution.succeeded"]
            unfiltered = await client.submit(WORKFLOW.read_text(), {"shapes.png": SHAPES})
            done = await client.wait(unfiltered.id)
            assert done.state == executions_pb2.EXECUTION_STATE_SUCCEEDED, done.error
            everything = {e.event_id: e.event_type async for e in client.watch(unfiltered.id)}
            # queued, dispatched, running, progress ..., succeeded
            assert len(set(everything.values())) >= 4, everything
            history = {e.event_id: e.event_type async for e in client.watch(chosen)}
            assert len(set(history.values())) >= 4, history

            async def all_arrived() -> None:
                assert "execution.succeeded" in delivered(receiver, chosen).values()
                assert delivered(receiver, unfiltered.id) == everything

            await eventually(all_arrived, timeout=30)
            await eventually(lambda: intake_caught_up(platform), timeout=30)
            assert set(delivered(receiver, chosen).values()) == {"execution.succeeded"}
            # The delivery log agrees: its other events never became deliveries at all.
            log = await client.list_deliveries(subscription.id, page_size=500)
            made = {d.event_id: d.event_type for d in log.deliveries if d.event_id in history}
            assert set(made.values()) == {"execution.succeeded"} and len(made) == 1


async def test_a_bad_webhook_event_is_refused_naming_the_entry(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Cli(platform, capsys)
    key = await run.new_tenant_key("hook-filter-bad")
    code, _, err = await run(
        key, "submit", str(WORKFLOW), "--input", f"shapes.png={SHAPES}",
        "--webhook-event", "execution.succeeded", "--webhook-event", "execution.exploded",
    )  # fmt: skip
    assert code == 2
    assert "webhook_events[1]" in err and "execution.exploded" in err
    code, out, _ = await run(key, "list")
    assert code == 0 and out == ""


async def rest_pages(http: aiohttp.ClientSession, query: dict[str, str]) -> list[str]:
    """Every id GET /v1/executions lists with ``query``, two per page."""
    seen: list[str] = []
    token = ""
    while True:
        params = {**query, "pageSize": "2", **({"pageToken": token} if token else {})}
        async with http.get("/v1/executions", params=params) as response:
            assert response.status == 200, await response.text()
            page = await response.json()
        assert len(page["executions"]) <= 2
        seen += [e["id"] for e in page["executions"]]
        token = page["nextPageToken"]
        if not token:
            return seen


async def test_lists_filtered_by_labels_page_over_rest_grpc_and_the_cli(
    platform: Platform, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = Cli(platform, capsys)
    key = await run.new_tenant_key("labelled")
    shapes = [
        {"env": "prod", "team": "a"},
        {"env": "dev", "team": "a"},
        {"env": "prod", "team": "b"},
        {"env": "prod", "team": "a", "run": "3"},
        {"team": "a"},
        {"env": "prod", "team": "a"},
    ]
    async with AsyncClient(Settings(platform.addrs.gateway, key)) as client:
        made = []
        for labels in shapes:
            execution = await client.submit(
                WORKFLOW.read_text(), {"shapes.png": SHAPES}, labels=labels
            )
            made.append(execution.id)
        newest = list(reversed(made))
        prod_a = [made[n] for n in (5, 3, 0)]
        prod = [made[n] for n in (5, 3, 2, 0)]

        seen: list[str] = []
        token = ""
        while True:
            page = await client.list_executions(
                page_size=2, page_token=token, labels={"env": "prod", "team": "a"}
            )
            seen += [e.id for e in page.executions]
            token = page.next_page_token
            if not token:
                break
        assert seen == prod_a

    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(platform.rest_url, headers=headers) as http:
        assert await rest_pages(http, {"labels[env]": "prod"}) == prod
        assert await rest_pages(http, {"labels[env]": "prod", "labels[team]": "a"}) == prod_a
        assert await rest_pages(http, {}) == newest

        params = {"labels[env]": "prod", "pageSize": "1"}
        async with http.get("/v1/executions", params=params) as response:
            token = (await response.json())["nextPageToken"]
        async with http.get(
            "/v1/executions", params={"labels[env]": "dev", "pageToken": token}
        ) as response:
            assert response.status == 400
            assert violations(await response.json()) == ["page_token"]
        async with http.get("/v1/executions", params={"labels[]": "x"}) as response:
            assert response.status == 400
            assert violations(await response.json()) == ['labels[""]']

    code, out, err = await run(key, "list", "--label", "env=prod", "--label", "team=a")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == prod_a
    code, _, err = await run(key, "list", "--label", "env")
    assert code == 2 and "KEY=VALUE" in err


def violations(status: dict[str, object]) -> list[str]:
    """The fields a google.rpc.Status body's BadRequest names."""
    details = status["details"]
    assert isinstance(details, list)
    return [
        v["field"]
        for d in details
        if d["@type"].endswith("google.rpc.BadRequest")
        for v in d["fieldViolations"]
    ]
