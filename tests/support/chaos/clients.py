"""Clients that submit through the gateway while the platform is harmed, as careful users do:
over gRPC with the SDK (which retries UNAVAILABLE under the request's own request_id) and
over REST (retrying 503 after its Retry-After under the same Idempotency-Key), both trying
again past the SDK's bound until a deadline. Every answer either gets is tallied by code."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc

from comfyfleet.sdk import ApiError, AsyncClient, Settings
from tests.support.paths import comfyui_ref

GRPC, REST = "grpc", "rest"
# An infrastructure failure costs an attempt; kills can cost several (10 is the most).
MAX_ATTEMPTS = 10
# The REST answers a client retries (as it would a gRPC UNAVAILABLE).
REST_RETRIED = frozenset({502, 503, 504})


@dataclass
class Answers:
    """Every answer clients got: (when, transport, code). gRPC codes by name, REST by HTTP
    status, ``connection`` where REST got no answer at all (the gateway was down)."""

    seen: list[tuple[float, str, str]] = field(default_factory=list)

    def record(self, transport: str, code: str) -> None:
        self.seen.append((time.monotonic(), transport, code))

    def by_code(self, transport: str | None = None) -> Counter[str]:
        return Counter(c for _, t, c in self.seen if transport in (None, t))

    def within(self, windows: Sequence[tuple[float, float]]) -> Counter[str]:
        """Answers of either transport, ``transport:code``, inside any of the windows."""
        return Counter(
            f"{t}:{c}" for when, t, c in self.seen if any(a <= when <= b for a, b in windows)
        )


class Tally(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Records the code of every unary gRPC call, each retry its own answer."""

    def __init__(self, answers: Answers) -> None:
        self.answers = answers

    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        code = await call.code()
        self.answers.record(GRPC, code.name)
        return call


@dataclass(frozen=True)
class Job:
    """One execution to submit: when, how, and under which request_id."""

    index: int
    request_id: str
    workflow: dict[str, Any]
    via: str
    due_s: float


def tiny_workflow(color: int, prefix: str) -> dict[str, Any]:
    """a_tiny (EmptyImage → ImageInvert → SaveImage) in a colour of its own."""
    graph: dict[str, Any] = json.loads(_A_TINY.read_text())
    graph["1"]["inputs"]["color"] = color
    graph["3"]["inputs"]["filename_prefix"] = prefix
    return graph


_A_TINY = comfyui_ref() / "workflows" / "a_tiny.json"


def plan_jobs(n: int, rng: random.Random, window_s: float, rest_every: int) -> list[Job]:
    """``n`` jobs spread evenly over the window, every ``rest_every``-th over REST, each of
    a colour no other job has."""
    base = rng.randrange(1 << 24)
    run = f"{rng.randrange(1 << 32):08x}"
    return [
        Job(
            i,
            f"chaos-{run}-{i}",
            tiny_workflow((base + i) % (1 << 24), f"chaos{i}"),
            REST if rest_every and i % rest_every == rest_every - 1 else GRPC,
            window_s * i / n,
        )
        for i in range(n)
    ]


class Submitter:
    """Submits jobs when due with ``clients`` concurrent workers; ``accepted`` maps each
    request_id to the execution id the platform answered with."""

    def __init__(self, gateway: str, rest_url: str, key: str, answers: Answers) -> None:
        self.settings = Settings(gateway, key)
        self.rest_url = rest_url
        self.key = key
        self.answers = answers
        self.accepted: dict[str, str] = {}
        self.gave_up: dict[str, str] = {}

    async def run(self, jobs: Sequence[Job], clients: int, deadline_s: float) -> None:
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)
        t0 = time.monotonic()
        async with (
            AsyncClient(self.settings, interceptors=[Tally(self.answers)]) as client,
            aiohttp.ClientSession(self.rest_url, headers=self._auth()) as http,
        ):
            workers = [self._worker(queue, client, http, t0, deadline_s) for _ in range(clients)]
            await asyncio.gather(*workers)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def _worker(
        self,
        queue: asyncio.Queue[Job],
        client: AsyncClient,
        http: aiohttp.ClientSession,
        t0: float,
        deadline_s: float,
    ) -> None:
        while not queue.empty():
            job = queue.get_nowait()
            await asyncio.sleep(max(0.0, t0 + job.due_s - time.monotonic()))
            deadline = time.monotonic() + deadline_s
            try:
                if job.via == REST:
                    made = await self._over_rest(http, job, deadline)
                else:
                    made = await self._over_grpc(client, job, deadline)
            except (ApiError, RestRefused) as err:
                self.gave_up[job.request_id] = str(err)
                continue
            self.accepted[job.request_id] = made

    async def _over_grpc(self, client: AsyncClient, job: Job, deadline: float) -> str:
        while True:
            try:
                execution = await client.submit(
                    job.workflow, request_id=job.request_id, max_attempts=MAX_ATTEMPTS
                )
                return str(execution.id)
            except ApiError as err:
                if err.code != "UNAVAILABLE" or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(1.0)

    async def _over_rest(self, http: aiohttp.ClientSession, job: Job, deadline: float) -> str:
        body = {"workflow": job.workflow, "maxAttempts": MAX_ATTEMPTS}
        headers = {"Idempotency-Key": job.request_id}
        while True:
            wait, made = await self._post(http, body, headers)
            if made is not None:
                return made
            if time.monotonic() >= deadline:
                raise RestRefused(f"{job.request_id}: still refused at the deadline")
            await asyncio.sleep(wait)

    async def _post(
        self, http: aiohttp.ClientSession, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[float, str | None]:
        """(how long to wait before trying again, the execution id when accepted)."""
        try:
            async with http.post("/v1/executions", json=body, headers=headers) as response:
                self.answers.record(REST, str(response.status))
                if response.status == 200:
                    return 0.0, str((await response.json())["id"])
                text = await response.text()
                if response.status not in REST_RETRIED:
                    raise RestRefused(f"{response.status}: {text[:500]}")
                return float(response.headers.get("Retry-After", "1")), None
        except aiohttp.ClientConnectionError:
            self.answers.record(REST, "connection")
            return 0.5, None


class RestRefused(Exception):
    """A REST submission answered with a status a client does not retry."""
