"""S3 multipart uploads of model files: start, presigned part URLs, complete, abort.

The minio SDK keeps its multipart calls private (it assembles uploads itself in put_object),
but they are the plain S3 operations CreateMultipartUpload, CompleteMultipartUpload and
AbortMultipartUpload; presigned UploadPart URLs are PUTs carrying partNumber and uploadId.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from minio.datatypes import Part
from minio.error import S3Error

from comfyfleet.common.storage import MISSING_OBJECT, ObjectStore

CONTENT_TYPE = "application/octet-stream"
# What S3 answers when the listed parts cannot make the object; the client can fix its list.
PART_ERRORS = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall"})
NO_SUCH_UPLOAD = "NoSuchUpload"


@dataclass(frozen=True)
class UploadedPart:
    number: int
    etag: str


class PartsRejected(Exception):
    """Object storage refused the list of parts (wrong ETag, missing or too small part)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class UploadGone(Exception):
    """Object storage no longer knows the multipart upload (aborted or completed)."""


@dataclass
class MultipartStore:
    """Multipart uploads into one bucket of an ObjectStore."""

    store: ObjectStore

    async def start(self, key: str) -> str:
        """Begins a multipart upload to `key`; returns object storage's upload id."""
        headers: dict[str, str | list[str] | tuple[str]] = {"Content-Type": CONTENT_TYPE}
        return await asyncio.to_thread(
            self.store.client._create_multipart_upload, self.store.bucket, key, headers
        )

    def presign_part(self, key: str, upload_id: str, number: int, ttl_s: float) -> str:
        query = {"partNumber": str(number), "uploadId": upload_id}
        return self.store.presigner.urls("PUT", [key], ttl_s, query=query)[0]

    async def complete(self, key: str, upload_id: str, parts: list[UploadedPart]) -> None:
        listed = [Part(p.number, p.etag) for p in parts]
        try:
            await asyncio.to_thread(
                self.store.client._complete_multipart_upload,
                self.store.bucket,
                key,
                upload_id,
                listed,
            )
        except S3Error as err:
            if err.code in PART_ERRORS:
                raise PartsRejected(err.code, err.message or err.code) from None
            if err.code == NO_SUCH_UPLOAD:
                raise UploadGone(upload_id) from None
            raise

    async def abort(self, key: str, upload_id: str) -> None:
        """Frees the stored parts; an upload object storage no longer knows is already gone."""
        try:
            await asyncio.to_thread(
                self.store.client._abort_multipart_upload, self.store.bucket, key, upload_id
            )
        except S3Error as err:
            if err.code != NO_SUCH_UPLOAD:
                raise

    async def delete(self, key: str) -> None:
        """Deletes the object; one that is already gone is no error."""
        try:
            await self.store.delete(key)
        except S3Error as err:
            if err.code not in MISSING_OBJECT:
                raise
