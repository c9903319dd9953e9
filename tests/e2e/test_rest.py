"""The same submit/get/cancel over REST, transcoded from the protos' annotations."""

from __future__ import annotations

import base64
import json

import aiohttp

from tests.e2e.conftest import Platform
from tests.support import eventually
from tests.support.paths import comfyui_ref

REF = comfyui_ref()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_submit_get_and_cancel_over_rest(platform: Platform) -> None:
    workflow = json.loads((REF / "workflows" / "r01_invert.json").read_text())
    shapes = base64.b64encode((REF / "inputs" / "shapes.png").read_bytes()).decode()
    body = {"workflow": workflow, "inputs": [{"name": "shapes.png", "content": shapes}]}
    async with aiohttp.ClientSession(platform.rest_url, headers=auth(platform.admin_key)) as http:
        async with http.post("/v1/executions", json=body) as response:
            assert response.status == 200, await response.text()
            created = await response.json()
        assert created["state"] == "EXECUTION_STATE_QUEUED"

        async def succeeded() -> dict[str, object]:
            async with http.get(f"/v1/executions/{created['id']}") as response:
                assert response.status == 200
                got = await response.json()
            assert got["state"] == "EXECUTION_STATE_SUCCEEDED", got
            return dict(got)

        got = await eventually(succeeded, timeout=60)
        # The stored workflow comes back as submitted: links stay ["1", 0], never ["1", 0.0].
        assert got["workflow"] == workflow
        outputs = got["outputs"]
        assert isinstance(outputs, list) and outputs[0]["filename"].endswith(".png")

        # Cancelling a finished execution changes nothing and is not an error.
        async with http.post(f"/v1/executions/{created['id']}:cancel", json={}) as response:
            assert response.status == 200
            assert (await response.json())["state"] == "EXECUTION_STATE_SUCCEEDED"


async def test_bad_workflow_is_400_with_status_and_node_errors(platform: Platform) -> None:
    workflow = json.loads((REF / "workflows" / "invalid_wrong_value_type.json").read_text())
    async with (
        aiohttp.ClientSession(platform.rest_url, headers=auth(platform.admin_key)) as http,
        http.post("/v1/executions", json={"workflow": workflow}) as response,
    ):
        assert response.status == 400
        status = await response.json()
    assert status["code"] == 3
    types = {d["@type"] for d in status["details"]}
    assert "type.googleapis.com/google.rpc.BadRequest" in types
    assert "4" in status["node_errors"]
    assert status["node_errors"]["4"]["errors"][0]["type"] == "invalid_input_type"


async def test_malformed_json_is_400(platform: Platform) -> None:
    async with (
        aiohttp.ClientSession(platform.rest_url, headers=auth(platform.admin_key)) as http,
        http.post("/v1/executions", data=b"{nope") as response,
    ):
        assert response.status == 400
        assert (await response.json())["code"] == 3


async def test_no_key_is_401_and_unknown_execution_404(platform: Platform) -> None:
    async with aiohttp.ClientSession(platform.rest_url) as http:
        async with http.get("/v1/executions/exe_missing") as response:
            assert response.status == 401
            assert (await response.json())["code"] == 16
        async with http.get(
            "/v1/executions/exe_missing", headers=auth(platform.admin_key)
        ) as response:
            assert response.status == 404
            assert (await response.json())["code"] == 5
