"""Autoscaling applied: the ECS service's desired count through boto3 against a local ECS
API (moto's server), the RunPod endpoint's workers through its REST API (or only recorded
without one), and every decision listed."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer

from comfyfleet.devstack import free_port
from comfyfleet.scheduler.v1 import scheduler_pb2
from services.scheduler.providers.ecs import EcsConfig
from services.scheduler.providers.runpod import RunpodConfig
from services.scheduler.server import Scheduler
from tests.integration.scheduler.conftest import Clients, StartScheduler, clients_of
from tests.integration.scheduler.helpers import (
    STATE,
    comfyui_object_info_json,
    create,
    declare_by_registering,
    wait_for_state,
)
from tests.integration.scheduler.scripted_executor import scripted_executor, succeed

TENANT = "acme"
PNG = b"\x89PNG"
REGION = "us-east-1"
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@pytest.fixture(scope="module")
def ecs_api() -> Iterator[str]:
    """moto's server, as a local ECS API, with the credentials boto3 needs for it."""
    saved = {k: os.environ.get(k) for k in AWS}
    os.environ.update(AWS)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ecs_service(endpoint: str, name: str, desired: int) -> EcsConfig:
    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=endpoint)
    ecs.create_cluster(clusterName=name)
    ecs.register_task_definition(
        family="comfyfleet-executor",
        containerDefinitions=[{"name": "executor", "image": "executor:dev", "memory": 512}],
    )
    ecs.create_service(
        cluster=name,
        serviceName="comfyfleet-executor",
        taskDefinition="comfyfleet-executor",
        desiredCount=desired,
    )
    return EcsConfig(
        cluster=name,
        service="comfyfleet-executor",
        region=REGION,
        endpoint_url=endpoint,
        max_replicas=6,
    )


def desired_count(cfg: EcsConfig) -> int:
    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=cfg.endpoint_url)
    [service] = ecs.describe_services(cluster=cfg.cluster, services=[cfg.service])["services"]
    return int(service["desiredCount"])


async def decisions(clients: Clients, provider: str = "") -> list[scheduler_pb2.ScalingDecision]:
    listed = await clients.scheduler.ListScalingDecisions(
        scheduler_pb2.ListScalingDecisionsRequest(provider=provider)
    )
    return list(listed.decisions)


@contextlib.asynccontextmanager
async def scaled(
    start_scheduler: StartScheduler, **config: Any
) -> AsyncIterator[tuple[Scheduler, Clients]]:
    # Rounds run when the test says, on the clock the test sets.
    async with (
        start_scheduler(autoscale_interval_s=0, **config) as running,
        clients_of(running) as clients,
    ):
        yield running, clients


async def test_queued_work_scales_the_ecs_service_up_then_idleness_to_zero(
    start_scheduler: StartScheduler, ecs_api: str
) -> None:
    cfg = ecs_service(ecs_api, "up-and-down", desired=0)
    async with scaled(start_scheduler, ecs=cfg) as (running, clients):
        autoscaler = running.autoscaler
        execution = await create(clients, TENANT)
        [up] = await autoscaler.round()
        assert (up.provider, up.current, up.desired, up.applied) == ("ecs", 0, 3, True)
        assert desired_count(cfg) == 3
        assert await autoscaler.round() == [], "steady: nothing new to decide"

        # The service's tasks register and do the work.
        async with scripted_executor(
            clients.address, "task-1", succeed(("2", "a.png", PNG)), provider="ecs"
        ):
            await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
        real_clock = autoscaler.clock
        autoscaler.clock = lambda: real_clock() + 601
        [down] = await autoscaler.round()
        listed = await decisions(clients, "ecs")
    assert (down.current, down.desired, down.applied) == (3, 0, True)
    assert down.reason == "no work for 600s: down to 0"
    assert desired_count(cfg) == 0
    assert [(d.current_replicas, d.desired_replicas) for d in listed] == [(3, 0), (0, 3)]
    assert listed[1].reason == "1 waiting and no replica: +3"
    assert listed[1].queue_depth == 1 and listed[1].applied
    assert listed[1].HasField("decide_time")


async def test_a_provider_scales_on_its_own_environments_queue_only(
    start_scheduler: StartScheduler, ecs_api: str
) -> None:
    """The ECS service runs the "sd15" environment: native work waiting does not grow it."""
    cfg = dataclasses.replace(
        ecs_service(ecs_api, "per-environment", desired=0), environment="sd15"
    )
    async with scaled(start_scheduler, ecs=cfg) as (running, clients):
        await declare_by_registering(clients, "sd15", comfyui_object_info_json())
        await create(clients, TENANT)
        await create(clients, TENANT)
        assert await running.autoscaler.round() == [], "native work is not this service's"
        await create(clients, TENANT, environment="sd15")
        [up] = await running.autoscaler.round()
    assert (up.provider, up.current, up.desired, up.queue_depth) == ("ecs", 0, 3, 1)
    assert desired_count(cfg) == 3


async def test_an_ecs_api_that_refuses_leaves_the_decision_recorded(
    start_scheduler: StartScheduler, ecs_api: str
) -> None:
    missing = EcsConfig(cluster="nowhere", service="none", region=REGION, endpoint_url=ecs_api)
    async with scaled(start_scheduler, ecs=missing) as (running, clients):
        await create(clients, TENANT)
        [decision] = await running.autoscaler.round()
        [listed] = await decisions(clients)
    assert (decision.desired, decision.applied) == (3, False)
    assert listed.note.startswith("ECS UpdateService failed")


@dataclass
class RunpodRest:
    """RunPod's REST API for one endpoint: GET and PATCH /endpoints/{id}."""

    workers_min: int = 0
    patches: list[dict[str, Any]] = field(default_factory=list)

    async def get(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer rpa_key"
        return web.json_response({"id": request.match_info["id"], "workersMin": self.workers_min})

    async def patch(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.patches.append(body)
        self.workers_min = body["workersMin"]
        return web.json_response({"id": request.match_info["id"], **body})


@contextlib.asynccontextmanager
async def runpod_rest(rest: RunpodRest) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v1/endpoints/{id}", rest.get)
    app.router.add_patch("/v1/endpoints/{id}", rest.patch)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def test_runpod_workers_are_set_through_its_rest_api(
    start_scheduler: StartScheduler,
) -> None:
    rest = RunpodRest()
    async with runpod_rest(rest) as rest_url:
        endpoint = RunpodConfig(
            endpoint_url="http://127.0.0.1:1",  # never asked: nothing is dispatched here
            endpoint_id="ep1",
            api_key="rpa_key",
            rest_url=rest_url,
            max_in_flight=8,
        )
        async with scaled(start_scheduler, runpod=endpoint) as (running, clients):
            await create(clients, TENANT)
            [up] = await running.autoscaler.round()
    assert (up.provider, up.current, up.desired, up.applied) == ("runpod", 0, 3, True)
    assert rest.patches == [{"workersMin": 3, "workersMax": 8}]


async def test_without_runpod_credentials_the_decision_is_only_recorded(
    start_scheduler: StartScheduler,
) -> None:
    endpoint = RunpodConfig(endpoint_url="http://127.0.0.1:1", endpoint_id="ep1")
    async with scaled(start_scheduler, runpod=endpoint) as (running, clients):
        await create(clients, TENANT)
        [decision] = await running.autoscaler.round()
        [listed] = await decisions(clients, "runpod")
    assert (decision.desired, decision.applied) == (3, False)
    assert "recorded only" in listed.note
