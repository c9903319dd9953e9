"""comfyfleet.models.v1.ModelService: proto <-> registry, the tenant from the call metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf import struct_pb2

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.common.tenancy import tenant_of
from comfyfleet.common.timeutil import to_timestamp
from comfyfleet.models.v1 import models_pb2, models_pb2_grpc
from services.models.multipart import UploadedPart
from services.models.registry import FolderReference, ModelRegistry, ResolvedModel
from services.models.repository import ModelRecord
from services.models.uploads import ModelUploads, UploadRequest

_PREFIX = "MODEL_TYPE_"


def kind_of_type(model_type: int) -> str:
    """MODEL_TYPE_LORA -> "lora"; "" for unspecified or unknown values."""
    if model_type == models_pb2.MODEL_TYPE_UNSPECIFIED:
        return ""
    try:
        return models_pb2.ModelType.Name(model_type).removeprefix(_PREFIX).lower()  # type: ignore[arg-type]
    except ValueError:
        return ""


def type_of_kind(kind: str) -> models_pb2.ModelType:
    return models_pb2.ModelType.Value(_PREFIX + kind.upper())


def model_message(record: ModelRecord) -> models_pb2.Model:
    metadata = struct_pb2.Struct()
    metadata.update(record.metadata)
    return models_pb2.Model(
        id=record.id,
        tenant=record.tenant,
        name=record.name,
        type=type_of_kind(record.kind),
        version=record.version,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        format=record.format,
        metadata=metadata,
        create_time=to_timestamp(record.created_at),
    )


def _resolved_message(resolved: ResolvedModel) -> models_pb2.ResolvedModel:
    return models_pb2.ResolvedModel(
        node_id=resolved.reference.node_id,
        input_name=resolved.reference.input_name,
        model=model_message(resolved.model),
        download_url=resolved.download_url,
        folder=resolved.folder,
    )


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry, uploads: ModelUploads) -> None:
        self.registry = registry
        self.uploads = uploads

    async def UploadModel(
        self,
        request_iterator: AsyncIterator[models_pb2.UploadModelRequest],
        context: grpc.aio.ServicerContext,
    ) -> models_pb2.Model:
        tenant = tenant_of(context)
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("part") != "model":
            raise _violation("model", "the first message must carry the model's name and type")
        kind = kind_of_type(first.model.type)
        record = await self.registry.upload(
            tenant, first.model.name, kind, _chunks(request_iterator)
        )
        return model_message(record)

    async def StartModelUpload(
        self, request: models_pb2.StartModelUploadRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.StartModelUploadResponse:
        started = await self.uploads.start(
            UploadRequest(
                tenant=tenant_of(context),
                name=request.model.name,
                kind=kind_of_type(request.model.type),
                size_bytes=request.size_bytes,
                sha256=request.sha256.lower(),
                part_size=request.part_size,
                request_id=request.request_id,
            )
        )
        return models_pb2.StartModelUploadResponse(
            upload_id=started.id,
            part_size=started.part_size,
            parts=[
                models_pb2.UploadPartTarget(part_number=p.number, url=p.url) for p in started.parts
            ],
            expire_time=to_timestamp(started.expire_time),
        )

    async def CompleteModelUpload(
        self, request: models_pb2.CompleteModelUploadRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.Model:
        parts = [UploadedPart(p.part_number, p.etag) for p in request.parts]
        record = await self.uploads.complete(tenant_of(context), request.upload_id, parts)
        return model_message(record)

    async def AbortModelUpload(
        self, request: models_pb2.AbortModelUploadRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.AbortModelUploadResponse:
        await self.uploads.abort(tenant_of(context), request.upload_id)
        return models_pb2.AbortModelUploadResponse()

    async def GetModel(
        self, request: models_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.Model:
        return model_message(await self.registry.get(tenant_of(context), request.id))

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        kind = kind_of_type(request.type) or None
        if request.type and kind is None:
            raise _violation("type", f"unknown model type {request.type}")
        records, token = await self.registry.list_page(
            tenant_of(context), kind, request.page_size, request.page_token
        )
        return models_pb2.ListModelsResponse(
            models=[model_message(r) for r in records], next_page_token=token
        )

    async def DeleteModel(
        self, request: models_pb2.DeleteModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.DeleteModelResponse:
        await self.registry.delete(tenant_of(context), request.id)
        return models_pb2.DeleteModelResponse()

    async def ResolveModels(
        self, request: models_pb2.ResolveModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ResolveModelsResponse:
        tenant = tenant_of(context)
        if request.references:
            refs = [
                FolderReference(r.node_id, r.input_name, r.name, r.folder)
                for r in request.references
            ]
            resolved = await self.registry.resolve_references(tenant, refs)
        else:
            resolved = await self.registry.resolve(tenant, request.workflow_json)
        return models_pb2.ResolveModelsResponse(models=[_resolved_message(r) for r in resolved])


async def _chunks(requests: AsyncIterator[models_pb2.UploadModelRequest]) -> AsyncIterator[bytes]:
    async for request in requests:
        if request.WhichOneof("part") != "chunk":
            raise _violation("model", "only the first message may carry the model")
        yield request.chunk


def _violation(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(description, [FieldViolation(field, description)])
