"""Environments in the scheduler: declared by admins (EnvironmentService) or by the executors
that register with them, each with the node catalog its executors report; executions name
one, and only that environment's executors take them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from comfyfleet.common.environments import object_info_text
from comfyfleet.common.errors import error_info, field_violations, from_rpc_error
from comfyfleet.environments.v1 import environments_pb2
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2
from comfyfleet.workflow.catalog import NATIVE_CATALOG
from services.executor.comfyui import ComfyUISettings
from services.executor.config import Config as ExecutorConfig
from services.executor.server import running_executor
from services.scheduler.providers.runpod import RunpodConfig
from tests.integration.scheduler.conftest import Clients, StartScheduler, clients_of
from tests.integration.scheduler.helpers import (
    STATE,
    comfyui_object_info_json,
    create,
    declare_by_registering,
    get,
    wait_for_state,
)
from tests.integration.scheduler.runpod_endpoint import sdk_endpoint
from tests.integration.scheduler.scripted_executor import scripted_executor, succeed
from tests.support import fake_comfyui
from tests.support.eventually import eventually
from tests.support.paths import comfyui_ref

TENANT = "acme"
PNG = b"\x89PNG"
CATALOG = environments_pb2.CatalogState
SD15 = environments_pb2.Environment(
    name="sd15",
    engine="comfyui",
    comfyui_version="0.3.64",
    custom_nodes=[
        environments_pb2.CustomNodePackage(
            name="comfyfleet-test-nodes", source="https://example.com/nodes.git", revision="abc1"
        )
    ],
    python_packages=["numpy<3"],
    apt_packages=["libgl1"],
    models=[
        environments_pb2.EnvironmentModel(
            folder="checkpoints", name="tiny-sd15.safetensors", sha256="8e" * 32
        )
    ],
    description="SD1.5 on ComfyUI",
)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def without(text: str, node_type: str) -> str:
    info = json.loads(text)
    del info[node_type]
    return object_info_text(info)


async def register(
    clients: Clients,
    executor_id: str,
    *,
    environment: str = "",
    engine: str = "comfyui",
    declared: environments_pb2.Environment | None = None,
    object_info_json: str = "",
) -> None:
    await clients.scheduler.RegisterExecutor(
        scheduler_pb2.RegisterExecutorRequest(
            executor=scheduler_pb2.Executor(
                id=executor_id, address="127.0.0.1:1", engine=engine, environment=environment
            ),
            environment=declared,
            object_info_json=object_info_json,
        )
    )


async def environment(clients: Clients, name: str) -> environments_pb2.Environment:
    return await clients.environments.GetEnvironment(
        environments_pb2.GetEnvironmentRequest(name=name)
    )


async def known(clients: Clients, name: str) -> environments_pb2.Environment:
    """The environment, once it exists with a known catalog."""
    try:
        found = await environment(clients, name)
    except grpc.aio.AioRpcError as err:
        raise AssertionError(f"{name}: {err.code()}") from None
    assert found.catalog_state == CATALOG.CATALOG_STATE_KNOWN
    return found


async def catalog(
    clients: Clients, name: str, view: int = environments_pb2.CATALOG_VIEW_UNSPECIFIED
) -> environments_pb2.EnvironmentCatalog:
    return await clients.environments.GetEnvironmentCatalog(
        environments_pb2.GetEnvironmentCatalogRequest(name=name, view=view)  # type: ignore[arg-type]
    )


async def declare(
    clients: Clients, env: environments_pb2.Environment, request_id: str = ""
) -> environments_pb2.Environment:
    return await clients.environments.CreateEnvironment(
        environments_pb2.CreateEnvironmentRequest(environment=env, request_id=request_id)
    )


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def violations(err: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in field_violations(from_rpc_error(err).status)]


def reason(err: grpc.aio.AioRpcError) -> str:
    info = error_info(from_rpc_error(err).status)
    assert info is not None
    return info.reason


# ---- declared and catalogued by registering executors ----------------------------------------


async def test_an_executor_declares_its_environment_with_its_catalog(clients: Clients) -> None:
    text = comfyui_object_info_json()
    await register(clients, "ex-1", environment="sd15", declared=SD15, object_info_json=text)

    found = await environment(clients, "sd15")
    as_json = await catalog(clients, "sd15", environments_pb2.CATALOG_VIEW_JSON)
    as_struct = await catalog(clients, "sd15")

    assert (found.engine, found.comfyui_version, found.description) == (
        "comfyui",
        "0.3.64",
        "SD1.5 on ComfyUI",
    )
    assert list(found.custom_nodes) == list(SD15.custom_nodes)
    assert list(found.models) == list(SD15.models)
    assert (list(found.python_packages), list(found.apt_packages)) == (["numpy<3"], ["libgl1"])
    assert found.catalog_state == CATALOG.CATALOG_STATE_KNOWN
    assert (found.node_type_count, found.catalog_digest) == (478, digest(text))
    assert found.executor_count == 1
    assert found.HasField("catalog_update_time") and found.HasField("create_time")
    assert as_json.object_info_json == text, "the engine's answer, byte for byte"
    assert (as_json.digest, as_struct.digest) == (digest(text), digest(text))
    assert not as_json.HasField("object_info")
    assert len(as_struct.object_info.fields) == 478
    ckpt = as_struct.object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    assert list(ckpt[0]) == ["tiny-sd15.safetensors"]


async def test_a_changed_catalog_is_recorded_and_an_unchanged_one_left_alone(
    clients: Clients,
) -> None:
    first = comfyui_object_info_json()
    await register(clients, "ex-1", environment="sd15", declared=SD15, object_info_json=first)
    before = await environment(clients, "sd15")
    await register(clients, "ex-1", environment="sd15", declared=SD15, object_info_json=first)
    same = await environment(clients, "sd15")

    # Another build of the environment: one node type fewer, and another spec, which does not
    # replace the declared one.
    other_spec = environments_pb2.Environment(name="sd15", engine="comfyui", description="v2")
    second = without(first, "LoraLoader")
    await register(
        clients, "ex-2", environment="sd15", declared=other_spec, object_info_json=second
    )
    after = await environment(clients, "sd15")
    as_json = await catalog(clients, "sd15", environments_pb2.CATALOG_VIEW_JSON)

    assert same.catalog_update_time == before.catalog_update_time, "unchanged: not rewritten"
    assert (after.catalog_digest, after.node_type_count) == (digest(second), 477)
    assert after.catalog_digest != before.catalog_digest
    assert after.catalog_update_time.ToDatetime() > before.catalog_update_time.ToDatetime()
    assert as_json.object_info_json == second
    assert after.description == "SD1.5 on ComfyUI", "the first declaration's spec stays"
    assert after.executor_count == 2


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"environment": "sd15", "object_info_json": "{not json"}, "object_info_json", "INVALID"),
        ({"environment": "sd15", "object_info_json": "[1, 2]"}, "object_info_json", "INVALID"),
        (
            {"environment": "sd15", "object_info_json": '{"KSampler": 3}'},
            "object_info_json",
            "INVALID",
        ),
        ({"environment": ""}, "executor.environment", "INVALID"),
        ({"environment": "SD 1.5"}, "executor.environment", "INVALID"),
        ({"environment": "sd15", "engine": "tensorflow"}, "executor.engine", "INVALID"),
    ],
)
async def test_a_bad_registration_is_refused_and_changes_nothing(
    clients: Clients, fields: dict[str, str], field: str, code: str
) -> None:
    err = await refused(register(clients, "ex-bad", **fields))  # type: ignore[arg-type]

    listed = await clients.scheduler.ListExecutors(scheduler_pb2.ListExecutorsRequest())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(err)
    assert list(listed.executors) == []
    missing = await refused(environment(clients, "sd15"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_an_executor_of_another_engine_than_its_environments_is_refused(
    clients: Clients,
) -> None:
    await declare(clients, environments_pb2.Environment(name="plain", engine="native"))

    err = await refused(register(clients, "ex-1", environment="plain", engine="comfyui"))

    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(err) == "ENVIRONMENT_ENGINE_MISMATCH"


async def test_an_executor_that_names_no_environment_runs_native_work(clients: Clients) -> None:
    """Executors from before environments: native, as all work was then."""
    async with scripted_executor(clients.address, "ex-old", succeed(("2", "a.png", PNG))) as ex:
        [listed] = (
            await clients.scheduler.ListExecutors(scheduler_pb2.ListExecutorsRequest())
        ).executors
        execution = await create(clients, TENANT)
        await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
    assert listed.environment == "native"
    assert ex.servicer.attempts() == [(execution.id, 1)]


async def test_native_is_known_before_any_executor_registers(clients: Clients) -> None:
    native = await environment(clients, "native")
    text = object_info_text(NATIVE_CATALOG.object_info())

    assert native.engine == "native"
    assert native.catalog_state == CATALOG.CATALOG_STATE_KNOWN
    assert (native.catalog_digest, native.node_type_count) == (digest(text), len(NATIVE_CATALOG))
    assert native.executor_count == 0


async def test_a_comfyui_executor_registers_its_environment_and_engines_catalog(
    clients: Clients, tmp_path: Path
) -> None:
    """The executor process's own registration: COMFYFLEET_ENVIRONMENT, its spec, and the
    object_info its ComfyUI answered."""
    async with fake_comfyui.running_fake(tmp_path / "comfy") as comfy:
        cfg = ExecutorConfig(
            grpc_addr="127.0.0.1:0",
            scheduler_addr=clients.address,
            executor_id="ex-comfy",
            device="cpu",
            work_dir=tmp_path / "executor",
            register_retry_s=0.1,
            engine="comfyui",
            comfyui=ComfyUISettings(url=comfy.url, startup_timeout_s=20),
            environment="sd15",
            environment_spec=SD15,
        )
        async with running_executor(cfg):

            async def registered() -> environments_pb2.Environment:
                found = await known(clients, "sd15")
                assert found.executor_count == 1
                return found

            found = await eventually(registered, timeout=20)
            as_json = await catalog(clients, "sd15", environments_pb2.CATALOG_VIEW_JSON)
    expected = object_info_text(fake_comfyui.reference.object_info())
    assert as_json.object_info_json == expected
    assert found.catalog_digest == digest(expected)
    assert list(found.custom_nodes) == list(SD15.custom_nodes)


# ---- the EnvironmentService -------------------------------------------------------------------


async def test_a_declared_environment_is_pending_until_an_executor_reports_its_catalog(
    clients: Clients,
) -> None:
    declared = await declare(clients, SD15)
    pending = await refused(catalog(clients, "sd15"))
    not_yet = await refused(create(clients, TENANT, environment="sd15"))
    await register(clients, "ex-1", environment="sd15", object_info_json=comfyui_object_info_json())
    known = await environment(clients, "sd15")

    assert declared.catalog_state == CATALOG.CATALOG_STATE_PENDING
    assert (declared.node_type_count, declared.catalog_digest) == (0, "")
    assert not declared.HasField("catalog_update_time")
    assert pending.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no executor of it has registered" in (pending.details() or "")
    assert not_yet.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(not_yet) == "ENVIRONMENT_CATALOG_PENDING"
    assert known.catalog_state == CATALOG.CATALOG_STATE_KNOWN
    listed = await clients.executions.ListExecutions(
        executions_pb2.ListExecutionsRequest(), metadata=clients.as_tenant(TENANT)
    )
    assert list(listed.executions) == [], "the refused submission stored nothing"


async def test_create_is_idempotent_and_refuses_another_spec_under_a_taken_name(
    clients: Clients,
) -> None:
    first = await declare(clients, SD15, request_id="r-1")
    retried = await declare(clients, SD15, request_id="r-1")
    same_spec = await declare(clients, SD15)
    other = environments_pb2.Environment()
    other.CopyFrom(SD15)
    other.comfyui_version = "0.3.65"
    taken = await refused(declare(clients, other))
    reused = await refused(
        declare(clients, environments_pb2.Environment(name="x", engine="native"), "r-1")
    )

    assert retried == first and same_spec == first
    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(reused) == ["request_id"]


@pytest.mark.parametrize(
    ("env", "fields"),
    [
        (environments_pb2.Environment(name="", engine="native"), ["environment.name"]),
        (environments_pb2.Environment(name="Big_Name", engine="native"), ["environment.name"]),
        (environments_pb2.Environment(name="-lead", engine="native"), ["environment.name"]),
        (environments_pb2.Environment(name="x" * 64, engine="native"), ["environment.name"]),
        (environments_pb2.Environment(name="ok", engine="docker"), ["environment.engine"]),
        (
            environments_pb2.Environment(name="ok", engine="native", comfyui_version="0.3.64"),
            ["environment.engine"],
        ),
        (
            environments_pb2.Environment(
                name="ok",
                engine="comfyui",
                custom_nodes=[environments_pb2.CustomNodePackage(name="../up")],
                models=[environments_pb2.EnvironmentModel(name="a.safetensors", sha256="xyz")],
            ),
            [
                "environment.custom_nodes[0].name",
                "environment.custom_nodes[0].source",
                "environment.models[0].folder",
                "environment.models[0].sha256",
            ],
        ),
    ],
)
async def test_a_bad_environment_is_invalid_naming_its_fields(
    clients: Clients, env: environments_pb2.Environment, fields: list[str]
) -> None:
    err = await refused(declare(clients, env))

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err) == fields


async def test_unknown_environments_are_not_found(clients: Clients) -> None:
    calls = [
        environment(clients, "nowhere"),
        catalog(clients, "nowhere"),
        clients.environments.DeleteEnvironment(
            environments_pb2.DeleteEnvironmentRequest(name="nowhere")
        ),
    ]
    for call in calls:
        err = await refused(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert reason(err) == "ENVIRONMENT_NOT_FOUND"
    bad = await refused(environment(clients, "No Such"))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(bad) == ["name"]


async def test_environments_are_listed_by_name_a_page_at_a_time(clients: Clients) -> None:
    for name in ("c-env", "a-env", "b-env"):
        await declare(clients, environments_pb2.Environment(name=name, engine="comfyui"))
    names: list[str] = []
    token = ""
    while True:
        page = await clients.environments.ListEnvironments(
            environments_pb2.ListEnvironmentsRequest(page_size=2, page_token=token)
        )
        assert len(page.environments) <= 2
        names += [e.name for e in page.environments]
        token = page.next_page_token
        if not token:
            break
    bad = await refused(
        clients.environments.ListEnvironments(
            environments_pb2.ListEnvironmentsRequest(page_token="garbage")
        )
    )
    assert names == ["a-env", "b-env", "c-env", "native"]
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_environment_in_use_is_not_deleted(clients: Clients) -> None:
    await declare_by_registering(clients, "sd15", comfyui_object_info_json())
    queued = await create(clients, TENANT, environment="sd15")
    delete = environments_pb2.DeleteEnvironmentRequest(name="sd15")
    in_use = await refused(clients.environments.DeleteEnvironment(delete))
    await clients.executions.CancelExecution(
        executions_pb2.CancelExecutionRequest(id=queued.id), metadata=clients.as_tenant(TENANT)
    )
    await clients.environments.DeleteEnvironment(delete)
    gone = await refused(environment(clients, "sd15"))
    submit = await refused(create(clients, TENANT, environment="sd15"))

    assert in_use.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(in_use) == "ENVIRONMENT_IN_USE"
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    assert submit.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(submit) == ["environment"]
    cancelled = await get(clients, TENANT, queued.id)
    assert cancelled.environment == "sd15", "its history keeps the name"


# ---- executions and routing -------------------------------------------------------------------


async def test_an_execution_runs_in_the_environment_it_names_or_the_default(
    start_scheduler: StartScheduler,
) -> None:
    async with (
        start_scheduler(default_environment="sd15") as running,
        clients_of(running) as clients,
    ):
        unknown = await refused(create(clients, TENANT))
        invalid = await refused(create(clients, TENANT, environment="Not Valid"))
        await declare_by_registering(clients, "sd15", comfyui_object_info_json())
        by_default = await create(clients, TENANT)
        named = await create(clients, TENANT, environment="native")
        reused = await refused(_reuse(clients))
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(unknown) == ["environment"]
    assert reason(unknown) == "ENVIRONMENT_NOT_FOUND"
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(invalid) == ["environment"]
    assert (by_default.environment, named.environment) == ("sd15", "native")
    assert reason(reused) == "REQUEST_ID_REUSED"


async def _reuse(clients: Clients) -> executions_pb2.Execution:
    """The same request_id again for another environment: a different request."""
    await create(clients, TENANT, environment="native", request_id="k")
    return await create(clients, TENANT, environment="sd15", request_id="k")


async def test_an_empty_pool_never_blocks_another_environments_work(clients: Clients) -> None:
    await declare_by_registering(clients, "sd15", comfyui_object_info_json())
    # The comfyui environment's work is first in line, and more urgent.
    stuck = [await create(clients, TENANT, environment="sd15", priority=50) for _ in range(5)]
    natives = [await create(clients, TENANT) for _ in range(3)]
    async with scripted_executor(
        clients.address, "ex-native", succeed(("2", "a.png", PNG)), slots=2
    ) as native:
        for execution in natives:
            await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
        stats = await clients.scheduler.GetQueueStats(scheduler_pb2.GetQueueStatsRequest())
        async with scripted_executor(
            clients.address,
            "ex-sd15",
            succeed(("2", "a.png", PNG)),
            slots=2,
            environment="sd15",
            engine="comfyui",
            object_info_json=comfyui_object_info_json(),
        ) as comfy:
            for execution in stuck:
                await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
    assert sorted(e for e, _ in native.servicer.attempts()) == sorted(e.id for e in natives)
    assert sorted(e for e, _ in comfy.servicer.attempts()) == sorted(e.id for e in stuck)
    by_env = {e.environment: e for e in stats.environments}
    assert (by_env["sd15"].depth, by_env["sd15"].executors) == (5, 0)
    assert by_env["sd15"].oldest_wait_seconds > 0
    assert (by_env["native"].depth, by_env["native"].executors) == (0, 1)
    assert {(s.environment, s.priority, s.depth) for s in stats.slices} == {("sd15", 50, 5)}
    assert stats.depth == 5


async def test_each_executor_takes_only_its_environments_work(clients: Clients) -> None:
    await declare_by_registering(clients, "sd15", comfyui_object_info_json())
    async with (
        scripted_executor(clients.address, "ex-native", succeed(("2", "a.png", PNG))) as native,
        scripted_executor(
            clients.address,
            "ex-sd15",
            succeed(("2", "a.png", PNG)),
            environment="sd15",
            engine="comfyui",
        ) as comfy,
    ):
        submitted = [
            await create(clients, TENANT, environment=env)
            for env in ("sd15", "native", "sd15", "native", "native", "sd15")
        ]
        done = await asyncio.gather(
            *(
                wait_for_state(clients, TENANT, e.id, STATE.EXECUTION_STATE_SUCCEEDED)
                for e in submitted
            )
        )
    ran = {e: "native" for e, _ in native.servicer.attempts()}
    ran |= {e: "sd15" for e, _ in comfy.servicer.attempts()}
    assert ran == {e.id: e.environment for e in submitted}
    assert all(d.executor_id == f"ex-{d.environment}" for d in done)


@contextlib.asynccontextmanager
async def runpod_native_rp(
    start_scheduler: StartScheduler, tmp_path: Path
) -> AsyncIterator[Clients]:
    """A RunPod endpoint whose workers run the environment "native-rp" (the native engine
    under another name), and a scheduler sending that environment's work there."""
    extra = {"COMFYFLEET_ENVIRONMENT": "native-rp"}
    async with sdk_endpoint(tmp_path, extra) as url:
        endpoint = RunpodConfig(
            endpoint_url=url,
            environment="native-rp",
            poll_interval_s=0.05,
            stream_timeout_s=60,
            describe_interval_s=0.2,
        )
        async with start_scheduler(runpod=endpoint) as running, clients_of(running) as clients:
            yield clients


async def test_a_runpod_endpoint_describes_the_environment_its_workers_run(
    start_scheduler: StartScheduler, tmp_path: Path
) -> None:
    """Its workers cannot call the scheduler: while the environment's catalog is unknown,
    the scheduler asks them with a describe job, then sends that environment's work there."""
    async with runpod_native_rp(start_scheduler, tmp_path) as clients:
        found = await eventually(lambda: known(clients, "native-rp"), timeout=60)
        execution = await create(
            clients,
            TENANT,
            environment="native-rp",
            workflow_json=(comfyui_ref() / "workflows" / "a_tiny.json").read_text(),
        )
        done = await wait_for_state(
            clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED, wait_s=60
        )
    native_text = object_info_text(NATIVE_CATALOG.object_info())
    assert (found.engine, found.catalog_digest) == ("native", digest(native_text))
    assert found.executor_count == 1, "the endpoint, registered by the scheduler"
    assert done.provider == "runpod"
