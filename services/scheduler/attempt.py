"""Running one attempt: hand it to its executor, follow the update stream, keep the lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import time
from collections.abc import Callable

from google.protobuf import duration_pb2
from google.rpc import code_pb2, status_pb2

from comfyfleet.common.errors import Internal, Unavailable
from comfyfleet.common.storage import ObjectStore, model_key, output_key
from comfyfleet.executor.v1 import executor_pb2
from services.scheduler.breaker import AttemptPermit
from services.scheduler.config import SchedulerSettings
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.providers.base import ProviderError, Providers
from services.scheduler.records import Dispatch, OutputRecord
from services.scheduler.routing import RunTimes
from services.scheduler.store import ExecutionStore, Fenced

log = logging.getLogger(__name__)


class OutputsMissing(Exception):
    """The executor reported outputs that are not where it says it put them."""


class Verdict:
    """What one attempt tells its circuit breakers: one call, judged when the executor
    starts the attempt or when it fails first; an infrastructure failure after the start
    turns it into a failed call. Workflow errors are the provider doing its job."""

    def __init__(self, permit: AttemptPermit | None, clock: Callable[[], float]) -> None:
        self.permit = permit
        self.clock = clock
        self.began = clock()

    def _elapsed(self) -> float:
        return self.clock() - self.began

    def started(self) -> None:
        if self.permit is not None and not self.permit.settled:
            self.permit.success(self._elapsed())

    def fine(self) -> None:
        """The attempt ended without infrastructure trouble."""
        self.started()

    def broke(self) -> None:
        if self.permit is not None:
            self.permit.failure(self._elapsed())

    def dropped(self) -> None:
        """Cancelled, or lost by this runner: the outcome says nothing about the executor."""
        if self.permit is not None:
            self.permit.release()


class AttemptRunner:
    """Drives attempts to their end; every change goes through the fenced store, so a runner
    that lost its attempt (cancelled, lease expired, replaced) changes nothing."""

    def __init__(
        self,
        store: ExecutionStore,
        registry: ExecutorRegistry,
        providers: Providers,
        objects: ObjectStore,
        settings: SchedulerSettings,
        run_times: RunTimes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.registry = registry
        self.providers = providers
        self.objects = objects
        self.settings = settings
        self.run_times = run_times or RunTimes()
        self.clock = clock

    async def run(self, dispatch: Dispatch) -> None:
        fence = Fenced(dispatch.record.id, dispatch.attempt)
        verdict = Verdict(dispatch.permit, self.clock)
        follow = asyncio.create_task(
            self._follow(fence, dispatch, verdict), name=f"attempt {fence}"
        )
        try:
            await self._keep_lease(fence, follow)
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
            verdict.dropped()

    async def _keep_lease(self, fence: Fenced, follow: asyncio.Task[None]) -> None:
        """Renews the lease while the executor heartbeats; drops the stream once the attempt
        is no longer current (cancelled, or its lease was reaped)."""
        interval = self.settings.lease_s / 3
        while True:
            done, _ = await asyncio.wait({follow}, timeout=interval)
            if done:
                follow.result()
                return
            try:
                current, _renewed = await self.store.renew_lease(fence, self.settings.lease_s)
            except Exception:
                log.exception("renewing the lease of %s failed", fence)
                continue
            if not current:
                log.info("%s is no longer current; leaving its stream", fence)
                return

    async def _follow(self, fence: Fenced, dispatch: Dispatch, verdict: Verdict) -> None:
        try:
            request = self._request(dispatch)
            provider = self.providers.of(dispatch.placement)
            async with contextlib.aclosing(
                provider.execute(dispatch.placement, request)
            ) as updates:
                async for update in updates:
                    if not await self._apply(fence, dispatch, update, verdict):
                        return
            verdict.broke()
            await self._infrastructure(
                fence, "the executor ended the stream without a result", "EXECUTOR_STREAM_ENDED"
            )
        except ProviderError as err:
            await self._provider_failed(fence, dispatch, err, verdict)
        except Exception:
            # The database or storage failed under us: the lease runs out and the reaper
            # turns this attempt into a retry.
            log.exception("following %s failed", fence)

    async def _provider_failed(
        self, fence: Fenced, dispatch: Dispatch, err: ProviderError, verdict: Verdict
    ) -> None:
        if err.unreachable:
            # Not reachable at all: stop sending it work until it heartbeats again.
            placement = dispatch.placement
            await self.registry.forget(placement.executor_id, placement.address)
        if err.workflow_error:
            verdict.fine()
            await self.store.workflow_failed(fence, err.status)
        else:
            verdict.broke()
            await self.store.infrastructure_failure(fence, err.status)

    async def _apply(
        self,
        fence: Fenced,
        dispatch: Dispatch,
        update: executor_pb2.ExecuteUpdate,
        verdict: Verdict,
    ) -> bool:
        """Records one update; False when the attempt is over for this runner."""
        kind = update.WhichOneof("update")
        if kind == "started":
            verdict.started()
            return await self.store.started(fence, self.settings.lease_s)
        if kind == "node":
            return await self.store.progress(fence, update.node.progress, self.settings.lease_s)
        if kind == "completed":
            await self._completed(fence, dispatch, update.completed, verdict)
            return False
        if kind == "failed":
            error = _reason(update.failed)
            if update.failed.retryable:
                verdict.broke()
                await self.store.infrastructure_failure(fence, error)
            else:
                verdict.fine()
                await self.store.workflow_failed(fence, error)
            return False
        return True  # an update kind newer than this scheduler: nothing to record

    async def _completed(
        self,
        fence: Fenced,
        dispatch: Dispatch,
        completed: executor_pb2.Completed,
        verdict: Verdict,
    ) -> None:
        try:
            outputs = await self._outputs(fence, dispatch.record.tenant, completed)
        except OutputsMissing as err:
            verdict.broke()
            await self._infrastructure(fence, str(err), "OUTPUT_MISSING")
            return
        verdict.fine()
        placement = dispatch.placement
        self.run_times.observe(
            placement.executor_id, placement.gpu_name, completed.metrics.execution_time_seconds
        )
        await self.store.succeeded(fence, outputs, completed.metrics)

    async def _outputs(
        self, fence: Fenced, tenant: str, completed: executor_pb2.Completed
    ) -> list[OutputRecord]:
        """The reported outputs, checked against the slots handed out and against storage."""
        seen: set[int] = set()
        outputs = []
        for item in completed.outputs:
            if not 0 <= item.slot < self.settings.output_slots or item.slot in seen:
                raise OutputsMissing(f"the executor reported an invalid output slot {item.slot}")
            seen.add(item.slot)
            key = output_key(tenant, fence.execution_id, fence.attempt, item.slot)
            size = await self.objects.size(key)
            if size is None:
                raise OutputsMissing(f"output slot {item.slot} was reported but never uploaded")
            outputs.append(_output_record(fence, item, key, size))
        return outputs

    async def _infrastructure(self, fence: Fenced, message: str, reason: str) -> None:
        await self.store.infrastructure_failure(
            fence, Unavailable(message, reason=reason).to_status()
        )

    def _request(self, dispatch: Dispatch) -> executor_pb2.ExecuteRequest:
        record, attempt, s = dispatch.record, dispatch.attempt, self.settings
        run_timeout = duration_pb2.Duration()
        run_timeout.FromNanoseconds(int(record.run_timeout_s * 1e9))
        # Every URL of the attempt is signed in two batches: one date, one signing key.
        gets = self.objects.presign_gets(
            [i.key for i in dispatch.inputs]
            + [model_key(record.tenant, m.sha256) for m in record.models],
            s.input_url_ttl_s,
        )
        puts = self.objects.presign_puts(
            [output_key(record.tenant, record.id, attempt, n) for n in range(s.output_slots)],
            s.output_slot_url_ttl_s,
        )
        input_urls, model_urls = gets[: len(dispatch.inputs)], gets[len(dispatch.inputs) :]
        return executor_pb2.ExecuteRequest(
            execution_id=record.id,
            attempt=attempt,
            tenant=record.tenant,
            workflow_json=record.workflow_json,
            inputs=[
                executor_pb2.InputRef(name=i.name, url=url, size_bytes=i.size_bytes)
                for i, url in zip(dispatch.inputs, input_urls, strict=True)
            ],
            models=[
                executor_pb2.ModelRef(
                    name=m.name,
                    folder=m.folder,
                    sha256=m.sha256,
                    size_bytes=m.size_bytes,
                    url=url,
                )
                for m, url in zip(record.models, model_urls, strict=True)
            ],
            output_slots=[
                executor_pb2.OutputSlot(index=slot, url=url) for slot, url in enumerate(puts)
            ],
            run_timeout=run_timeout,
        )


def _reason(failed: executor_pb2.Failed) -> status_pb2.Status:
    """The executor's error; one without a code must not read as OK."""
    if failed.error.code != code_pb2.OK:
        return failed.error
    return Internal(
        "the executor reported a failure without a reason", reason="EXECUTOR_ERROR_UNSET"
    ).to_status()


def _output_record(
    fence: Fenced, item: executor_pb2.UploadedOutput, key: str, size: int
) -> OutputRecord:
    out = item.output
    content_type = out.content_type or mimetypes.guess_type(out.filename)[0] or ""
    return OutputRecord(
        attempt=fence.attempt,
        slot=item.slot,
        key=key,
        node_id=out.node_id,
        filename=out.filename,
        subfolder=out.subfolder,
        kind=out.kind,
        content_type=content_type or "application/octet-stream",
        size_bytes=size,
        sha256=out.sha256,
    )
