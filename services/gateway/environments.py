"""The environment an execution runs in, and the node catalog its workflow is checked against.

An execution's environment is the one it names, else its tenant's default, else the
platform's (``COMFYFLEET_DEFAULT_ENVIRONMENT``). Environments and their catalogs live with
the scheduler; the gateway keeps each catalog parsed, by digest, and asks the scheduler
whether the digest changed at most every ``recheck_s`` seconds, so a request never parses a
catalog (a real ComfyUI's is 1-3 MB) unless the catalog changed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format

from comfyfleet.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    from_rpc_error,
)
from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.environments.v1 import environments_pb2, environments_pb2_grpc
from comfyfleet.workflow.objectinfo import ObjectInfoError, catalog_from_object_info
from comfyfleet.workflow.specs import NodeCatalog

NOT_FOUND = "ENVIRONMENT_NOT_FOUND"
PENDING = "ENVIRONMENT_CATALOG_PENDING"
# Parsed catalogs kept (by digest): a platform runs a handful of environments.
MAX_PARSED = 16


def resolve_environment(requested: str, tenant_default: str, platform_default: str) -> str:
    """The environment an execution runs in: its own, its tenant's default, the platform's."""
    return requested or tenant_default or platform_default


def unknown_environment(
    name: str, why: str = "no environment has this name", field: str = "environment"
) -> InvalidArgument:
    return InvalidArgument(
        f"environment {name!r} does not exist",
        [FieldViolation(field, why, NOT_FOUND)],
        reason=NOT_FOUND,
        metadata={"environment": name},
    )


def pending_catalog(name: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"the node catalog of environment {name!r} is not known yet: no executor of it has"
        " registered, so its workflows cannot be validated; start one (or scale its pool up)"
        " and try again",
        reason=PENDING,
        metadata={"environment": name},
    )


@dataclass
class _Known:
    digest: str
    catalog: NodeCatalog
    checked_at: float


class EnvironmentCatalogs:
    """Parsed node catalogs of environments, read from the scheduler's EnvironmentService."""

    def __init__(
        self,
        scheduler: environments_pb2_grpc.EnvironmentServiceStub,
        *,
        recheck_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scheduler = scheduler
        self.recheck_s = recheck_s
        self.clock = clock
        self._known: dict[str, _Known] = {}
        self._parsed: OrderedDict[str, NodeCatalog] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def catalog(self, name: str, tenant_id: str) -> NodeCatalog:
        """The catalog of environment ``name``: INVALID_ARGUMENT (field ``environment``) when
        it does not exist, FAILED_PRECONDITION while its catalog is not known."""
        fresh = self._fresh(name)
        if fresh is not None:
            return fresh
        # One refresh per environment at a time: a burst of submissions waits for it.
        async with self._locks.setdefault(name, asyncio.Lock()):
            fresh = self._fresh(name)
            if fresh is not None:
                return fresh
            return await self._refresh(name, tenant_metadata(tenant_id))

    async def describe(
        self, name: str, tenant_id: str, field: str = "environment"
    ) -> environments_pb2.Environment:
        """Environment ``name``; INVALID_ARGUMENT naming ``field`` when it does not exist."""
        return await self._environment(name, tenant_metadata(tenant_id), field)

    def forget(self, name: str) -> None:
        """Drops what is known of ``name`` (deleted or redeclared here)."""
        self._known.pop(name, None)

    def _fresh(self, name: str) -> NodeCatalog | None:
        known = self._known.get(name)
        if known is None or self.clock() - known.checked_at >= self.recheck_s:
            return None
        return known.catalog

    async def _refresh(self, name: str, metadata: tuple[tuple[str, str], ...]) -> NodeCatalog:
        env = await self._environment(name, metadata)
        if env.catalog_state != environments_pb2.CATALOG_STATE_KNOWN:
            self.forget(name)
            raise pending_catalog(name)
        digest = env.catalog_digest
        catalog = self._parsed.get(digest)
        if catalog is None:
            digest, catalog = await self._fetch(name, metadata)
        self._known[name] = _Known(digest, catalog, self.clock())
        return catalog

    async def _environment(
        self, name: str, metadata: tuple[tuple[str, str], ...], field: str = "environment"
    ) -> environments_pb2.Environment:
        request = environments_pb2.GetEnvironmentRequest(name=name)
        try:
            return await self.scheduler.GetEnvironment(request, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                self.forget(name)
                raise unknown_environment(name, field=field) from None
            if err.code() == grpc.StatusCode.INVALID_ARGUMENT:  # not a possible name
                why = err.details() or "not an environment name"
                raise unknown_environment(name, why, field) from None
            raise from_rpc_error(err) from None

    async def _fetch(
        self, name: str, metadata: tuple[tuple[str, str], ...]
    ) -> tuple[str, NodeCatalog]:
        request = environments_pb2.GetEnvironmentCatalogRequest(
            name=name, view=environments_pb2.CATALOG_VIEW_JSON
        )
        try:
            answer = await self.scheduler.GetEnvironmentCatalog(request, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                self.forget(name)
                raise unknown_environment(name) from None
            raise from_rpc_error(err) from None
        catalog = self._parsed.get(answer.digest)
        if catalog is None:
            # Parsed aside: a large catalog would hold up every other request meanwhile.
            catalog = await asyncio.to_thread(_parse, name, answer)
            self._remember(answer.digest, catalog)
        return answer.digest, catalog

    def _remember(self, digest: str, catalog: NodeCatalog) -> None:
        self._parsed[digest] = catalog
        while len(self._parsed) > MAX_PARSED:
            self._parsed.popitem(last=False)


def _parse(name: str, answer: environments_pb2.EnvironmentCatalog) -> NodeCatalog:
    """The answer's catalog: its exact JSON text, or (from a scheduler that ignores the view)
    its Struct, whose numbers are all doubles."""
    try:
        if answer.object_info_json:
            object_info: Any = json.loads(answer.object_info_json)
        else:
            object_info = json_format.MessageToDict(answer.object_info)
        return catalog_from_object_info(object_info)
    except (ValueError, ObjectInfoError) as err:
        raise FailedPrecondition(
            f"the node catalog of environment {name!r} cannot be read: {err}",
            reason="ENVIRONMENT_CATALOG_INVALID",
            metadata={"environment": name},
        ) from None
