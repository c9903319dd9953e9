"""The fake ComfyUI against the captures: same messages, same order, same /history bodies."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.fake_comfyui import RunningFake, running_fake
from tests.support.fake_comfyui.reference import traces, workflow
from tests.support.paths import comfyui_ref

_COUNTER = re.compile(r"_\d{5}_\.")


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[RunningFake]:
    async with running_fake(tmp_path / "comfyui") as running:
        yield running


def normalised(value: Any, prompt_id: str, client_id: str) -> Any:
    """Ids, timestamps, queue numbers and file counters made comparable between runs."""
    text = json.dumps(value).replace(prompt_id, "<prompt>").replace(client_id, "<client>")
    out = json.loads(_COUNTER.sub("_<n>_.", text))

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: 0 if k == "timestamp" else walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(out)


async def run_prompt(
    url: str, prompt: dict[str, Any]
) -> tuple[list[Any], dict[str, Any], str, str]:
    """Submits over a socket of its own; (messages, history entry, prompt id, client id)."""
    client_id = str(uuid.uuid4())
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{url}/ws", params={"clientId": client_id}) as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello == {
                "type": "status",
                "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id},
            }
            async with http.post(
                f"{url}/prompt", json={"prompt": prompt, "client_id": client_id}
            ) as r:
                assert r.status == 200, await r.text()
                prompt_id = (await r.json())["prompt_id"]
            messages = []
            while True:
                message = await ws.receive_json(timeout=5)
                messages.append(message)
                if message["type"] == "executing" and message["data"]["node"] is None:
                    break
        async with http.get(f"{url}/history/{prompt_id}") as r:
            history = await r.json()
    return messages, history[prompt_id], prompt_id, client_id


def captured(name: str) -> tuple[list[Any], dict[str, Any]]:
    trace = traces()[name]
    messages = [m["msg"] for m in trace["messages"]]
    entry = next(iter(trace["history"].values()))
    client_id = entry["prompt"][3]["client_id"]
    return (
        normalised(messages, trace["prompt_id"], client_id),
        normalised(entry, trace["prompt_id"], client_id),
    )


def comparable_history(entry: dict[str, Any]) -> dict[str, Any]:
    entry = copy.deepcopy(entry)
    entry["prompt"][0] = 0  # the queue number depends on the server's past
    return entry


@pytest.mark.parametrize(
    "name",
    ["b_fresh", "c_latent_SaveLatent", "runtime_error_LatentConcat_shape_mismatch"],
)
async def test_a_captured_run_is_replayed_message_for_message(fake: RunningFake, name: str) -> None:
    messages, entry, prompt_id, client_id = await run_prompt(fake.url, traces()[name]["prompt"])

    want_messages, want_entry = captured(name)
    assert normalised(messages, prompt_id, client_id) == want_messages
    got_entry = normalised(entry, prompt_id, client_id)
    assert comparable_history(got_entry) == comparable_history(want_entry)


async def test_an_identical_resubmission_is_answered_from_the_cache(fake: RunningFake) -> None:
    prompt = traces()["b_fresh"]["prompt"]
    first, _, _, _ = await run_prompt(fake.url, prompt)
    messages, entry, prompt_id, client_id = await run_prompt(fake.url, prompt)

    want_messages, want_entry = captured("b_identical_resubmit_fully_cached")
    assert normalised(messages, prompt_id, client_id) == want_messages
    assert comparable_history(normalised(entry, prompt_id, client_id)) == comparable_history(
        want_entry
    )
    # The cached output names the files of the run that filled the cache.
    fresh_files = next(m for m in first if m["type"] == "executed")["data"]["output"]
    assert next(m for m in messages if m["type"] == "executed")["data"]["output"] == fresh_files


@pytest.mark.parametrize(
    "name",
    [
        "invalid_unknown_class",
        "invalid_missing_class_type",
        "invalid_missing_link",
        "invalid_wrong_value_type",
        "invalid_wrong_link_type",
        "invalid_multi_validation",
        "invalid_no_outputs",
    ],
)
async def test_a_captured_bad_workflow_gets_the_captured_answer(
    fake: RunningFake, name: str
) -> None:
    answers = json.loads((comfyui_ref() / "invalid_responses.json").read_text())
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{fake.url}/prompt", json={"prompt": workflow(name)}) as response,
    ):
        assert response.status == answers[f"{name}.json"]["status"] == 400
        assert await response.json() == answers[f"{name}.json"]["body"]


async def test_a_reference_workflow_serves_the_reference_file(fake: RunningFake) -> None:
    inputs = comfyui_ref() / "inputs" / "shapes.png"
    (fake.fake.input_dir / "shapes.png").write_bytes(inputs.read_bytes())

    messages, entry, _, _ = await run_prompt(fake.url, workflow("r01_invert"))

    ref = entry["outputs"]["3"]["images"][0]
    assert ref == {"filename": "r01_00001_.png", "subfolder": "", "type": "output"}
    async with aiohttp.ClientSession() as http, http.get(f"{fake.url}/view", params=ref) as r:
        assert r.status == 200 and r.content_type == "image/png"
        data = await r.read()
    assert data == (comfyui_ref() / "reference/r01_invert/node3_images_0.png").read_bytes()
    assert [m["data"]["node"] for m in messages if m["type"] == "executing"] == [
        "1",
        "2",
        "3",
        None,
    ]
