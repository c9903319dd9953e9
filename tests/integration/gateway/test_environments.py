"""Environments through the gateway, with a real scheduler and models service behind it.

The environment of an execution is the one it names, else its tenant's default, else the
platform's; its workflow is validated against that environment's node catalog (here the real
ComfyUI 0.3.64's, recorded by an executor that registered and left), with ComfyUI's errors.
An unknown environment is INVALID_ARGUMENT on ``environment``; one whose catalog is not known
yet is FAILED_PRECONDITION. A model the environment does not carry is not the gateway's to
refuse: the scheduler resolves it against the tenant's registry."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_status import rpc_status

from comfyfleet.cli.main import main as cli
from comfyfleet.common.environments import object_info_text
from comfyfleet.common.errors import error_info, field_violations
from comfyfleet.common.grpcserver import channel
from comfyfleet.environments.v1 import environments_pb2, environments_pb2_grpc
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.models.v1 import models_pb2, models_pb2_grpc
from comfyfleet.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from comfyfleet.sdk import ApiError, AsyncClient, Settings
from comfyfleet.sdk.requests import object_info_of
from comfyfleet.tenants.v1 import tenants_pb2
from comfyfleet.workflow.validate import COMFYUI_NODE_ERRORS
from services.scheduler.config import Config as SchedulerConfig
from services.scheduler.server import running_scheduler
from tests.integration.gateway.conftest import Gw, Metadata, StartGateway
from tests.integration.models.conftest import model_file
from tests.integration.scheduler.conftest import own_stream, scheduler_config  # noqa: F401
from tests.integration.scheduler.test_models import models_service
from tests.support.paths import comfyui_ref

REF = comfyui_ref()
COMFY = "comfy-sd15"
CARRIED = "tiny-sd15.safetensors"
NATIVE_WORKFLOW = (REF / "workflows" / "r01_invert.json").read_text()
PNG = (REF / "inputs" / "shapes.png").read_bytes()
with gzip.open(REF / "object_info_full.json.gz") as _f:
    FULL_OBJECT_INFO: dict[str, Any] = json.load(_f)


def t01(**changes: Any) -> dict[str, Any]:
    graph: dict[str, Any] = json.loads((REF / "workflows" / "t01_txt2img.json").read_text())
    for node_id, inputs in changes.items():
        graph[node_id]["inputs"].update(inputs)
    return graph


@dataclass
class Stack:
    gw: Gw
    scheduler: scheduler_pb2_grpc.SchedulerServiceStub
    executions: executions_pb2_grpc.ExecutionServiceStub
    environments: environments_pb2_grpc.EnvironmentServiceStub
    models: models_pb2_grpc.ModelServiceStub

    async def register(self, environment: str, object_info: dict[str, Any]) -> None:
        """An executor of ``environment`` registers with its catalog, then leaves."""
        executor_id = f"gone-{environment}"
        await self.scheduler.RegisterExecutor(
            scheduler_pb2.RegisterExecutorRequest(
                executor=scheduler_pb2.Executor(
                    id=executor_id,
                    address="127.0.0.1:1",
                    engine="comfyui",
                    environment=environment,
                ),
                object_info_json=object_info_text(object_info),
            )
        )
        await self.scheduler.DeregisterExecutor(
            scheduler_pb2.DeregisterExecutorRequest(executor_id=executor_id)
        )

    async def submit(
        self, workflow: dict[str, Any] | str, md: Metadata | None = None, **fields: Any
    ) -> executions_pb2.Execution:
        text = workflow if isinstance(workflow, str) else json.dumps(workflow)
        if text == NATIVE_WORKFLOW:
            fields.setdefault("inputs", [executions_pb2.InputFile(name="shapes.png", content=PNG)])
        request = executions_pb2.CreateExecutionRequest(workflow_json=text, **fields)
        return await self.executions.CreateExecution(request, metadata=md or self.gw.admin)

    async def set_default(self, tenant_id: str, environment: str) -> tenants_pb2.Tenant:
        return await self.gw.tenants.UpdateTenant(
            tenants_pb2.UpdateTenantRequest(
                tenant=tenants_pb2.Tenant(id=tenant_id, default_environment=environment),
                update_mask=field_mask_pb2.FieldMask(paths=["default_environment"]),
            ),
            metadata=self.gw.admin,
        )


@pytest.fixture
def start_stack(
    start_gateway: StartGateway,
    scheduler_config: SchedulerConfig,  # noqa: F811
) -> Any:
    @contextlib.asynccontextmanager
    async def start(**gateway: Any) -> AsyncIterator[Stack]:
        async with (
            models_service(scheduler_config) as (models_addr, _),
            running_scheduler(
                dataclasses.replace(scheduler_config, models_addr=models_addr)
            ) as scheduler,
            channel(f"127.0.0.1:{scheduler.port}") as internal,
        ):
            addr = f"127.0.0.1:{scheduler.port}"
            async with start_gateway(scheduler_addr=addr, models_addr=models_addr, **gateway) as gw:
                yield Stack(
                    gw,
                    scheduler_pb2_grpc.SchedulerServiceStub(internal),
                    executions_pb2_grpc.ExecutionServiceStub(gw.channel),
                    environments_pb2_grpc.EnvironmentServiceStub(gw.channel),
                    models_pb2_grpc.ModelServiceStub(gw.channel),
                )

    return start


@pytest.fixture
async def stack(start_stack: Any) -> AsyncIterator[Stack]:
    async with start_stack() as running:
        await running.register(COMFY, FULL_OBJECT_INFO)
        yield running


async def refused(call: Any) -> tuple[grpc.StatusCode, str, dict[str, str], Any]:
    """(code, ErrorInfo reason, {field: description}, the whole status) of a failed call."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None, caught.value.details()
    info = error_info(status)
    violations = {v.field: v.description for v in field_violations(status)}
    return caught.value.code(), info.reason if info else "", violations, status


async def own_tenant(stack: Stack) -> str:
    got = await stack.gw.tenants.GetTenant(
        tenants_pb2.GetTenantRequest(id="-"), metadata=stack.gw.admin
    )
    return got.id


async def test_the_environment_is_the_requests_then_the_tenants_then_the_platforms(
    stack: Stack,
) -> None:
    made = await stack.submit(NATIVE_WORKFLOW)
    assert made.environment == "native"  # the platform default
    made = await stack.submit(t01(), environment=COMFY)
    assert made.environment == COMFY

    tenant_id = await own_tenant(stack)
    updated = await stack.set_default(tenant_id, COMFY)
    assert updated.default_environment == COMFY
    got = await stack.gw.tenants.GetTenant(
        tenants_pb2.GetTenantRequest(id=tenant_id), metadata=stack.gw.admin
    )
    assert got.default_environment == COMFY
    made = await stack.submit(t01())  # refused on native: checked against the default's
    assert made.environment == COMFY
    made = await stack.submit(NATIVE_WORKFLOW, environment="native")
    assert made.environment == "native"
    code, _, _, _ = await refused(stack.submit(t01(), environment="native"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    cleared = await stack.set_default(tenant_id, "")
    assert cleared.default_environment == ""
    assert (await stack.submit(NATIVE_WORKFLOW)).environment == "native"


async def test_the_platform_default_is_configurable(start_stack: Any) -> None:
    async with start_stack(default_environment=COMFY) as stack:
        await stack.register(COMFY, FULL_OBJECT_INFO)
        assert (await stack.submit(t01())).environment == COMFY


async def test_a_ksampler_workflow_is_checked_against_its_environment(stack: Stack) -> None:
    for name in ("t01_txt2img", "t02_img2img", "t03_batch_ancestral"):
        workflow = json.loads((REF / "workflows" / f"{name}.json").read_text())
        fields: dict[str, Any] = {"environment": COMFY}
        if name == "t02_img2img":
            fields["inputs"] = [executions_pb2.InputFile(name="shapes.png", content=PNG)]
        assert (await stack.submit(workflow, **fields)).environment == COMFY

    code, reason, _, status = await refused(stack.submit(t01(), environment="native"))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_WORKFLOW")
    assert "node CheckpointLoaderSimple does not exist" in status.message

    bad = t01()
    bad["10"] = {"class_type": "NoSuchCustomNode", "inputs": {}}
    code, reason, violations, status = await refused(stack.submit(bad, environment=COMFY))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_WORKFLOW")
    assert 'workflow["10"]' in violations
    assert "NoSuchCustomNode does not exist" in violations['workflow["10"]']


async def test_every_problem_of_every_node_comes_back_as_comfyui_gives_it(stack: Stack) -> None:
    bad = t01(**{"3": {"steps": 20000, "sampler_name": "nope", "cfg": "abc"}})
    bad["5"]["inputs"]["width"] = 8
    code, _, violations, status = await refused(stack.submit(bad, environment=COMFY))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations) == {
        'workflow["3"].inputs.steps',
        'workflow["3"].inputs.sampler_name',
        'workflow["3"].inputs.cfg',
        'workflow["5"].inputs.width',
    }
    assert violations['workflow["3"].inputs.steps'] == "Value 20000 bigger than max of 10000: steps"
    info = error_info(status)
    assert info is not None
    node_errors = json.loads(info.metadata[COMFYUI_NODE_ERRORS])
    assert set(node_errors) == {"3", "5"} and node_errors["3"]["class_type"] == "KSampler"
    steps = next(e for e in node_errors["3"]["errors"] if e["extra_info"]["input_name"] == "steps")
    assert steps["extra_info"]["input_config"] == [
        "INT",
        {
            "default": 20,
            "min": 1,
            "max": 10000,
            "tooltip": "The number of steps used in the denoising process.",
        },
    ]


async def test_a_model_the_environment_lacks_is_the_registrys_to_resolve(stack: Stack) -> None:
    mine = t01(**{"4": {"ckpt_name": "mine.safetensors"}})
    code, reason, violations, _ = await refused(stack.submit(mine, environment=COMFY))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MODEL_NOT_REGISTERED")
    assert 'workflow["4"].inputs.ckpt_name' in violations

    upload = [
        models_pb2.UploadModelRequest(
            model=models_pb2.Model(name="mine.safetensors", type=models_pb2.MODEL_TYPE_CHECKPOINT)
        ),
        models_pb2.UploadModelRequest(chunk=model_file(1)),
    ]
    await stack.models.UploadModel(iter(upload), metadata=stack.gw.admin)
    assert (await stack.submit(mine, environment=COMFY)).environment == COMFY

    not_a_model = t01(**{"3": {"sampler_name": "mine.safetensors"}})
    code, reason, violations, _ = await refused(stack.submit(not_a_model, environment=COMFY))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_WORKFLOW")
    assert list(violations) == ['workflow["3"].inputs.sampler_name']


async def test_unknown_and_pending_environments(stack: Stack) -> None:
    code, reason, violations, _ = await refused(stack.submit(t01(), environment="nowhere"))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "ENVIRONMENT_NOT_FOUND")
    assert list(violations) == ["environment"]
    code, _, violations, _ = await refused(stack.submit(t01(), environment="Not A Name"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and list(violations) == ["environment"]

    tenant_id = await own_tenant(stack)
    code, _, violations, _ = await refused(stack.set_default(tenant_id, "nowhere"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations) == ["tenant.default_environment"]

    declared = environments_pb2.Environment(
        name="later", engine="comfyui", comfyui_version="0.3.64"
    )
    await stack.environments.CreateEnvironment(
        environments_pb2.CreateEnvironmentRequest(environment=declared), metadata=stack.gw.admin
    )
    code, reason, _, status = await refused(stack.submit(t01(), environment="later"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ENVIRONMENT_CATALOG_PENDING")
    assert "not known yet" in status.message
    await stack.register("later", FULL_OBJECT_INFO)
    assert (await stack.submit(t01(), environment="later")).environment == "later"


async def test_a_changed_catalog_is_seen_after_the_recheck(start_stack: Any) -> None:
    async with start_stack(catalog_recheck_s=0.0) as stack:
        await stack.register(COMFY, FULL_OBJECT_INFO)
        await stack.submit(t01(), environment=COMFY)
        without = {k: v for k, v in FULL_OBJECT_INFO.items() if k != "KSampler"}
        await stack.register(COMFY, without)
        code, _, _, status = await refused(stack.submit(t01(), environment=COMFY))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "node KSampler does not exist" in status.message


async def test_every_key_reads_environments_and_only_admins_change_them(stack: Stack) -> None:
    tenant = await stack.gw.tenant("readers")
    reader = await stack.gw.key(tenant.id, "executions:write")
    listed = await stack.environments.ListEnvironments(
        environments_pb2.ListEnvironmentsRequest(), metadata=reader
    )
    assert {e.name for e in listed.environments} >= {"native", COMFY}
    env = await stack.environments.GetEnvironment(
        environments_pb2.GetEnvironmentRequest(name=COMFY), metadata=reader
    )
    assert env.catalog_state == environments_pb2.CATALOG_STATE_KNOWN
    assert env.node_type_count == len(FULL_OBJECT_INFO)
    catalog = await stack.environments.GetEnvironmentCatalog(
        environments_pb2.GetEnvironmentCatalogRequest(
            name=COMFY, view=environments_pb2.CATALOG_VIEW_JSON
        ),
        metadata=reader,
    )
    assert json.loads(catalog.object_info_json) == FULL_OBJECT_INFO
    assert catalog.digest == env.catalog_digest

    declared = environments_pb2.Environment(name="mine", engine="native")
    for call in (
        stack.environments.CreateEnvironment(
            environments_pb2.CreateEnvironmentRequest(environment=declared), metadata=reader
        ),
        stack.environments.DeleteEnvironment(
            environments_pb2.DeleteEnvironmentRequest(name=COMFY), metadata=reader
        ),
    ):
        code, _, _, _ = await refused(call)
        assert code == grpc.StatusCode.PERMISSION_DENIED
    created = await stack.environments.CreateEnvironment(
        environments_pb2.CreateEnvironmentRequest(environment=declared, request_id="r-1"),
        metadata=stack.gw.admin,
    )
    assert created.catalog_state == environments_pb2.CATALOG_STATE_PENDING
    await stack.environments.DeleteEnvironment(
        environments_pb2.DeleteEnvironmentRequest(name="mine"), metadata=stack.gw.admin
    )
    code, _, _, _ = await refused(
        stack.environments.GetEnvironment(
            environments_pb2.GetEnvironmentRequest(name="mine"), metadata=reader
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_environments_over_rest(stack: Stack) -> None:
    headers = {"Authorization": stack.gw.admin[0][1]}
    async with aiohttp.ClientSession(stack.gw.rest_url, headers=headers) as http:
        async with http.get("/v1/environments") as response:
            assert response.status == 200
            names = [e["name"] for e in (await response.json())["environments"]]
            assert "native" in names and COMFY in names
        async with http.get(f"/v1/environments/{COMFY}") as response:
            body = await response.json()
            assert body["catalogState"] == "CATALOG_STATE_KNOWN", body
        async with http.get(
            f"/v1/environments/{COMFY}/catalog", params={"view": "CATALOG_VIEW_JSON"}
        ) as response:
            body = await response.json()
            assert json.loads(body["objectInfoJson"]) == FULL_OBJECT_INFO
        async with http.get("/v1/environments/native/catalog") as response:
            body = await response.json()
            assert "KSampler" not in body["objectInfo"] and "SaveImage" in body["objectInfo"]
        async with http.get("/v1/environments/nowhere") as response:
            assert response.status == 404
        submitted = {"workflow": t01(), "environment": COMFY}
        async with http.post("/v1/executions", json=submitted) as response:
            body = await response.json()
            assert response.status == 200, body
            assert body["environment"] == COMFY
        submitted = {"workflow": t01(), "environment": "native"}
        async with http.post("/v1/executions", json=submitted) as response:
            assert response.status == 400
            assert "does not exist" in (await response.json())["message"]


async def test_the_sdk_reads_declares_and_submits_to_environments(stack: Stack) -> None:
    token = stack.gw.admin[0][1].removeprefix("Bearer ")
    settings = Settings(f"127.0.0.1:{stack.gw.gateway.port}", token)
    async with AsyncClient(settings) as client:
        names = [e.name for e in (await client.list_environments()).environments]
        assert "native" in names and COMFY in names
        assert (await client.get_environment(COMFY)).engine == "comfyui"
        catalog = object_info_of(await client.get_environment_catalog(COMFY))
        assert catalog == FULL_OBJECT_INFO  # exact: ints stay ints (KSampler's seed max)
        spec = {"engine": "comfyui", "comfyui_version": "0.3.64", "description": "later"}
        created = await client.create_environment(spec, name="sdk-env", request_id="sdk-1")
        assert created.catalog_state == environments_pb2.CATALOG_STATE_PENDING
        tenant = await client.set_default_environment(COMFY)
        assert tenant.default_environment == COMFY
        assert (await client.submit(t01())).environment == COMFY
        made = await client.submit(NATIVE_WORKFLOW, {"shapes.png": PNG}, environment="native")
        assert made.environment == "native"
        await client.delete_environment("sdk-env")
        with pytest.raises(ApiError) as caught:
            await client.get_environment("sdk-env")
        assert caught.value.code == "NOT_FOUND"


async def test_the_cli_lists_shows_and_declares_environments(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = stack.gw.admin[0][1].removeprefix("Bearer ")
    base = ["--addr", f"127.0.0.1:{stack.gw.gateway.port}", "--api-key", token]

    async def run(*argv: str) -> tuple[int, str, str]:
        # The blocking client in a thread: the gateway serves on this loop.
        code = await asyncio.to_thread(cli, [*base, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await run("environments", "list")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "known" in lines[COMFY] and f"{len(FULL_OBJECT_INFO)} node types" in lines[COMFY]
    code, out, _ = await run("environments", "get", COMFY)
    assert code == 0 and json.loads(out)["engine"] == "comfyui"
    code, out, _ = await run("environments", "catalog", COMFY, "--node", "KSampler")
    assert code == 0 and json.loads(out) == FULL_OBJECT_INFO["KSampler"]
    code, _, err = await run("environments", "catalog", COMFY, "--node", "Nope")
    assert code == 2 and "no node type 'Nope'" in err

    spec = tmp_path / "env.json"
    spec.write_text(
        json.dumps({"name": "cli-env", "engine": "comfyui", "comfyui_version": "0.3.64"})
    )
    code, out, _ = await run("environments", "create", "--spec", str(spec))
    assert code == 0 and json.loads(out)["name"] == "cli-env"
    code, _, err = await run("environments", "get", "nowhere")
    assert code == 2 and "does not exist" in err

    workflow = tmp_path / "t01.json"
    workflow.write_text(json.dumps(t01()))
    code, out, _ = await run("submit", str(workflow), "--environment", COMFY)
    assert code == 0
    made = await stack.executions.GetExecution(
        executions_pb2.GetExecutionRequest(id=out.strip()), metadata=stack.gw.admin
    )
    assert made.environment == COMFY
    code, _, err = await run("submit", str(workflow), "--environment", "native")
    assert code == 2 and "node CheckpointLoaderSimple does not exist" in err
