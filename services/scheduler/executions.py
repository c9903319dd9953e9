"""The execution API's behaviour, apart from its wire format: create (idempotent), read,
page, cancel and watch, always within one tenant."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from comfyfleet.common.errors import FieldViolation, InvalidArgument, Unavailable
from comfyfleet.common.ids import new_id
from comfyfleet.common.storage import ObjectStore, input_key
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.workflow.objectinfo import model_references
from services.scheduler.budgets import Budgets
from services.scheduler.config import SchedulerSettings
from services.scheduler.dispatcher import Dispatcher
from services.scheduler.environments import Environments
from services.scheduler.lifecycle import State
from services.scheduler.models import ModelResolver
from services.scheduler.notify import Notifier, wait_any
from services.scheduler.records import ExecutionRecord, ExecutionView, InputRecord
from services.scheduler.requests import (
    NewExecution,
    NewInput,
    parse_create_request,
    parse_label_selector,
)
from services.scheduler.store import ExecutionStore
from services.scheduler.uploads import Uploads
from services.scheduler.views import TERMINAL_EVENTS

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# A page ends early past this many bytes (each execution carries its workflow, up to
# megabytes): gRPC clients read at most 4 MiB by default. One execution is always listed.
MAX_PAGE_BYTES = 3 * 1024 * 1024


@dataclass(frozen=True)
class Page:
    executions: list[ExecutionView]
    next_page_token: str


class Executions:
    def __init__(
        self,
        store: ExecutionStore,
        objects: ObjectStore,
        dispatcher: Dispatcher,
        notifier: Notifier,
        settings: SchedulerSettings,
        resolver: ModelResolver,
        budgets: Budgets,
        uploads: Uploads,
        environments: Environments,
    ) -> None:
        self.store = store
        self.objects = objects
        self.dispatcher = dispatcher
        self.notifier = notifier
        self.settings = settings
        self.resolver = resolver
        self.budgets = budgets
        self.uploads = uploads
        self.environments = environments

    async def create(
        self,
        tenant: str,
        request: executions_pb2.CreateExecutionRequest,
        tenant_cap: int | None = None,
    ) -> ExecutionView:
        """Validates, checks the tenant's budget and the environment, resolves the workflow's
        models, stores the inputs, and queues; a retried request_id returns the first. Nothing
        is stored when the request, the environment or a model is bad, or the budget is
        spent.

        The models are those the environment's catalog shows the workflow names without the
        environment carrying them: each must be in the tenant's registry."""
        new = parse_create_request(request, self.settings)
        if new.request_id:
            existing = await self.store.find_by_request_id(tenant, new.request_id)
            if existing is not None:
                return await self._replay(existing, new)
        await self.budgets.check(tenant)
        _, catalog = await self.environments.for_submission(new.environment)
        models = await self.resolver.resolve(tenant, model_references(new.workflow, catalog))
        execution_id = new_id("exe")
        stored = await self._store_inputs(tenant, execution_id, new.inputs)
        try:
            record, created = await self.store.create(
                tenant, execution_id, new, stored, models, tenant_cap
            )
        except BaseException:
            await self._delete_inputs(stored)
            raise
        if not created:  # a concurrent request with the same request_id won
            await self._delete_inputs(stored)
            return await self._replay(record, new)
        return await self.store.get(tenant, record.id)

    async def _replay(self, existing: ExecutionRecord, new: NewExecution) -> ExecutionView:
        if existing.request_hash != new.fingerprint():
            raise InvalidArgument(
                "the request_id was already used for a different request",
                [FieldViolation("request_id", "already used with other parameters", "REUSED")],
                reason="REQUEST_ID_REUSED",
            )
        return await self.store.get(existing.tenant, existing.id)

    async def _store_inputs(
        self, tenant: str, execution_id: str, inputs: Sequence[NewInput]
    ) -> list[InputRecord]:
        # Uploads first: they can still be refused, and then nothing was written.
        stored = await self.uploads.take(tenant, execution_id, inputs)
        try:
            for item in inputs:
                if item.upload_id:
                    continue
                key = input_key(tenant, execution_id, item.name)
                await self.objects.put(key, item.content, item.content_type)
                stored.append(
                    InputRecord(item.name, key, len(item.content), item.content_type, item.sha256)
                )
        except Exception as err:
            log.exception("storing inputs of %s failed", execution_id)
            await self._delete_inputs(stored)
            raise Unavailable("storing the input files failed; try again") from err
        return stored

    async def _delete_inputs(self, stored: Sequence[InputRecord]) -> None:
        for item in stored:
            try:
                await self.objects.delete(item.key)
            except Exception:
                log.warning("could not delete orphaned input %s", item.key, exc_info=True)

    async def get(self, tenant: str, execution_id: str) -> ExecutionView:
        return await self.store.get(tenant, execution_id)

    async def page(
        self,
        tenant: str,
        *,
        page_size: int,
        page_token: str,
        state: State | None,
        labels: Mapping[str, str] | None = None,
        size_of: Callable[[ExecutionView], int] | None = None,
    ) -> Page:
        """A page of the tenant's executions, newest first, in ``state`` (any when None)
        and carrying every label of ``labels``; when ``size_of`` tells each one's size in
        the answer, the page ends before it would pass :data:`MAX_PAGE_BYTES`."""
        if page_size < 0:
            raise InvalidArgument(
                "page_size cannot be negative", [FieldViolation("page_size", "must be >= 0")]
            )
        selector = parse_label_selector(labels or {})
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        before = decode_page_token(page_token, state, selector)
        views = await self.store.page(
            tenant, state=state, before_id=before, limit=limit + 1, labels=selector
        )
        kept = _within_bytes(views[:limit], size_of)
        token = ""
        if len(kept) < len(views):
            token = encode_page_token(kept[-1].record.id, state, selector)
        return Page(kept, token)

    async def cancel(self, tenant: str, execution_id: str) -> ExecutionView:
        view, placement = await self.store.cancel(tenant, execution_id)
        if placement is not None:
            await self.dispatcher.interrupt(placement, execution_id, view.record.attempt)
        return view

    async def watch(
        self, tenant: str, execution_id: str, after_sequence: int
    ) -> AsyncIterator[executions_pb2.WorkflowExecutionEvent]:
        """The execution's events after ``after_sequence``, then new ones as they happen,
        until its terminal event."""
        await self.store.get(tenant, execution_id)
        after = max(after_sequence, 0)
        with self.notifier.watch(execution_id) as changed:
            while True:
                changed.clear()
                events = await self.store.events_after(execution_id, after)
                for event in events:
                    yield event
                    after = event.sequence
                    if event.event_type in TERMINAL_EVENTS:
                        return
                if not events:
                    record = (await self.store.get(tenant, execution_id)).record
                    if record.state.terminal and after >= record.last_sequence:
                        return
                    await wait_any([changed], self.settings.poll_interval_s)


def _label_digest(labels: Mapping[str, str]) -> str:
    """What a token remembers of its list's label filter: short, whatever the labels."""
    if not labels:
        return ""
    doc = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()[:32]


def _within_bytes(
    views: Sequence[ExecutionView], size_of: Callable[[ExecutionView], int] | None
) -> list[ExecutionView]:
    if size_of is None:
        return list(views)
    kept: list[ExecutionView] = []
    total = 0
    for view in views:
        total += size_of(view)
        if kept and total > MAX_PAGE_BYTES:
            break
        kept.append(view)
    return kept


def encode_page_token(
    last_id: str, state: State | None, labels: Mapping[str, str] | None = None
) -> str:
    doc: dict[str, str] = {"before": last_id, "state": state.value if state else ""}
    if labels:
        doc["labels"] = _label_digest(labels)
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def decode_page_token(
    token: str, state: State | None, labels: Mapping[str, str] | None = None
) -> str | None:
    """The id a page starts below; the token must come from a list with the same filters
    (tokens made before label filters existed carry none, and mean no label filter)."""
    if not token:
        return None
    bad = InvalidArgument(
        "the page_token is invalid", [FieldViolation("page_token", "not a token of this list")]
    )
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if not isinstance(doc, dict) or not isinstance(doc.get("before"), str):
        raise bad
    if doc.get("state") != (state.value if state else ""):
        raise InvalidArgument(
            "the page_token belongs to a list with another state filter",
            [FieldViolation("page_token", "the state filter changed between pages")],
        )
    if doc.get("labels", "") != _label_digest(labels or {}):
        raise InvalidArgument(
            "the page_token belongs to a list with another label filter",
            [FieldViolation("page_token", "the label filter changed between pages")],
        )
    return str(doc["before"])
