"""No lost work, proven with processes: an executor killed with SIGKILL in the middle of a
run, and the scheduler killed with SIGKILL while it dispatches. Every execution still ends,
once: one terminal event each in the JetStream stream. An executor killed during every attempt
(as the kernel's OOM killer would) ends the execution FAILED after max_attempts, saying so.

The fleet here is a scheduler and two native CPU executors, each its own process started the
way ``make up`` starts them; work is submitted through the scheduler's ExecutionService as
the gateway submits it, with the tenant's metadata.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from google.rpc import code_pb2

from comfyfleet.common.errors import error_info
from comfyfleet.common.events import decode_event
from comfyfleet.common.grpcserver import channel
from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.devstack.launcher import Launcher, ServiceSpec
from comfyfleet.devstack.process import free_port
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from tests.support import eventually
from tests.support.infra import NatsInfo, PostgresInfo, S3Info
from tests.support.names import (
    unique_bucket_name,
    unique_database_name,
    unique_stream_name,
    unique_subject_prefix,
)

TENANT = "no-lost-work"
STATE = executions_pb2.ExecutionState
TERMINAL = {"execution.succeeded", "execution.failed", "execution.cancelled"}
# Leases and heartbeats short enough that a dead process is noticed within seconds.
SCHEDULER_ENV = {
    "COMFYFLEET_SCHEDULER_LEASE_S": "4",
    "COMFYFLEET_SCHEDULER_HEARTBEAT_INTERVAL_S": "1",
    "COMFYFLEET_SCHEDULER_REAPER_INTERVAL_S": "0.2",
    "COMFYFLEET_SCHEDULER_POLL_INTERVAL_S": "0.2",
    "COMFYFLEET_SCHEDULER_BACKOFF_BASE_S": "0.2",
    "COMFYFLEET_SCHEDULER_BACKOFF_MAX_S": "1",
    "COMFYFLEET_SCHEDULER_SHUTDOWN_GRACE_S": "2",
}


def workflow(color: int, blurs: int) -> str:
    """A CPU workflow that takes about a second per blur, different per color."""
    graph: dict[str, dict[str, object]] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": color},
        }
    }
    previous = "1"
    for n in range(2, 2 + blurs):
        graph[str(n)] = {
            "class_type": "ImageBlur",
            "inputs": {"image": [previous, 0], "blur_radius": 31, "sigma": 5.0},
        }
        previous = str(n)
    graph["99"] = {
        "class_type": "SaveImage",
        "inputs": {"images": [previous, 0], "filename_prefix": f"nlw{color}"},
    }
    return json.dumps(graph)


@dataclass
class Fleet:
    """The scheduler and the executors, each group under its own launcher so that the
    scheduler can be killed and started again on its own."""

    scheduler: Launcher
    executors: Launcher
    env: dict[str, str]
    log_dir: Path

    @property
    def scheduler_addr(self) -> str:
        return self.scheduler.services[0].grpc_addr

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown, no goodbye; then reap it."""
        group = self.scheduler if name == "scheduler" else self.executors
        process = group.processes[name]
        assert process.pid is not None and process.running()
        os.kill(process.pid, signal.SIGKILL)
        assert process.stop(grace_s=10) == -signal.SIGKILL

    def restart_scheduler(self) -> None:
        """A new scheduler process on the same address, database, stream and bucket."""
        self.scheduler = _launcher(self.scheduler.services, self.env, self.log_dir)
        self.scheduler.start_all()


def _launcher(specs: list[ServiceSpec], env: dict[str, str], log_dir: Path) -> Launcher:
    return Launcher(specs, base_env=env, log_dir=log_dir, stop_grace_s=5.0)


def executor_spec(name: str, scheduler: str, work: Path) -> ServiceSpec:
    addr = f"127.0.0.1:{free_port()}"
    return ServiceSpec(
        name,
        addr,
        {
            "COMFYFLEET_SCHEDULER_ADDR": scheduler,
            "COMFYFLEET_EXECUTOR_ADVERTISE_ADDR": addr,
            "COMFYFLEET_EXECUTOR_ID": name,
            "COMFYFLEET_EXECUTOR_DEVICE": "cpu",
            "COMFYFLEET_EXECUTOR_WORK_DIR": str(work / name),
            "COMFYFLEET_EXECUTOR_SHUTDOWN_GRACE_S": "1",
        },
        module="services.executor",
        ready_timeout_s=180.0,
    )


@pytest.fixture
def fleet(
    postgres_server: PostgresInfo,
    nats_server: NatsInfo,
    s3_server: S3Info,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Fleet]:
    hint = request.node.name
    env = {
        "COMFYFLEET_DATABASE_URL": postgres_server.create_database(unique_database_name(hint)),
        "COMFYFLEET_NATS_URL": nats_server.url,
        "COMFYFLEET_NATS_STREAM": unique_stream_name(hint),
        "COMFYFLEET_NATS_SUBJECT_PREFIX": unique_subject_prefix(hint),
        "COMFYFLEET_S3_ENDPOINT": s3_server.endpoint,
        "COMFYFLEET_S3_ACCESS_KEY": s3_server.access_key,
        "COMFYFLEET_S3_SECRET_KEY": s3_server.secret_key,
        "COMFYFLEET_S3_REGION": s3_server.region,
        "COMFYFLEET_S3_BUCKET": s3_server.create_bucket(unique_bucket_name(hint)),
    }
    scheduler = ServiceSpec("scheduler", f"127.0.0.1:{free_port()}", SCHEDULER_ENV)
    executors = [
        executor_spec("executor-a", scheduler.grpc_addr, tmp_path),
        executor_spec("executor-b", scheduler.grpc_addr, tmp_path),
    ]
    log_dir = tmp_path / "logs"
    fleet = Fleet(
        _launcher([scheduler], env, log_dir), _launcher(executors, env, log_dir), env, log_dir
    )
    try:
        fleet.scheduler.start_all()
        fleet.executors.start_all()
        yield fleet
    finally:
        fleet.executors.stop_all()
        fleet.scheduler.stop_all()


async def both_registered(fleet: Fleet) -> None:
    async def registered() -> None:
        async with channel(fleet.scheduler_addr) as ch:
            listed = await scheduler_pb2_grpc.SchedulerServiceStub(ch).ListExecutors(
                scheduler_pb2.ListExecutorsRequest()
            )
        assert sorted(e.id for e in listed.executors) == ["executor-a", "executor-b"]

    await eventually(registered, timeout=60)


async def submit(fleet: Fleet, text: str) -> executions_pb2.Execution:
    async with channel(fleet.scheduler_addr) as ch:
        return await executions_pb2_grpc.ExecutionServiceStub(ch).CreateExecution(
            executions_pb2.CreateExecutionRequest(workflow_json=text, max_attempts=5),
            metadata=tenant_metadata(TENANT),
        )


async def current(fleet: Fleet, execution_id: str) -> executions_pb2.Execution:
    async with channel(fleet.scheduler_addr) as ch:
        return await executions_pb2_grpc.ExecutionServiceStub(ch).GetExecution(
            executions_pb2.GetExecutionRequest(id=execution_id),
            metadata=tenant_metadata(TENANT),
        )


async def all_succeeded(
    fleet: Fleet, ids: list[str], wait_s: float = 120
) -> list[executions_pb2.Execution]:
    async def done() -> list[executions_pb2.Execution]:
        found = [await current(fleet, i) for i in ids]
        states = [STATE.Name(e.state) for e in found]
        assert all(e.state == STATE.EXECUTION_STATE_SUCCEEDED for e in found), states
        return found

    return await eventually(done, timeout=wait_s, interval=0.2)


async def stream_events(fleet: Fleet) -> list[executions_pb2.WorkflowExecutionEvent]:
    """Every event in the fleet's JetStream stream, in stream order."""
    nc = await nats.connect(fleet.env["COMFYFLEET_NATS_URL"])
    try:
        js = nc.jetstream()
        stream = fleet.env["COMFYFLEET_NATS_STREAM"]
        info = await js.stream_info(stream)
        return [
            decode_event((await js.get_msg(stream, seq)).data or b"")
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
    finally:
        await nc.close()


async def one_terminal_event_each(fleet: Fleet, ids: list[str]) -> None:
    """The relay may lag the database a little: wait until every execution's terminal
    event is published, then check that none has two."""

    async def published() -> None:
        events = await stream_events(fleet)
        ids_seen = Counter(e.event_id for e in events)
        assert max(ids_seen.values()) == 1, "an event was published twice"
        terminal = Counter(e.execution_id for e in events if e.event_type in TERMINAL)
        assert {i: terminal[i] for i in ids} == dict.fromkeys(ids, 1)

    await eventually(published, timeout=30, interval=0.2)


async def test_an_executor_killed_mid_run_is_retried_elsewhere_and_ends_once(
    fleet: Fleet,
) -> None:
    await both_registered(fleet)
    execution = await submit(fleet, workflow(color=1, blurs=4))

    async def running() -> executions_pb2.Execution:
        found = await current(fleet, execution.id)
        assert found.state == STATE.EXECUTION_STATE_RUNNING and found.progress.nodes_done >= 1
        return found

    victim = (await eventually(running, timeout=60, interval=0.05)).executor_id
    fleet.kill(victim)

    [done] = await all_succeeded(fleet, [execution.id])
    survivor = ({"executor-a", "executor-b"} - {victim}).pop()
    assert (done.attempt, done.executor_id) == (2, survivor)
    await one_terminal_event_each(fleet, [execution.id])
    events = [e for e in await stream_events(fleet) if e.execution_id == execution.id]
    [retrying] = [e for e in events if e.event_type == "execution.retrying"]
    assert (retrying.attempt, retrying.executor_id) == (1, victim)


async def test_a_scheduler_killed_mid_dispatch_is_restarted_and_finishes_everything(
    fleet: Fleet,
) -> None:
    await both_registered(fleet)
    ids = [(await submit(fleet, workflow(color=10 + n, blurs=1))).id for n in range(8)]

    async def dispatching() -> None:
        states = Counter([STATE.Name((await current(fleet, i)).state) for i in ids])
        in_flight = states["EXECUTION_STATE_DISPATCHED"] + states["EXECUTION_STATE_RUNNING"]
        assert in_flight >= 1 and states["EXECUTION_STATE_QUEUED"] >= 1, states

    await eventually(dispatching, timeout=60, interval=0.05)
    fleet.kill("scheduler")
    fleet.restart_scheduler()

    finished = await all_succeeded(fleet, ids, wait_s=180)
    assert len({e.id for e in finished}) == len(ids)
    await one_terminal_event_each(fleet, ids)


async def running_attempt(fleet: Fleet, execution_id: str, attempt: int) -> str:
    """The executor running ``attempt`` once a node of it finished."""

    async def running() -> str:
        found = await current(fleet, execution_id)
        assert found.state == STATE.EXECUTION_STATE_RUNNING, STATE.Name(found.state)
        assert found.attempt == attempt and found.progress.nodes_done >= 1
        return found.executor_id

    return await eventually(running, timeout=90, interval=0.05)


async def test_an_executor_killed_during_every_attempt_ends_failed_after_max_attempts(
    fleet: Fleet,
) -> None:
    await both_registered(fleet)
    async with channel(fleet.scheduler_addr) as ch:
        execution = await executions_pb2_grpc.ExecutionServiceStub(ch).CreateExecution(
            executions_pb2.CreateExecutionRequest(
                workflow_json=workflow(color=7, blurs=6), max_attempts=2
            ),
            metadata=tenant_metadata(TENANT),
        )

    first = await running_attempt(fleet, execution.id, 1)
    fleet.kill(first)
    second = await running_attempt(fleet, execution.id, 2)
    fleet.kill(second)

    async def failed() -> executions_pb2.Execution:
        found = await current(fleet, execution.id)
        assert found.state == STATE.EXECUTION_STATE_FAILED, STATE.Name(found.state)
        return found

    done = await eventually(failed, timeout=60, interval=0.1)
    assert {first, second} == {"executor-a", "executor-b"}
    assert done.attempt == 2
    assert done.error.code == code_pb2.UNAVAILABLE
    assert done.error.message.startswith(
        "the executor died during the attempt 2 times (last: connection lost):"
        f" the connection to executor {second} was lost during the attempt"
    ), done.error.message
    info = error_info(done.error)
    assert info is not None and info.reason == "EXECUTOR_DIED"
    await one_terminal_event_each(fleet, [execution.id])
    events = [e for e in await stream_events(fleet) if e.execution_id == execution.id]
    assert [e.attempt for e in events if e.event_type == "execution.retrying"] == [1]
