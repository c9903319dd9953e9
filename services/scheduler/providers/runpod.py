"""The RunPod transport: attempts run as jobs of a RunPod serverless endpoint.

The executor runs inside the endpoint's workers as a ``runpod`` SDK generator handler
(``python -m services.executor.runpod_worker``). A job's input is ``{"execute_request":
<ExecuteRequest in proto3 JSON>, "traceparent": <W3C trace context>}``, the trace context
being that of the job's ``runpod job`` span (the worker's spans join the execution's trace);
each chunk it streams is one ``ExecuteUpdate`` in proto3 JSON, the last one ``completed`` or
``failed``. A job RunPod itself reports FAILED, CANCELLED
or TIMED_OUT means the worker or the platform broke: an infrastructure failure.

The endpoint's REST API: ``POST /run``, ``GET /stream/{id}`` (new chunks since the last
call), ``GET /status/{id}``, ``POST /cancel/{id}``, ``GET /health``, with the API key as a
bearer token. The SDK's local API server (``--rp_serve_api``), which plays the endpoint in
tests, differs in ways this module handles rather than hides:

- it serves ``/stream`` and ``/status`` as POST only: a 405 to GET switches to POST;
- its ``/stream`` runs the whole job and answers once, with every chunk, when it is over, so
  a job's start is only seen when it ends (keep ``start_timeout_s`` above a run's length);
- it has no ``/cancel`` and no ``/health`` (404): a cancel then reaches nobody, and the
  endpoint's health is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp
from google.protobuf import json_format
from opentelemetry.trace import SpanKind, Status, StatusCode

from comfyfleet.common.config import Settings, setting
from comfyfleet.common.errors import ComfyfleetError, DeadlineExceeded, Unavailable
from comfyfleet.common.telemetry import TRACEPARENT, traceparent_of_span, tracer
from comfyfleet.executor.v1 import executor_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2
from services.scheduler.providers.base import ProviderError
from services.scheduler.records import Placement

log = logging.getLogger(__name__)

TRANSPORT = "runpod"
DEFAULT_API = "https://api.runpod.ai/v2"
DEFAULT_REST = "https://rest.runpod.io/v1"
# RunPod job states after which no chunk will come.
_ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})


@dataclass(frozen=True)
class RunpodConfig(Settings):
    """One RunPod serverless endpoint the scheduler sends work to."""

    # The endpoint's API base, e.g. https://api.runpod.ai/v2/<endpoint id>; "" disables RunPod.
    endpoint_url: str = setting("RUNPOD_ENDPOINT_URL", "")
    # The endpoint's id, for its executor id and for scaling its workers.
    endpoint_id: str = setting("RUNPOD_ENDPOINT_ID", "")
    api_key: str = setting("RUNPOD_API_KEY", "")
    # The most jobs the scheduler keeps at the endpoint at once (queued or running there).
    max_in_flight: int = setting("RUNPOD_MAX_IN_FLIGHT", 10)
    # The GPU type its workers run on, which prices their time ("" takes the provider's "*").
    gpu: str = setting("RUNPOD_GPU", "")
    # The limit of one HTTP call to the endpoint (a /run that hangs longer failed).
    request_timeout_s: float = setting("RUNPOD_REQUEST_TIMEOUT", 10.0)
    # The limit of one /stream call: the SDK's local server answers it only when the job ends.
    stream_timeout_s: float = setting("RUNPOD_STREAM_TIMEOUT", 120.0)
    # How often /stream is asked again while no chunk came.
    poll_interval_s: float = setting("RUNPOD_POLL_INTERVAL", 0.5)
    # A job not started by then is cancelled: the endpoint could not give it a worker.
    start_timeout_s: float = setting("RUNPOD_START_TIMEOUT", 900.0)
    # RunPod's REST API, where the endpoint's minimum number of workers is set.
    rest_url: str = setting("RUNPOD_REST_URL", DEFAULT_REST)
    # Workers the autoscaler keeps warm while there is work.
    warm_pool: int = setting("RUNPOD_WARM_POOL", 3)
    # The environment its workers run, and that environment's engine: only executions of it
    # go to the endpoint, and its queue is what scales it.
    environment: str = setting("RUNPOD_ENVIRONMENT", "native")
    engine: str = setting("RUNPOD_ENGINE", "native")
    # While the environment's catalog is unknown, how often its workers are asked for it.
    describe_interval_s: float = setting("RUNPOD_DESCRIBE_INTERVAL", 60.0)

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint_url)

    @property
    def executor_id(self) -> str:
        """The endpoint as one executor of the scheduler's registry."""
        return f"runpod-{self.endpoint_id or urlsplit(self.endpoint_url).netloc}"

    @classmethod
    def from_env(cls, **given: Any) -> Self:
        """``COMFYFLEET_RUNPOD_*``; without an endpoint URL, the API's URL of the endpoint id."""
        read = super().from_env(**given)
        url = read.endpoint_url or (f"{DEFAULT_API}/{read.endpoint_id}" if read.endpoint_id else "")
        return replace(read, endpoint_url=url.rstrip("/"), rest_url=read.rest_url.rstrip("/"))

    @property
    def scalable(self) -> bool:
        """Its workers can be set through RunPod's REST API."""
        return bool(self.endpoint_id and self.api_key and self.rest_url)

    def registration(self) -> scheduler_pb2.Executor:
        """The endpoint as the scheduler registers it on its own behalf."""
        return scheduler_pb2.Executor(
            id=self.executor_id,
            address=self.endpoint_url,
            provider="runpod",
            engine=self.engine,
            environment=self.environment,
            capacity=scheduler_pb2.ExecutorCapacity(
                gpu=scheduler_pb2.GpuInfo(name=self.gpu), slots=self.max_in_flight
            ),
        )


@dataclass(frozen=True)
class RunpodHealth:
    """The endpoint's own view: its workers and its queue."""

    workers_idle: int
    workers_running: int
    workers_starting: int
    jobs_in_queue: int
    jobs_in_progress: int

    @property
    def workers(self) -> int:
        return self.workers_idle + self.workers_running + self.workers_starting


def _failure(message: str, reason: str, **metadata: str) -> ProviderError:
    return ProviderError(Unavailable(message, reason=reason, metadata=metadata).to_status())


class _HttpFailure(Exception):
    """An HTTP answer that is not a success, with its status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status


class RunpodProvider:
    """Talks to RunPod endpoints; one HTTP session for all of them."""

    def __init__(self, cfg: RunpodConfig) -> None:
        self.cfg = cfg
        self._session: aiohttp.ClientSession | None = None
        # Endpoints found to want POST where the API says GET (the SDK's local server).
        self._post_only: set[str] = set()
        # The job of each attempt this replica follows, so that a cancel can reach it.
        self._jobs: dict[tuple[str, int], tuple[str, str]] = {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.cfg.api_key}"} if self.cfg.api_key else {}
            self._session = aiohttp.ClientSession(headers=headers)
        return self._session

    # ---- the Provider interface -----------------------------------------------------------

    async def execute(
        self, placement: Placement, request: executor_pb2.ExecuteRequest
    ) -> AsyncGenerator[executor_pb2.ExecuteUpdate, None]:
        base = placement.address.rstrip("/")
        # The job's CLIENT span, as a gRPC Execute has one: the worker continues its trace
        # from the job input's traceparent. Never made current: this generator yields.
        span = tracer.start_span(
            "runpod job",
            kind=SpanKind.CLIENT,
            attributes={
                "comfyfleet.execution_id": request.execution_id,
                "comfyfleet.attempt": request.attempt,
                "server.address": urlsplit(base).netloc,
            },
        )
        over = False
        try:
            job_id = await self._submit(base, request, traceparent_of_span(span))
            span.set_attribute("comfyfleet.runpod_job_id", job_id)
            key = (request.execution_id, request.attempt)
            self._jobs[key] = (base, job_id)
            try:
                async for update in self._follow(base, job_id):
                    over = update.WhichOneof("update") in ("completed", "failed")
                    yield update
                over = True
            finally:
                self._jobs.pop(key, None)
                if not over:
                    # Nobody follows the job any more (cancelled, lease lost, shutting down):
                    # do not leave a GPU working for nothing.
                    await self._cancel_job(base, job_id)
        except ProviderError as err:
            span.set_status(Status(StatusCode.ERROR, err.status.message))
            raise
        finally:
            span.end()

    async def cancel(self, placement: Placement, execution_id: str, attempt: int) -> bool:
        """Cancels the attempt's job when this replica follows it; another replica that does
        cancels it when it leaves the attempt's stream."""
        found = self._jobs.get((execution_id, attempt))
        if found is None:
            return False
        return await self._cancel_job(*found)

    async def describe(self, base: str) -> scheduler_pb2.RegisterExecutorRequest:
        """What the endpoint's workers run, as a gRPC executor registers it (its environment
        and its engine's catalog): a job ``{"describe": true}``, which the worker answers with
        one chunk, a RegisterExecutorRequest in proto3 JSON. It starts a worker when none
        runs, so the scheduler asks only while the environment's catalog is unknown."""
        base = base.rstrip("/")
        doc = await self._request("POST", f"{base}/run", "/run", {"input": {"describe": True}})
        job_id = doc.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise _failure(f"RunPod's /run answered without a job id: {doc}", "RUNPOD_BAD_REPLY")
        over = False
        try:
            found = await self._description(base, job_id)
            over = True
            return found
        finally:
            if not over:
                await self._cancel_job(base, job_id)

    async def _description(self, base: str, job_id: str) -> scheduler_pb2.RegisterExecutorRequest:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.cfg.start_timeout_s
        found: scheduler_pb2.RegisterExecutorRequest | None = None
        while True:
            doc = await self._stream(base, job_id)
            chunks = doc.get("stream") or []
            for chunk in chunks:
                found = _description_of(chunk)
            status = str(doc.get("status", ""))
            if status in _ENDED:
                _raise_if_broken(status, doc)
                if found is None:
                    raise _failure("the RunPod worker did not describe itself", "RUNPOD_BAD_REPLY")
                return found
            if loop.time() >= give_up:
                raise _failure(
                    f"the RunPod describe job did not end within {self.cfg.start_timeout_s:g}s",
                    "RUNPOD_START_TIMEOUT",
                )
            if not chunks:
                await asyncio.sleep(self.cfg.poll_interval_s)

    async def health(self, base: str) -> RunpodHealth | None:
        """The endpoint's workers and queue; None when it does not say (the SDK's server)."""
        try:
            doc = await self._call("GET", f"{base.rstrip('/')}/health", self.cfg.request_timeout_s)
        except (_HttpFailure, aiohttp.ClientError, TimeoutError) as err:
            log.info("no health from RunPod endpoint %s: %s", base, err)
            return None
        workers, jobs = doc.get("workers") or {}, doc.get("jobs") or {}
        return RunpodHealth(
            workers_idle=int(workers.get("idle", 0)),
            workers_running=int(workers.get("running", 0)),
            workers_starting=int(workers.get("initializing", 0)),
            jobs_in_queue=int(jobs.get("inQueue", 0)),
            jobs_in_progress=int(jobs.get("inProgress", 0)),
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- the job ----------------------------------------------------------------------------

    async def _submit(
        self, base: str, request: executor_pb2.ExecuteRequest, traceparent: str
    ) -> str:
        job_input: dict[str, Any] = {"execute_request": json_format.MessageToDict(request)}
        if traceparent:
            job_input[TRACEPARENT] = traceparent
        body: dict[str, Any] = {
            "input": job_input,
            # RunPod stops a job that runs past this; the executor's own run timeout comes
            # first, with a minute for inputs, models and outputs.
            "policy": {"executionTimeout": int((request.run_timeout.ToSeconds() + 60) * 1000)},
        }
        doc = await self._request("POST", f"{base}/run", "/run", body)
        job_id = doc.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise _failure(f"RunPod's /run answered without a job id: {doc}", "RUNPOD_BAD_REPLY")
        return job_id

    async def _follow(
        self, base: str, job_id: str
    ) -> AsyncGenerator[executor_pb2.ExecuteUpdate, None]:
        loop = asyncio.get_running_loop()
        start_by = loop.time() + self.cfg.start_timeout_s
        started = False
        while True:
            doc = await self._stream(base, job_id)
            chunks = doc.get("stream") or []
            for chunk in chunks:
                update = _update_of(chunk)
                started = started or update.WhichOneof("update") == "started"
                yield update
            status = str(doc.get("status", ""))
            if status in _ENDED:
                _raise_if_broken(status, doc)
                return
            if not started and loop.time() >= start_by:
                raise _failure(
                    f"the RunPod job was not started within {self.cfg.start_timeout_s:g}s",
                    "RUNPOD_START_TIMEOUT",
                )
            if not chunks:
                await asyncio.sleep(self.cfg.poll_interval_s)

    async def _stream(self, base: str, job_id: str) -> dict[str, Any]:
        url, limit = f"{base}/stream/{job_id}", self.cfg.stream_timeout_s
        if base not in self._post_only:
            try:
                return await self._request("GET", url, "/stream", None, limit, passthrough=405)
            except _HttpFailure:
                self._post_only.add(base)  # the SDK's local server: POST only
        return await self._request("POST", url, "/stream", None, limit)

    async def _cancel_job(self, base: str, job_id: str) -> bool:
        try:
            await self._call("POST", f"{base}/cancel/{job_id}", self.cfg.request_timeout_s)
        except _HttpFailure as err:
            if err.status == 404:
                log.info("RunPod endpoint %s has no job %s to cancel (or no /cancel)", base, job_id)
            else:
                log.warning("cancelling RunPod job %s failed: %s", job_id, err)
            return False
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("cancelling RunPod job %s failed: %s", job_id, err)
            return False
        return True

    # ---- HTTP -------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        url: str,
        route: str,
        body: Mapping[str, Any] | None,
        timeout_s: float | None = None,
        passthrough: int | None = None,
    ) -> dict[str, Any]:
        """One call whose failure is the endpoint's: a ProviderError, never a workflow error
        (an answer with the ``passthrough`` status is raised as it is)."""
        limit = timeout_s or self.cfg.request_timeout_s
        try:
            return await self._call(method, url, limit, body)
        except _HttpFailure as err:
            if err.status == passthrough:
                raise
            raise _failure(
                f"RunPod answered {err.status} to {route}: {err}",
                "RUNPOD_HTTP_ERROR",
                status=str(err.status),
            ) from err
        except TimeoutError as err:
            raise _failure(
                f"RunPod did not answer {route} within {limit:g}s", "RUNPOD_TIMEOUT"
            ) from err
        except aiohttp.ClientError as err:
            raise _failure(
                f"RunPod's {route} could not be reached: {err}", "RUNPOD_UNREACHABLE"
            ) from err

    async def _call(
        self, method: str, url: str, timeout_s: float, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self._http().request(method, url, json=body, timeout=timeout) as response:
            text = await response.text()
            if response.status >= 300:
                raise _HttpFailure(response.status, text)
            with contextlib.suppress(ValueError):
                doc = await response.json(content_type=None)
                if isinstance(doc, dict):
                    return doc
            raise _HttpFailure(response.status, f"not a JSON object: {text}")


def _update_of(chunk: Any) -> executor_pb2.ExecuteUpdate:
    """One stream chunk, ``{"output": <ExecuteUpdate in proto3 JSON>}``."""
    output = chunk.get("output") if isinstance(chunk, dict) else None
    try:
        return json_format.ParseDict(output, executor_pb2.ExecuteUpdate())
    except (json_format.ParseError, TypeError, AttributeError) as err:
        raise _failure(
            f"a RunPod chunk is not an ExecuteUpdate: {err}", "RUNPOD_BAD_CHUNK"
        ) from err


def _description_of(chunk: Any) -> scheduler_pb2.RegisterExecutorRequest:
    """A describe job's chunk, ``{"output": <RegisterExecutorRequest in proto3 JSON>}``."""
    output = chunk.get("output") if isinstance(chunk, dict) else None
    try:
        return json_format.ParseDict(output, scheduler_pb2.RegisterExecutorRequest())
    except (json_format.ParseError, TypeError, AttributeError) as err:
        raise _failure(f"a RunPod chunk is not a description: {err}", "RUNPOD_BAD_CHUNK") from err


def _raise_if_broken(status: str, doc: Mapping[str, Any]) -> None:
    """RunPod's own failures: the worker or the platform broke, never the workflow."""
    if status == "COMPLETED":
        return
    error: ComfyfleetError
    detail = str(doc.get("error") or "no reason given")
    if status == "TIMED_OUT":
        error = DeadlineExceeded(f"RunPod timed the job out: {detail}", reason="RUNPOD_TIMED_OUT")
    else:
        error = Unavailable(
            f"RunPod reports the job {status}: {detail}", reason=f"RUNPOD_JOB_{status}"
        )
    raise ProviderError(error.to_status())


class RunpodScaler:
    """Sets the endpoint's minimum workers (``workersMin``, kept warm) with RunPod's REST API
    (``PATCH /endpoints/{id}``); RunPod's own scaler adds workers above it up to
    ``workersMax`` as its queue grows. Without an endpoint id and API key the decisions are
    only recorded."""

    provider = "runpod"

    def __init__(self, cfg: RunpodConfig) -> None:
        self.cfg = cfg
        self.environment = cfg.environment

    async def _call(self, method: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.cfg.rest_url}/endpoints/{self.cfg.endpoint_id}"
        headers = {"Authorization": f"Bearer {self.cfg.api_key}"}
        timeout = aiohttp.ClientTimeout(total=self.cfg.request_timeout_s)
        async with (
            aiohttp.ClientSession(headers=headers, timeout=timeout) as http,
            http.request(method, url, json=body) as response,
        ):
            text = await response.text()
            if response.status >= 300:
                raise _HttpFailure(response.status, text)
            doc = await response.json(content_type=None)
            return doc if isinstance(doc, dict) else {}

    async def replicas(self) -> int | None:
        """The endpoint's minimum workers; None when RunPod cannot say."""
        if not self.cfg.scalable:
            return None
        try:
            doc = await self._call("GET")
        except (_HttpFailure, aiohttp.ClientError, TimeoutError, ValueError):
            return None
        value = doc.get("workersMin")
        return int(value) if isinstance(value, int) else None

    async def apply(self, desired: int) -> str | None:
        if not self.cfg.scalable:
            return (
                "RunPod scaling needs COMFYFLEET_RUNPOD_ENDPOINT_ID and COMFYFLEET_RUNPOD_API_KEY:"
                " recorded only"
            )
        body = {"workersMin": desired, "workersMax": max(desired, self.cfg.max_in_flight)}
        try:
            await self._call("PATCH", body)
        except (_HttpFailure, aiohttp.ClientError, TimeoutError, ValueError) as err:
            return f"RunPod's PATCH /endpoints/{self.cfg.endpoint_id} failed: {err}"
        return None
