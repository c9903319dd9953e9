"""The public surface of a running platform, as users meet it: schemathesis against the
served /openapi.json (no 5xx, every answer a documented status), SSE watch resumed with
Last-Event-ID, 429 with Retry-After, /ready, and the CLI over gRPC."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from safetensors.numpy import save
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Err, Ok

from comfyfleet.cli.main import main as cli
from comfyfleet.tenants.v1 import tenants_pb2, tenants_pb2_grpc
from tests.e2e.conftest import Platform
from tests.e2e.receiver import webhook_receiver
from tests.support import eventually
from tests.support.paths import comfyui_ref

REF = comfyui_ref()
WORKFLOW = REF / "workflows" / "r01_invert.json"
SHAPES = REF / "inputs" / "shapes.png"
# Examples per operation and generation mode: about 30 s over the whole API on two cores.
EXAMPLES = 12
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def new_key(platform: Platform, *scopes: str, rate: float = 0.0, burst: int = 0) -> str:
    """A key of the admin's tenant with its own rate limit."""
    with grpc.insecure_channel(platform.addrs.gateway) as channel:
        stub = tenants_pb2_grpc.TenantServiceStub(channel)
        key = tenants_pb2.ApiKey(
            scopes=list(scopes),
            rate_limit=tenants_pb2.RateLimit(requests_per_second=rate, burst=burst),
        )
        made = stub.CreateApiKey(
            tenants_pb2.CreateApiKeyRequest(tenant_id="-", api_key=key),
            metadata=(("authorization", f"Bearer {platform.admin_key}"),),
        )
    return made.secret


def served_document(platform: Platform) -> dict[str, Any]:
    """/openapi.json, with ``{a.b}`` path variables renamed ``{a__b}``.

    Schemathesis fills paths with ``str.format``, which reads ``{a.b}`` as an attribute;
    the renaming changes only the name in the document, not one byte of a request.
    """
    with urllib.request.urlopen(f"{platform.rest_url}/openapi.json") as response:
        doc: dict[str, Any] = json.loads(response.read())
    undot = re.compile(r"\{(\w+)\.(\w+)\}")
    doc["paths"] = {undot.sub(r"{\1__\2}", path): item for path, item in doc["paths"].items()}
    for item in doc["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    parameter["name"] = parameter["name"].replace(".", "__")
    return doc


def test_generated_requests_get_no_5xx_and_only_documented_statuses(platform: Platform) -> None:
    # A generous limit: this test is about answers, not about being throttled.
    headers = {"Authorization": f"Bearer {new_key(platform, 'admin', rate=1e5, burst=100000)}"}
    schema = schemathesis.openapi.from_dict(served_document(platform))
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    results = list(schema.get_all_operations())
    unloadable = [r.err() for r in results if isinstance(r, Err)]
    assert not unloadable, unloadable
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    for operation in operations:
        strategy = operation.as_strategy() | operation.as_strategy(
            generation_mode=GenerationMode.NEGATIVE
        )

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: Any) -> None:
            response = case.call_and_validate(
                base_url=platform.rest_url, headers=headers, checks=CHECKS, timeout=10
            )
            statuses[response.status_code] += 1

        try:
            exercise()
        except Exception as err:
            failures.append(f"{operation.label}: {err}")
    assert not failures, "\n\n".join(failures)
    assert len(operations) >= 28
    # The requests got past authentication into validation and lookups.
    assert statuses[400] and statuses[404] and statuses[200], statuses


def sse_events(text: str) -> list[tuple[int, dict[str, Any]]]:
    """(id, data) of each event of a Server-Sent Events body."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
        )
        if "data" in fields:
            out.append((int(fields["id"]), json.loads(fields["data"])))
    return out


async def test_watch_over_sse_resumes_after_last_event_id(platform: Platform) -> None:
    shapes = base64.b64encode(SHAPES.read_bytes()).decode()
    body = {
        "workflow": json.loads(WORKFLOW.read_text()),
        "inputs": [{"name": "shapes.png", "content": shapes}],
    }
    auth = {"Authorization": f"Bearer {platform.admin_key}"}
    async with aiohttp.ClientSession(platform.rest_url, headers=auth) as http:
        async with http.post("/v1/executions", json=body) as response:
            assert response.status == 200, await response.text()
            execution = await response.json()
        watch = f"/v1/executions/{execution['id']}:watch"
        sse = {"Accept": "text/event-stream"}
        async with http.get(watch, headers=sse) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            events = sse_events(await response.text())
        ids = [i for i, _ in events]
        assert ids == list(range(1, len(ids) + 1))
        assert events[-1][1]["eventType"] == "execution.succeeded"
        resume_at = ids[len(ids) // 2]
        async with http.get(watch, headers={**sse, "Last-Event-ID": str(resume_at)}) as response:
            resumed = sse_events(await response.text())
    assert [i for i, _ in resumed] == [i for i in ids if i > resume_at]
    assert resumed[-1][1] == events[-1][1]


async def test_a_throttled_key_gets_429_with_retry_after(platform: Platform) -> None:
    key = new_key(platform, "executions:write", rate=0.2, burst=2)
    async with aiohttp.ClientSession(
        platform.rest_url, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        codes = []
        for _ in range(3):
            async with http.get("/v1/executions") as response:
                codes.append(response.status)
                retry_after = response.headers.get("Retry-After")
    assert codes == [200, 200, 429]
    assert retry_after is not None and 1 <= int(retry_after) <= 5


async def test_ready_and_health(platform: Platform) -> None:
    async with aiohttp.ClientSession(platform.rest_url) as http:
        async with http.get("/ready") as response:
            assert response.status == 200
            body = await response.json()
        async with http.get("/health") as response:
            assert response.status == 200
    assert set(body["checks"]) == {"database", "scheduler", "models", "webhook"}
    assert set(body["checks"].values()) == {"ok"}


def is_file(path: str) -> bool:
    return Path(path).is_file()


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


async def test_cli_walkthrough(
    platform: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Cli(platform, capsys)
    scopes = ["executions:write", "models:write", "webhooks:write", "keys:write"]
    scope_args = [a for s in scopes for a in ("--scope", s)]
    code, out, err = await run(
        platform.admin_key, "keys", "create", "--tenant", "cli-user", *scope_args
    )
    assert code == 0, err
    key = out.strip()

    # submit --wait draws progress and downloads; results fetches the same files again.
    code, out, err = await run(
        key,
        "submit",
        str(WORKFLOW),
        "--input",
        f"shapes.png={SHAPES}",
        "--label",
        "run=cli",
        "--wait",
        "--out",
        str(tmp_path / "a"),
    )
    assert code == 0, err
    assert "succeeded" in err and is_file(out.split()[0])
    code, out, _ = await run(key, "list", "--state", "succeeded")
    execution_id = out.split()[0]
    code, out, _ = await run(key, "results", execution_id, "--out", str(tmp_path / "b"))
    assert code == 0 and [Path(p).parent for p in out.split()] == [tmp_path / "b"]

    model = tmp_path / "tiny.safetensors"
    model.write_bytes(save({"w": np.zeros((4, 4), np.float32)}))
    code, out, err = await run(key, "models", "push", str(model), "--type", "lora")
    assert code == 0 and "tiny.safetensors version 1" in err, err
    code, out, _ = await run(key, "models", "list")
    assert "tiny.safetensors" in out

    with webhook_receiver() as receiver:
        code, out, _ = await run(key, "webhooks", "add", receiver.url, "--event", "execution.*")
        assert code == 0 and out.startswith("whsec_")
        code, out, _ = await run(key, "webhooks", "list")
        subscription_id = out.split()[0]
        code, out, _ = await run(key, "webhooks", "test", subscription_id)
        assert code == 0

        async def delivered() -> None:
            code, out, _ = await run(key, "webhooks", "deliveries", subscription_id)
            assert code == 0 and "webhook.test" in out and "succeeded" in out, out

        await eventually(delivered, timeout=20)
        assert any(b'"webhook.test"' in r.body for r in receiver.requests)

    code, out, _ = await run(key, "keys", "create", "--scope", "executions:write")
    revocable = out.strip()
    revocable_id = revocable.split("_")[1]
    code, out, _ = await run(key, "keys", "list")
    assert revocable_id in out
    code, _, _ = await run(key, "keys", "revoke", revocable_id)
    assert code == 0
    # Errors say what went wrong and what to do.
    code, _, err = await run(revocable, "list")
    assert code == 2 and "UNAUTHENTICATED" in err and "COMFYFLEET_API_KEY" in err
    code, _, err = await run(key, "keys", "create", "--scope", "admin")
    assert code == 2 and "PERMISSION_DENIED" in err and "admin" in err
    code, _, err = await run(key, "get", "exe_missing")
    assert code == 2 and "NOT_FOUND" in err
