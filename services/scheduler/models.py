"""The models a workflow needs, resolved by the models service when the execution is
submitted, so an unknown model is refused before anything is stored. Which inputs name
models, and which of those the environment carries, its node catalog says
(``comfyfleet.workflow.objectinfo.model_references``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from comfyfleet.common.errors import from_rpc_error
from comfyfleet.common.grpcserver import channel
from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.models.v1 import models_pb2, models_pb2_grpc
from comfyfleet.workflow.objectinfo import ModelReference

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelNeed:
    """A model file the executor must have in its cache, pinned to one version."""

    name: str
    folder: str
    sha256: str
    size_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "folder": self.folder,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ModelNeed:
        return cls(doc["name"], doc["folder"], doc["sha256"], int(doc["size_bytes"]))


def needs_of(resolved: Iterable[models_pb2.ResolvedModel]) -> list[ModelNeed]:
    """One need per file: nodes that name the same model share it."""
    seen: dict[tuple[str, str], ModelNeed] = {}
    for r in resolved:
        need = ModelNeed(r.model.name, r.folder, r.model.sha256, r.model.size_bytes)
        seen.setdefault((need.folder, need.name), need)
    return sorted(seen.values(), key=lambda n: (n.folder, n.name))


class ModelResolver:
    """Calls ``ModelService.ResolveModels`` as the tenant. Without an address, resolution is
    off: workflows are queued without models (for platforms without a model registry)."""

    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    async def resolve(self, tenant: str, references: Sequence[ModelReference]) -> list[ModelNeed]:
        """The registered models the references name, pinned; the models service's error
        (INVALID_ARGUMENT naming every unregistered model, UNAVAILABLE, ...) is passed on
        unchanged. No references (every model the workflow names is one its environment
        carries) asks nothing."""
        if not self.address or not references:
            return []
        if self._channel is None:
            self._channel = channel(self.address)
        stub = models_pb2_grpc.ModelServiceStub(self._channel)
        request = models_pb2.ResolveModelsRequest(
            references=[
                models_pb2.ModelReference(
                    node_id=r.node_id, input_name=r.input_name, name=r.name, folder=r.folder or ""
                )
                for r in references
            ]
        )
        try:
            response = await stub.ResolveModels(
                request, metadata=tenant_metadata(tenant), timeout=self.timeout_s
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from err
        return needs_of(response.models)

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
