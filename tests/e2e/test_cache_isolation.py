"""Issue 11 through the platform's processes: tenants whose executions run on one executor
(one node cache, one output folder) never get back a file of another tenant's execution."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.sdk import AsyncClient, Settings
from tests.e2e.conftest import Platform
from tests.e2e.test_first_workflow import fetch, new_tenant_key
from tests.support.tenant_leak import (
    assert_no_trace_of_a,
    png_prompt,
    tenant_a_workflow,
    tenant_b_workflow,
)


async def output_of(platform: Platform, key: str, workflow: dict[str, Any]) -> bytes:
    """Submits ``workflow`` as the key's tenant, waits for it and returns its one file."""
    async with AsyncClient(Settings(platform.addrs.gateway, key)) as client:
        execution = await client.submit(json.dumps(workflow))
        done = await client.wait(execution.id)
    assert done.state == executions_pb2.EXECUTION_STATE_SUCCEEDED, done.error
    [output] = done.outputs
    return await asyncio.to_thread(fetch, output.url)


async def test_b_never_gets_the_file_a_cached(platform: Platform) -> None:
    a, b = await new_tenant_key(platform, "leak-a"), await new_tenant_key(platform, "leak-b")

    mine = await output_of(platform, a, tenant_a_workflow())
    theirs = await output_of(platform, b, tenant_b_workflow())

    assert set(png_prompt(mine)) == {"1", "3", "99"}
    assert_no_trace_of_a(theirs)
    assert set(png_prompt(theirs)) == {"1", "3"}


async def test_tenants_racing_alike_graphs_get_only_their_own(platform: Platform) -> None:
    keys = [await new_tenant_key(platform, f"race-{n}") for n in range(2)]
    # The same graph, but for a node feeding nothing that holds each tenant's own secret.
    graphs = [tenant_a_workflow(color=0x445566) for _ in keys]
    for n, graph in enumerate(graphs):
        graph["99"]["inputs"]["value"] = f"secret of tenant {n}"

    files = await asyncio.gather(
        *(output_of(platform, k, g) for k, g in zip(keys, graphs, strict=True))
    )

    for n, data in enumerate(files):
        assert png_prompt(data)["99"]["inputs"]["value"] == f"secret of tenant {n}"
        assert f"secret of tenant {1 - n}".encode() not in data
