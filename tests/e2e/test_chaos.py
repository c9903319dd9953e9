"""A chaos test of our own (issue 11), and issue 19's "honest about transient faults".

The platform's processes under a supervisor that restarts them, on a PostgreSQL and NATS of
the module's own. First a restart of PostgreSQL under the SDK, the CLI and REST: every
public answer is UNAVAILABLE with a retry delay (503 with Retry-After), never INTERNAL, and
the SDK and CLI ride it out under one request id. Then the chaos: random SIGKILLs of the
gateway, both scheduler replicas, models, webhook and both executors, and a restart of
PostgreSQL and of NATS, while clients submit with retries under each request's own
request_id. Afterwards: every accepted execution terminal and none lost, no request_id with
two executions, one terminal event per execution in JetStream with its sequences whole,
every event delivered to the webhook receiver, every output downloadable, no client ever
answered INTERNAL, UNKNOWN or 500, and no service answering any call INTERNAL.

The seed is printed; ``COMFYFLEET_CHAOS_SEED`` replays a run (``bench/chaos.py`` runs the
same at 1,000 executions).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from comfyfleet.sdk import ApiError, AsyncClient, Client, Settings
from comfyfleet.sdk.retry import NO_RETRY
from tests.e2e.receiver import Receiver, webhook_receiver
from tests.support import eventually
from tests.support.chaos import ChaosFleet, ChaosSettings, Figures, ObjectStoreInfo, run_chaos
from tests.support.chaos.clients import GRPC, Answers, Tally, tiny_workflow
from tests.support.chaos.fleet import Action
from tests.support.infra import S3Info
from tests.support.names import unique_bucket_name
from tests.support.paths import REPO_ROOT

SEED = int(os.environ.get("COMFYFLEET_CHAOS_SEED", "1119"))


@pytest.fixture(scope="module")
def fleet(s3_server: S3Info) -> Iterator[ChaosFleet]:
    store = ObjectStoreInfo(
        s3_server.endpoint,
        s3_server.access_key,
        s3_server.secret_key,
        s3_server.region,
        s3_server.create_bucket(unique_bucket_name("chaos")),
    )
    with ChaosFleet.running(store) as fleet:
        yield fleet


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as receiver:
        yield receiver


def tenant_key(fleet: ChaosFleet, name: str) -> str:
    with Client(Settings(fleet.addrs.gateway, fleet.admin_key)) as admin:
        tenant = admin.find_or_create_tenant(name)
        return admin.create_key(tenant.id, scopes=["executions:write"]).secret


async def postgres_down(fleet: ChaosFleet, down_s: float) -> None:
    """Has the fleet restart PostgreSQL, holding it down ``down_s``; returns once it is down."""
    assert fleet.chaos is not None
    fleet.chaos.infra_down_s = down_s
    fleet.chaos.begin([Action(0.0, "postgres")])

    async def down() -> None:
        assert fleet.chaos is not None and fleet.chaos.log.outages
        assert not fleet.postgres.running()

    await eventually(down, timeout=30)


def cli_submit(fleet: ChaosFleet, key: str, workflow: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "comfyfleet.cli.main", "--addr", fleet.addrs.gateway]
    return subprocess.run(
        [*argv, "--api-key", key, "submit", str(workflow)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        check=False,
    )


async def test_clients_ride_out_a_database_restart(fleet: ChaosFleet, tmp_path: Path) -> None:
    key = await asyncio.to_thread(tenant_key, fleet, "riders")
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(tiny_workflow(0x123456, "riders")))
    answers = Answers()
    settings = Settings(fleet.addrs.gateway, key)
    async with (
        AsyncClient(settings, interceptors=[Tally(answers)]) as client,
        AsyncClient(Settings(fleet.addrs.gateway, key, retry=NO_RETRY)) as once,
        aiohttp.ClientSession(f"http://{fleet.addrs.rest}") as http,
    ):
        await postgres_down(fleet, down_s=4.0)
        via_sdk = asyncio.create_task(client.submit(workflow.read_text()))
        via_cli = asyncio.create_task(asyncio.to_thread(cli_submit, fleet, key, workflow))
        with pytest.raises(ApiError) as refused:
            await once.submit(workflow.read_text())
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "rest-during-outage"}
        body = {"workflowJson": workflow.read_text()}
        async with http.post("/v1/executions", json=body, headers=headers) as response:
            rest = (response.status, response.headers.get("Retry-After"), await response.text())
        made, cli = await via_sdk, await via_cli
        listed = await client.list_executions()

    assert (refused.value.code, refused.value.reason) == ("UNAVAILABLE", "DEPENDENCY_UNAVAILABLE")
    assert refused.value.retry_after_s == 1.0
    assert rest[:2] == (503, "1"), rest
    assert cli.returncode == 0, cli.stderr
    # Each create went out under a request id of its own, kept across its retries.
    assert made.request_id.startswith("sdk-")
    by_request = sorted(e.request_id for e in listed.executions)
    assert len(by_request) == 2 and len(set(by_request)) == 2, by_request
    assert cli.stdout.strip() in {e.id for e in listed.executions}
    seen = answers.by_code(GRPC)
    assert seen["UNAVAILABLE"] >= 1 and set(seen) <= {"OK", "UNAVAILABLE"}, seen


async def test_nothing_is_lost_or_answered_internal_under_kills_and_restarts(
    fleet: ChaosFleet, receiver: Receiver
) -> None:
    print(f"\nchaos seed {SEED} (COMFYFLEET_CHAOS_SEED={SEED} replays it)")
    assert fleet.chaos is not None
    figures = Figures(ChaosSettings(seed=SEED))
    try:
        await run_chaos(fleet, receiver, figures)
    finally:
        print(figures.text())
        print("\n".join(fleet.chaos.log.lines))
        print(f"logs: {fleet.log_dir}")
