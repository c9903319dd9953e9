"""Clients of the public gRPC API: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Both have the same methods; request messages are built once, in ``comfyfleet.sdk.requests``.
Every failed call raises :class:`comfyfleet.sdk.ApiError` with the platform's status.
Calls answered UNAVAILABLE are made again first, as ``settings.retry`` says
(``comfyfleet.sdk.retry``): creates under a ``request_id`` of their own, so a retry never
makes a second resource; a watch resumes after the last event it gave.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from comfyfleet.environments.v1 import environments_pb2, environments_pb2_grpc
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.models.v1 import models_pb2, models_pb2_grpc
from comfyfleet.sdk import presigned
from comfyfleet.sdk.errors import ApiError, api_error
from comfyfleet.sdk.multipart import (
    MULTIPART_THRESHOLD,
    PARALLEL_PARTS,
    complete_request,
    put_parts,
    start_request,
)
from comfyfleet.sdk.requests import (
    EnvironmentSpec,
    Inputs,
    InputSource,
    Progress,
    Uploaded,
    catalog_request,
    create_request,
    default_environment_request,
    environment_request,
    model_type,
    needs_upload,
    state_value,
    subscription_request,
    upload_request,
    upload_request_id,
    upload_requests,
)
from comfyfleet.sdk.retry import NO_RETRY, new_request_id, with_request_id
from comfyfleet.sdk.settings import Settings
from comfyfleet.tenants.v1 import tenants_pb2, tenants_pb2_grpc
from comfyfleet.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc

__all__ = [
    "TERMINAL",
    "AsyncClient",
    "Client",
    "Uploaded",
    "create_request",
    "download",
    "output_path",
    "put_upload",
]

TERMINAL = frozenset(
    {
        executions_pb2.EXECUTION_STATE_SUCCEEDED,
        executions_pb2.EXECUTION_STATE_FAILED,
        executions_pb2.EXECUTION_STATE_CANCELLED,
    }
)
_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]
OWN_TENANT = "-"
T = TypeVar("T")


def download(url: str, dest: Path) -> Path:
    """Fetches a presigned URL to ``dest`` (written whole or not at all)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    partial.replace(dest)
    return dest


def put_upload(
    upload: executions_pb2.InputUpload, source: Path | bytes, timeout_s: float = 600.0
) -> None:
    """Sends the file with one HTTP PUT to the upload's presigned URL, streamed from disk."""
    headers = dict(upload.upload_headers)
    if isinstance(source, Path):
        headers["Content-Length"] = str(source.stat().st_size)
        opened: contextlib.AbstractContextManager[Any] = source.open("rb")
    else:
        headers["Content-Length"] = str(len(source))
        opened = contextlib.nullcontext(io.BytesIO(source))
    with opened as body:
        presigned.put(upload.upload_url, body, headers, timeout_s=timeout_s, what="the input")


def output_path(out_dir: Path, output: executions_pb2.Output) -> Path:
    """Where an output goes under ``out_dir``: its file name, never outside the folder."""
    name = Path(output.filename).name or f"node{output.node_id}.bin"
    parts = [p for p in Path(output.subfolder).parts if p not in ("", ".", "..", "/")]
    return out_dir.joinpath(*parts, name)


async def _in_thread(items: Iterator[T]) -> AsyncIterator[T]:
    """Items of a blocking iterator (file reads), produced off the event loop."""
    done = object()
    while (item := await asyncio.to_thread(next, items, done)) is not done:
        yield item  # type: ignore[misc]


def _list(page_size: int, page_token: str, **filters: Any) -> dict[str, Any]:
    return {"page_size": page_size, "page_token": page_token, **filters}


class _Stubs:
    def __init__(self, channel: grpc.Channel | grpc.aio.Channel, settings: Settings) -> None:
        self.settings = settings
        self.channel = channel
        self.executions = executions_pb2_grpc.ExecutionServiceStub(channel)
        self.tenants = tenants_pb2_grpc.TenantServiceStub(channel)
        self.webhooks = webhooks_pb2_grpc.WebhookServiceStub(channel)
        self.models = models_pb2_grpc.ModelServiceStub(channel)
        self.environments = environments_pb2_grpc.EnvironmentServiceStub(channel)


class AsyncClient(_Stubs):
    """asyncio client: ``async with AsyncClient() as c: e = await c.submit(wf)``.

    ``interceptors`` (``grpc.aio`` client interceptors) see every call, retries included."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        settings = settings or Settings.discover()
        channel = grpc.aio.insecure_channel(
            settings.address, options=_OPTIONS, interceptors=list(interceptors) or None
        )
        super().__init__(channel, settings)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()  # type: ignore[misc]

    async def _call(self, method: Any, request: Any, *, retry: bool = True) -> Any:
        """One call; retried after UNAVAILABLE unless ``retry`` is False (a request stream
        cannot be sent twice, a ping would be)."""
        policy = self.settings.retry if retry else NO_RETRY
        if retry:
            with_request_id(request)
        attempt = 1
        while True:
            try:
                return await method(request, metadata=self.settings.metadata())
            except grpc.aio.AioRpcError as err:
                error = api_error(err)
            wait = policy.wait_before_retry(attempt, error)
            if wait is None:
                raise error
            await asyncio.sleep(wait)
            attempt += 1

    # Executions

    async def submit(
        self, workflow: Mapping[str, Any] | str, inputs: Inputs | None = None, **kw: Any
    ) -> executions_pb2.Execution:
        """Queues ``workflow`` (in ``environment=`` when given, else the tenant's default
        environment, else the platform's); input files over
        ``settings.upload_threshold_bytes`` are uploaded first (``upload_input``) and named
        by their upload. Without a ``request_id`` it gets one of its own, so that its
        retries (and its uploads') are answered with the first result."""
        kw["request_id"] = kw.get("request_id") or new_request_id()
        staged = {
            name: await self._staged(name, source, kw["request_id"])
            for name, source in (inputs or {}).items()
        }
        request = create_request(workflow, staged, **kw)
        return await self._call(self.executions.CreateExecution, request)

    async def _staged(self, name: str, source: InputSource, request_id: str) -> InputSource:
        if not needs_upload(source, self.settings.upload_threshold_bytes):
            return source
        assert isinstance(source, Path | bytes)
        upload = await self.upload_input(
            source, name, request_id=upload_request_id(request_id, name)
        )
        return Uploaded(upload.id)

    async def upload_input(
        self, source: Path | bytes, name: str = "", *, request_id: str = ""
    ) -> executions_pb2.InputUpload:
        """Uploads a file by presigned PUT; name it in an input with ``Uploaded(upload.id)``."""
        name = name or (source.name if isinstance(source, Path) else "input")
        request = await asyncio.to_thread(upload_request, source, name, request_id)
        upload = await self._call(self.executions.CreateInputUpload, request)
        await asyncio.to_thread(put_upload, upload, source)
        return upload

    async def get(self, execution_id: str) -> executions_pb2.Execution:
        request = executions_pb2.GetExecutionRequest(id=execution_id)
        return await self._call(self.executions.GetExecution, request)

    async def cancel(self, execution_id: str) -> executions_pb2.Execution:
        request = executions_pb2.CancelExecutionRequest(id=execution_id)
        return await self._call(self.executions.CancelExecution, request)

    async def list_executions(
        self,
        *,
        page_size: int = 50,
        page_token: str = "",
        state: str | int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> executions_pb2.ListExecutionsResponse:
        """One page of executions, newest first; ``labels`` keeps those carrying them all."""
        request = executions_pb2.ListExecutionsRequest(
            **_list(page_size, page_token, state=state_value(state), labels=dict(labels or {}))
        )
        return await self._call(self.executions.ListExecutions, request)

    async def watch(
        self, execution_id: str, after_sequence: int = 0
    ) -> AsyncIterator[executions_pb2.WorkflowExecutionEvent]:
        """The execution's events after ``after_sequence``, until its terminal one; a stream
        cut short by UNAVAILABLE is opened again after the last event given."""
        last, attempt = after_sequence, 1
        while True:
            request = executions_pb2.WatchExecutionRequest(id=execution_id, after_sequence=last)
            stream = self.executions.WatchExecution(request, metadata=self.settings.metadata())
            try:
                async for event in stream:
                    last, attempt = max(last, event.sequence), 1
                    yield event
                return
            except grpc.aio.AioRpcError as err:
                error = api_error(err)
            finally:
                stream.cancel()
            wait = self.settings.retry.wait_before_retry(attempt, error)
            if wait is None:
                raise error
            await asyncio.sleep(wait)
            attempt += 1

    async def wait(self, execution_id: str) -> executions_pb2.Execution:
        """Follows the execution's events until it ends, then returns it."""
        async for event in self.watch(execution_id):
            if event.status in TERMINAL:
                break
        return await self.get(execution_id)

    async def download_outputs(
        self, execution: executions_pb2.Execution, out_dir: Path
    ) -> list[Path]:
        return [
            await asyncio.to_thread(download, o.url, output_path(out_dir, o))
            for o in execution.outputs
        ]

    # Models

    async def upload_model(
        self,
        path: Path,
        kind: str | int,
        *,
        name: str = "",
        progress: Progress | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = 0,
        parallel: int = PARALLEL_PARTS,
    ) -> models_pb2.Model:
        """Streams the file over gRPC, or above ``multipart_threshold`` bytes PUTs it in parts
        straight to object storage (``part_size`` 0 lets the platform choose)."""
        size = (await asyncio.to_thread(path.stat)).st_size
        if size <= multipart_threshold:
            stream = upload_requests(path, kind, name=name, progress=progress)
            return await self._call(self.models.UploadModel, _in_thread(stream), retry=False)
        start = await asyncio.to_thread(start_request, path, kind, name=name, part_size=part_size)
        started = await self._call(self.models.StartModelUpload, start)
        try:
            parts = await asyncio.to_thread(
                put_parts, started, path, progress=progress, parallel=parallel
            )
            return await self._call(
                self.models.CompleteModelUpload, complete_request(started, parts)
            )
        except BaseException:
            await self._abandon(started.upload_id)
            raise

    async def _abandon(self, upload_id: str) -> None:
        """Best effort: the platform aborts uploads left open when they expire anyway."""
        with contextlib.suppress(ApiError):
            request = models_pb2.AbortModelUploadRequest(upload_id=upload_id)
            await self._call(self.models.AbortModelUpload, request)

    async def list_models(
        self, *, kind: str | int | None = None, page_size: int = 50, page_token: str = ""
    ) -> models_pb2.ListModelsResponse:
        chosen = model_type(kind) if kind is not None else 0
        request = models_pb2.ListModelsRequest(**_list(page_size, page_token, type=chosen))
        return await self._call(self.models.ListModels, request)

    async def delete_model(self, model_id: str) -> None:
        await self._call(self.models.DeleteModel, models_pb2.DeleteModelRequest(id=model_id))

    # Webhooks

    async def create_subscription(
        self, url: str, event_types: Sequence[str] = (), *, description: str = ""
    ) -> webhooks_pb2.Subscription:
        request = subscription_request(url, event_types, description)
        return await self._call(self.webhooks.CreateSubscription, request)

    async def list_subscriptions(
        self, *, page_size: int = 50, page_token: str = ""
    ) -> webhooks_pb2.ListSubscriptionsResponse:
        request = webhooks_pb2.ListSubscriptionsRequest(**_list(page_size, page_token))
        return await self._call(self.webhooks.ListSubscriptions, request)

    async def ping_subscription(self, subscription_id: str) -> webhooks_pb2.Delivery:
        request = webhooks_pb2.PingSubscriptionRequest(id=subscription_id)
        return await self._call(self.webhooks.PingSubscription, request, retry=False)

    async def delete_subscription(self, subscription_id: str) -> None:
        request = webhooks_pb2.DeleteSubscriptionRequest(id=subscription_id)
        await self._call(self.webhooks.DeleteSubscription, request)

    async def list_deliveries(
        self, subscription_id: str, *, page_size: int = 50, page_token: str = ""
    ) -> webhooks_pb2.ListDeliveriesResponse:
        request = webhooks_pb2.ListDeliveriesRequest(
            subscription_id=subscription_id, **_list(page_size, page_token)
        )
        return await self._call(self.webhooks.ListDeliveries, request)

    # Keys

    async def create_key(
        self,
        tenant_id: str = OWN_TENANT,
        *,
        description: str = "",
        scopes: Sequence[str] = (),
    ) -> tenants_pb2.CreateApiKeyResponse:
        key = tenants_pb2.ApiKey(description=description, scopes=list(scopes))
        request = tenants_pb2.CreateApiKeyRequest(tenant_id=tenant_id, api_key=key)
        return await self._call(self.tenants.CreateApiKey, request)

    async def list_keys(self, tenant_id: str = OWN_TENANT) -> tenants_pb2.ListApiKeysResponse:
        request = tenants_pb2.ListApiKeysRequest(tenant_id=tenant_id)
        return await self._call(self.tenants.ListApiKeys, request)

    async def revoke_key(self, key_id: str, tenant_id: str = OWN_TENANT) -> tenants_pb2.ApiKey:
        request = tenants_pb2.RevokeApiKeyRequest(tenant_id=tenant_id, id=key_id)
        return await self._call(self.tenants.RevokeApiKey, request)

    # Environments

    async def get_environment(self, name: str) -> environments_pb2.Environment:
        request = environments_pb2.GetEnvironmentRequest(name=name)
        return await self._call(self.environments.GetEnvironment, request)

    async def list_environments(
        self, *, page_size: int = 100, page_token: str = ""
    ) -> environments_pb2.ListEnvironmentsResponse:
        request = environments_pb2.ListEnvironmentsRequest(**_list(page_size, page_token))
        return await self._call(self.environments.ListEnvironments, request)

    async def get_environment_catalog(self, name: str) -> environments_pb2.EnvironmentCatalog:
        """The environment's node catalog, its ``object_info_json`` exactly as the engine
        answered (``comfyfleet.sdk.requests.object_info_of`` reads it as a dict)."""
        return await self._call(self.environments.GetEnvironmentCatalog, catalog_request(name))

    async def create_environment(
        self, spec: EnvironmentSpec, *, name: str = "", request_id: str = ""
    ) -> environments_pb2.Environment:
        """Declares an environment (admin keys only) from an Environment or a spec dict."""
        request = environment_request(spec, name=name, request_id=request_id)
        return await self._call(self.environments.CreateEnvironment, request)

    async def delete_environment(self, name: str) -> None:
        """Deletes an environment no queued or running execution uses (admin keys only)."""
        request = environments_pb2.DeleteEnvironmentRequest(name=name)
        await self._call(self.environments.DeleteEnvironment, request)

    async def set_default_environment(
        self, name: str, tenant_id: str = OWN_TENANT
    ) -> tenants_pb2.Tenant:
        """Sets the environment of a tenant's executions that name none; "" clears it
        (admin keys only)."""
        if tenant_id == OWN_TENANT:
            tenant_id = (await self.get_tenant()).id
        request = default_environment_request(tenant_id, name)
        return await self._call(self.tenants.UpdateTenant, request)

    async def get_tenant(self, tenant_id: str = OWN_TENANT) -> tenants_pb2.Tenant:
        request = tenants_pb2.GetTenantRequest(id=tenant_id)
        return await self._call(self.tenants.GetTenant, request)

    # Budgets

    async def get_budget(self, tenant_id: str = OWN_TENANT) -> tenants_pb2.TenantBudget:
        request = tenants_pb2.GetTenantBudgetRequest(tenant_id=tenant_id)
        return await self._call(self.tenants.GetTenantBudget, request)

    async def set_budget(self, tenant_id: str, limit_usd: float) -> tenants_pb2.TenantBudget:
        """Sets a tenant's monthly limit in US dollars, 0 for none (admin keys only)."""
        request = tenants_pb2.UpdateTenantBudgetRequest(tenant_id=tenant_id, limit_usd=limit_usd)
        return await self._call(self.tenants.UpdateTenantBudget, request)


class Client(_Stubs):
    """Blocking client with the same methods as :class:`AsyncClient`."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
    ) -> None:
        settings = settings or Settings.discover()
        channel = grpc.insecure_channel(settings.address, options=_OPTIONS)
        if interceptors:
            channel = grpc.intercept_channel(channel, *interceptors)
        super().__init__(channel, settings)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()

    def _call(self, method: Any, request: Any, *, retry: bool = True) -> Any:
        """As :meth:`AsyncClient._call`, blocking."""
        policy = self.settings.retry if retry else NO_RETRY
        if retry:
            with_request_id(request)
        attempt = 1
        while True:
            try:
                return method(request, metadata=self.settings.metadata())
            except grpc.RpcError as err:
                error = api_error(err)
            wait = policy.wait_before_retry(attempt, error)
            if wait is None:
                raise error
            time.sleep(wait)
            attempt += 1

    # Executions

    def submit(
        self, workflow: Mapping[str, Any] | str, inputs: Inputs | None = None, **kw: Any
    ) -> executions_pb2.Execution:
        kw["request_id"] = kw.get("request_id") or new_request_id()
        staged = {
            name: self._staged(name, source, kw["request_id"])
            for name, source in (inputs or {}).items()
        }
        return self._call(self.executions.CreateExecution, create_request(workflow, staged, **kw))

    def _staged(self, name: str, source: InputSource, request_id: str) -> InputSource:
        if not needs_upload(source, self.settings.upload_threshold_bytes):
            return source
        assert isinstance(source, Path | bytes)
        upload = self.upload_input(source, name, request_id=upload_request_id(request_id, name))
        return Uploaded(upload.id)

    def upload_input(
        self, source: Path | bytes, name: str = "", *, request_id: str = ""
    ) -> executions_pb2.InputUpload:
        name = name or (source.name if isinstance(source, Path) else "input")
        upload = self._call(
            self.executions.CreateInputUpload, upload_request(source, name, request_id)
        )
        put_upload(upload, source)
        return upload

    def get(self, execution_id: str) -> executions_pb2.Execution:
        request = executions_pb2.GetExecutionRequest(id=execution_id)
        return self._call(self.executions.GetExecution, request)

    def cancel(self, execution_id: str) -> executions_pb2.Execution:
        request = executions_pb2.CancelExecutionRequest(id=execution_id)
        return self._call(self.executions.CancelExecution, request)

    def list_executions(
        self,
        *,
        page_size: int = 50,
        page_token: str = "",
        state: str | int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> executions_pb2.ListExecutionsResponse:
        """One page of executions, newest first; ``labels`` keeps those carrying them all."""
        request = executions_pb2.ListExecutionsRequest(
            **_list(page_size, page_token, state=state_value(state), labels=dict(labels or {}))
        )
        return self._call(self.executions.ListExecutions, request)

    def watch(
        self, execution_id: str, after_sequence: int = 0
    ) -> Iterator[executions_pb2.WorkflowExecutionEvent]:
        """As :meth:`AsyncClient.watch`, blocking."""
        last, attempt = after_sequence, 1
        while True:
            request = executions_pb2.WatchExecutionRequest(id=execution_id, after_sequence=last)
            stream = self.executions.WatchExecution(request, metadata=self.settings.metadata())
            try:
                for event in stream:
                    last, attempt = max(last, event.sequence), 1
                    yield event
                return
            except grpc.RpcError as err:
                error = api_error(err)
            finally:
                stream.cancel()
            wait = self.settings.retry.wait_before_retry(attempt, error)
            if wait is None:
                raise error
            time.sleep(wait)
            attempt += 1

    def wait(self, execution_id: str) -> executions_pb2.Execution:
        for event in self.watch(execution_id):
            if event.status in TERMINAL:
                break
        return self.get(execution_id)

    def download_outputs(self, execution: executions_pb2.Execution, out_dir: Path) -> list[Path]:
        return [download(o.url, output_path(out_dir, o)) for o in execution.outputs]

    # Models

    def upload_model(
        self,
        path: Path,
        kind: str | int,
        *,
        name: str = "",
        progress: Progress | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = 0,
        parallel: int = PARALLEL_PARTS,
    ) -> models_pb2.Model:
        """Streams the file over gRPC, or above ``multipart_threshold`` bytes PUTs it in parts
        straight to object storage (``part_size`` 0 lets the platform choose)."""
        if path.stat().st_size <= multipart_threshold:
            stream = upload_requests(path, kind, name=name, progress=progress)
            return self._call(self.models.UploadModel, stream, retry=False)
        started = self._call(
            self.models.StartModelUpload, start_request(path, kind, name=name, part_size=part_size)
        )
        try:
            parts = put_parts(started, path, progress=progress, parallel=parallel)
            return self._call(self.models.CompleteModelUpload, complete_request(started, parts))
        except BaseException:
            self._abandon(started.upload_id)
            raise

    def _abandon(self, upload_id: str) -> None:
        """Best effort: the platform aborts uploads left open when they expire anyway."""
        with contextlib.suppress(ApiError):
            request = models_pb2.AbortModelUploadRequest(upload_id=upload_id)
            self._call(self.models.AbortModelUpload, request)

    def list_models(
        self, *, kind: str | int | None = None, page_size: int = 50, page_token: str = ""
    ) -> models_pb2.ListModelsResponse:
        chosen = model_type(kind) if kind is not None else 0
        request = models_pb2.ListModelsRequest(**_list(page_size, page_token, type=chosen))
        return self._call(self.models.ListModels, request)

    def delete_model(self, model_id: str) -> None:
        self._call(self.models.DeleteModel, models_pb2.DeleteModelRequest(id=model_id))

    # Webhooks

    def create_subscription(
        self, url: str, event_types: Sequence[str] = (), *, description: str = ""
    ) -> webhooks_pb2.Subscription:
        request = subscription_request(url, event_types, description)
        return self._call(self.webhooks.CreateSubscription, request)

    def list_subscriptions(
        self, *, page_size: int = 50, page_token: str = ""
    ) -> webhooks_pb2.ListSubscriptionsResponse:
        request = webhooks_pb2.ListSubscriptionsRequest(**_list(page_size, page_token))
        return self._call(self.webhooks.ListSubscriptions, request)

    def ping_subscription(self, subscription_id: str) -> webhooks_pb2.Delivery:
        request = webhooks_pb2.PingSubscriptionRequest(id=subscription_id)
        return self._call(self.webhooks.PingSubscription, request, retry=False)

    def delete_subscription(self, subscription_id: str) -> None:
        request = webhooks_pb2.DeleteSubscriptionRequest(id=subscription_id)
        self._call(self.webhooks.DeleteSubscription, request)

    def list_deliveries(
        self, subscription_id: str, *, page_size: int = 50, page_token: str = ""
    ) -> webhooks_pb2.ListDeliveriesResponse:
        request = webhooks_pb2.ListDeliveriesRequest(
            subscription_id=subscription_id, **_list(page_size, page_token)
        )
        return self._call(self.webhooks.ListDeliveries, request)

    # Tenants and keys

    def find_tenant(self, name: str) -> tenants_pb2.Tenant | None:
        """The tenant named ``name`` (admin keys only), or None."""
        token = ""
        while True:
            page = self._call(
                self.tenants.ListTenants,
                tenants_pb2.ListTenantsRequest(page_size=500, page_token=token),
            )
            for tenant in page.tenants:
                if tenant.name == name:
                    return tenant
            token = page.next_page_token
            if not token:
                return None

    def find_or_create_tenant(self, name: str) -> tenants_pb2.Tenant:
        """The tenant named ``name``, created when missing (admin keys only)."""
        found = self.find_tenant(name)
        if found is not None:
            return found
        request = tenants_pb2.CreateTenantRequest(tenant=tenants_pb2.Tenant(name=name))
        return self._call(self.tenants.CreateTenant, request)

    def create_key(
        self,
        tenant_id: str = OWN_TENANT,
        *,
        description: str = "",
        scopes: Sequence[str] = (),
    ) -> tenants_pb2.CreateApiKeyResponse:
        key = tenants_pb2.ApiKey(description=description, scopes=list(scopes))
        request = tenants_pb2.CreateApiKeyRequest(tenant_id=tenant_id, api_key=key)
        return self._call(self.tenants.CreateApiKey, request)

    def list_keys(self, tenant_id: str = OWN_TENANT) -> tenants_pb2.ListApiKeysResponse:
        request = tenants_pb2.ListApiKeysRequest(tenant_id=tenant_id)
        return self._call(self.tenants.ListApiKeys, request)

    def revoke_key(self, key_id: str, tenant_id: str = OWN_TENANT) -> tenants_pb2.ApiKey:
        request = tenants_pb2.RevokeApiKeyRequest(tenant_id=tenant_id, id=key_id)
        return self._call(self.tenants.RevokeApiKey, request)

    def get_budget(self, tenant_id: str = OWN_TENANT) -> tenants_pb2.TenantBudget:
        request = tenants_pb2.GetTenantBudgetRequest(tenant_id=tenant_id)
        return self._call(self.tenants.GetTenantBudget, request)

    # Environments

    def get_environment(self, name: str) -> environments_pb2.Environment:
        request = environments_pb2.GetEnvironmentRequest(name=name)
        return self._call(self.environments.GetEnvironment, request)

    def list_environments(
        self, *, page_size: int = 100, page_token: str = ""
    ) -> environments_pb2.ListEnvironmentsResponse:
        request = environments_pb2.ListEnvironmentsRequest(**_list(page_size, page_token))
        return self._call(self.environments.ListEnvironments, request)

    def get_environment_catalog(self, name: str) -> environments_pb2.EnvironmentCatalog:
        """The environment's node catalog, its ``object_info_json`` exactly as the engine
        answered (``comfyfleet.sdk.requests.object_info_of`` reads it as a dict)."""
        return self._call(self.environments.GetEnvironmentCatalog, catalog_request(name))

    def create_environment(
        self, spec: EnvironmentSpec, *, name: str = "", request_id: str = ""
    ) -> environments_pb2.Environment:
        """Declares an environment (admin keys only) from an Environment or a spec dict."""
        request = environment_request(spec, name=name, request_id=request_id)
        return self._call(self.environments.CreateEnvironment, request)

    def delete_environment(self, name: str) -> None:
        """Deletes an environment no queued or running execution uses (admin keys only)."""
        request = environments_pb2.DeleteEnvironmentRequest(name=name)
        self._call(self.environments.DeleteEnvironment, request)

    def set_default_environment(self, name: str, tenant_id: str = OWN_TENANT) -> tenants_pb2.Tenant:
        """Sets the environment of a tenant's executions that name none; "" clears it
        (admin keys only)."""
        if tenant_id == OWN_TENANT:
            tenant_id = self.get_tenant().id
        return self._call(self.tenants.UpdateTenant, default_environment_request(tenant_id, name))

    def get_tenant(self, tenant_id: str = OWN_TENANT) -> tenants_pb2.Tenant:
        return self._call(self.tenants.GetTenant, tenants_pb2.GetTenantRequest(id=tenant_id))

    def set_budget(self, tenant_id: str, limit_usd: float) -> tenants_pb2.TenantBudget:
        """Sets a tenant's monthly limit in US dollars, 0 for none (admin keys only)."""
        request = tenants_pb2.UpdateTenantBudgetRequest(tenant_id=tenant_id, limit_usd=limit_usd)
        return self._call(self.tenants.UpdateTenantBudget, request)
