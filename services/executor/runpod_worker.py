"""``python -m services.executor.runpod_worker``: the executor as a RunPod serverless worker.

The same :class:`Worker` and :class:`Attempt` as the gRPC executor, behind a ``runpod`` SDK
handler instead of ``ExecutorService.Execute``:

- a job ``{"describe": true}`` is answered with one chunk, a RegisterExecutorRequest in
  proto3 JSON: the environment the worker runs (``COMFYFLEET_ENVIRONMENT``, its spec) and
  its engine's catalog, which the scheduler records while the environment's is unknown;
- a job's input is ``{"execute_request": <ExecuteRequest in proto3 JSON>}``, with the
  scheduler's W3C ``traceparent`` beside it: the job's span continues that trace, and the
  attempt's and nodes' spans hang under it as under a gRPC Execute;
- the handler is an async generator: each chunk is one ``ExecuteUpdate`` in proto3 JSON
  (parse it back with ``json_format.ParseDict``), in the order of the gRPC stream, the last
  one ``completed`` or ``failed``. A workflow that fails is a job that COMPLETED with a
  ``failed`` last chunk: RunPod's own FAILED means the worker broke;
- a stop signal from RunPod (a cancelled or timed-out request) cancels the handler's task;
  the attempt is interrupted as a closed gRPC stream would be.

Serverless limits (``COMFYFLEET_EXECUTOR_MAX_JOBS``, ``COMFYFLEET_EXECUTOR_IDLE_EXIT_POLLS``)
use the SDK's own ways out: ``refresh_worker`` after the last job, and its SIGTERM shutdown
after that many job polls in a row found the worker idle. Both apply to the worker loop on
RunPod; the SDK's local API server (``--rp_serve_api --rp_api_port N``) runs each job when
``/runsync``, ``/status/{id}`` or ``/stream/{id}`` asks for it and has no cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Mapping, MutableMapping
from typing import Any

from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from comfyfleet.common.environments import object_info_text
from comfyfleet.common.errors import ComfyfleetError, FieldViolation, InvalidArgument
from comfyfleet.common.service import run_process
from comfyfleet.common.telemetry import TRACEPARENT, context_of, tracer
from comfyfleet.executor.v1 import executor_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2
from services.executor.attempt import Attempt, Failed, failure_of
from services.executor.config import Config
from services.executor.convert import attempt_spec, update_proto
from services.executor.engine import Engine, build_engine
from services.executor.registrar import object_info_of
from services.executor.resources import resolve_device
from services.executor.server import attempt_deps, memory_guard
from services.executor.serverless import IdlePolls, ServerlessWatch, WarmupFailed, warm_up
from services.executor.worker import Worker

log = logging.getLogger(__name__)

Chunk = dict[str, Any]


def execute_request_of(job_input: Any) -> executor_pb2.ExecuteRequest:
    """The ExecuteRequest a job carries; INVALID_ARGUMENT when there is none to read."""
    if not isinstance(job_input, dict) or not isinstance(job_input.get("execute_request"), dict):
        raise InvalidArgument(
            'the job input must be {"execute_request": {...}}',
            [FieldViolation("input.execute_request", "must be an ExecuteRequest in proto3 JSON")],
        )
    try:
        return json_format.ParseDict(job_input["execute_request"], executor_pb2.ExecuteRequest())
    except json_format.ParseError as err:
        raise InvalidArgument(
            f"the execute request is not valid proto3 JSON: {err}",
            [FieldViolation("input.execute_request", str(err))],
        ) from None


def job_span(job: Mapping[str, Any]) -> Span:
    """A SERVER span for the job, under the ``traceparent`` its input carries (the scheduler's
    ``runpod job`` span); a new trace when there is none."""
    job_input = job.get("input")
    traceparent = job_input.get(TRACEPARENT) if isinstance(job_input, dict) else None
    return tracer.start_span(
        "runpod job",
        context=context_of(traceparent if isinstance(traceparent, str) else None),
        kind=SpanKind.SERVER,
        attributes={"comfyfleet.runpod_job_id": str(job.get("id", ""))},
    )


def is_describe(job_input: Any) -> bool:
    """A job ``{"describe": true}``: the scheduler asks what the worker runs."""
    return isinstance(job_input, dict) and job_input.get("describe") is True


def description_chunk(cfg: Config, engine: Engine) -> Chunk:
    """The worker as a gRPC executor registers: its environment (the spec it was built with)
    and its engine's catalog, so the scheduler knows an environment served only on RunPod."""
    info = object_info_of(engine)
    request = scheduler_pb2.RegisterExecutorRequest(
        executor=scheduler_pb2.Executor(
            provider="runpod",
            engine=engine.name,
            environment=cfg.environment,
            node_types=list(engine.node_types()),
        ),
        environment=cfg.declared_environment(),
        object_info_json=object_info_text(info) if info else "",
    )
    return json_format.MessageToDict(request)


def chunk_of(update: executor_pb2.ExecuteUpdate) -> Chunk:
    """One stream chunk: the update in proto3 JSON (lowerCamelCase names, as ParseDict reads)."""
    return json_format.MessageToDict(update)


def failed_chunk(error: ComfyfleetError) -> Chunk:
    return chunk_of(update_proto(Failed(error)))


class RunpodWorker:
    """The handler and poll hook handed to ``runpod.serverless.start``.

    ``sdk_config`` is the dict given to the SDK, which keeps reading it: setting
    ``refresh_worker`` in it before a job ends makes that job the worker's last.
    """

    def __init__(
        self, cfg: Config, engine: Engine, executor_id: str, sdk_config: MutableMapping[str, Any]
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.executor_id = executor_id
        self.sdk_config = sdk_config
        self.watch = ServerlessWatch(0, cfg.max_jobs)
        self.idle_polls = IdlePolls(cfg.idle_exit_polls)
        self._resources = contextlib.AsyncExitStack()
        self._worker: Worker | None = None

    async def _ready(self) -> Worker:
        # Built on the first job: HTTP sessions belong to the loop the SDK runs jobs on.
        if self._worker is None:
            deps = await self._resources.enter_async_context(attempt_deps(self.cfg, self.engine))
            worker = Worker(deps, on_change=lambda: self._count(worker))
            worker.identify(self.executor_id)
            self._worker = worker
        return self._worker

    def _count(self, worker: Worker) -> None:
        self.watch.observe(busy=worker.current is not None)
        if not self.watch.accepting and not self.sdk_config.get("refresh_worker"):
            log.info("job %d of %d: the worker stops after it", self.watch.jobs, self.cfg.max_jobs)
            self.sdk_config["refresh_worker"] = True
            worker.stop_taking_work()

    async def handle(self, job: dict[str, Any]) -> AsyncIterator[Chunk]:
        """The SDK handler: one attempt per job, streamed as ExecuteUpdate chunks, inside a
        SERVER span that continues the trace of the job input's ``traceparent``."""
        if is_describe(job.get("input")):
            yield description_chunk(self.cfg, self.engine)
            return
        span = job_span(job)
        try:
            try:
                request = execute_request_of(job.get("input"))
                worker = await self._ready()
                # Current only while the attempt starts, which makes it the parent of the
                # attempt's spans: a span made current across a yield could not be undone.
                with trace.use_span(span):
                    attempt = worker.start(attempt_spec(request))
            except ComfyfleetError as err:
                yield failed_chunk(err)
                return
            except Exception as err:
                yield failed_chunk(failure_of(err))
                return
            try:
                async for update in attempt.updates():
                    yield chunk_of(update_proto(update))
            finally:
                await self._settle(attempt)
        finally:
            span.end()

    async def _settle(self, attempt: Attempt) -> None:
        """Lets a stopped attempt free the slot (bounded), so the next job finds it free."""
        await asyncio.wait({attempt.task}, timeout=self.cfg.cancel_grace_s + 1)
        if self.watch.reason_to_exit() is not None:
            await self._resources.aclose()

    def on_poll(self, concurrency: int) -> int:
        """The SDK's concurrency hook, called once per job poll: counts idle polls."""
        # Imported here: the SDK reads its environment when its modules load.
        from runpod.serverless.modules.worker_state import JobsProgress

        idle = JobsProgress().get_job_count() == 0
        if self.idle_polls.poll(idle) and self.idle_polls.count == self.idle_polls.limit:
            log.info("%d job polls in a row found no work: stopping", self.idle_polls.limit)
            signal.raise_signal(signal.SIGTERM)
        return concurrency


def main(cfg: Config) -> int:
    device = resolve_device(cfg.device)
    memory = memory_guard(cfg, device) if cfg.engine == "native" else None
    engine = build_engine(cfg.engine, device, cfg.work_dir, cfg.comfyui, memory)
    try:
        if cfg.warmup_workflow:
            try:
                seconds = warm_up(engine, cfg.warmup_workflow, cfg.warmup_inputs_dir, cfg.work_dir)
            except WarmupFailed as err:
                log.error("worker not started: %s", err)
                return 1
            log.info("warmup workflow ran in %.2fs", seconds)
        serve(cfg, engine)
    finally:
        # The comfyui engine supervises a ComfyUI process: stop it with the worker.
        close = getattr(engine, "close", None)
        if close is not None:
            close()
    return 0


def serve(cfg: Config, engine: Engine) -> None:
    """Hands the handler to the SDK, which runs jobs until RunPod (or a limit) stops it."""
    # Imported here: the SDK reads its environment when it loads.
    import runpod
    from runpod.serverless.modules.worker_state import WORKER_ID

    sdk_config: dict[str, Any] = {"return_aggregate_stream": True}
    worker = RunpodWorker(cfg, engine, cfg.executor_id or WORKER_ID, sdk_config)
    sdk_config["handler"] = worker.handle
    sdk_config["concurrency_modifier"] = worker.on_poll
    runpod.serverless.start(sdk_config)


if __name__ == "__main__":
    run_process("executor", Config.from_env, main)
