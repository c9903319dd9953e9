"""Input files given by URL: downloaded by the gateway before the execution is stored.

The caller chooses the URL, so the download goes through the SSRF guard that webhook
deliveries use too (``comfyfleet.common.addresses``): every connection, redirects included, is
checked after DNS and refused when it leads to a private, loopback, link-local or metadata
address. Downloads are bounded in size and time; each failure names its input.
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from comfyfleet.common.addresses import AddressPolicy, AddressRefused
from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.executions.v1 import executions_pb2

MAX_REDIRECTS = 5
# Downloads of one request run at once, up to this many.
PARALLEL = 4


@dataclass(frozen=True)
class FetchSettings:
    max_bytes: int
    timeout_s: float
    policy: AddressPolicy


class FetchFailed(Exception):
    """Why one URL could not be downloaded, in words for the caller."""


class InputFetcher:
    """Turns ``InputFile``s with a ``url`` into ones with ``content``."""

    def __init__(self, session: aiohttp.ClientSession, settings: FetchSettings) -> None:
        self._session = session
        self.settings = settings

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: FetchSettings) -> AsyncIterator[InputFetcher]:
        connector = aiohttp.TCPConnector(
            limit=32,
            socket_factory=settings.policy.socket_factory,
            resolver=aiohttp.ThreadedResolver(),
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=settings.timeout_s),
            # No proxies from the environment: the guard must see the real destination.
            trust_env=False,
        )
        async with session:
            yield cls(session, settings)

    async def inline(
        self, inputs: Sequence[executions_pb2.InputFile]
    ) -> list[executions_pb2.InputFile]:
        """The inputs with every URL replaced by the bytes behind it; all failures at once."""
        gate = asyncio.Semaphore(PARALLEL)
        results = await asyncio.gather(*(self._inline_one(item, gate) for item in inputs))
        violations = [
            FieldViolation(f"inputs[{i}].url", str(r), "INPUT_FETCH_FAILED")
            for i, r in enumerate(results)
            if isinstance(r, FetchFailed)
        ]
        if violations:
            raise InvalidArgument(
                "an input file could not be downloaded", violations, reason="INPUT_FETCH_FAILED"
            )
        return [r for r in results if isinstance(r, executions_pb2.InputFile)]

    async def _inline_one(
        self, item: executions_pb2.InputFile, gate: asyncio.Semaphore
    ) -> executions_pb2.InputFile | FetchFailed:
        if item.WhichOneof("source") != "url":
            return item
        async with gate:
            try:
                content, content_type = await self.fetch(item.url)
            except FetchFailed as err:
                return err
        return executions_pb2.InputFile(
            name=item.name,
            content=content,
            content_type=item.content_type or content_type or _guess(item.name),
        )

    async def fetch(self, url: str) -> tuple[bytes, str]:
        """The body and media type at ``url``, or FetchFailed saying why not."""
        _check_url(url, self.settings.policy)
        try:
            async with self._session.get(url, max_redirects=MAX_REDIRECTS) as response:
                if response.status != 200:
                    raise FetchFailed(f"{url} answered HTTP {response.status}")
                body = await self._read(response)
                return body, response.content_type
        except AddressRefused as err:
            raise FetchFailed(str(err)) from None
        except TimeoutError:
            raise FetchFailed(f"no complete answer within {self.settings.timeout_s:g}s") from None
        except aiohttp.TooManyRedirects:
            raise FetchFailed(f"more than {MAX_REDIRECTS} redirects") from None
        except aiohttp.ClientError as err:
            raise FetchFailed(f"download failed: {_cause(err)}") from None
        except ValueError as err:  # a URL aiohttp cannot use that urlsplit accepted
            raise FetchFailed(f"not a usable URL: {err}") from None

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.settings.max_bytes
        if response.content_length is not None and response.content_length > limit:
            raise FetchFailed(f"the file is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise FetchFailed(f"the file is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _check_url(url: str, policy: AddressPolicy) -> None:
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # each may raise on a malformed netloc
    except ValueError as err:
        raise FetchFailed(f"not a valid URL: {err}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise FetchFailed("must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise FetchFailed("must not carry credentials; use a presigned URL")
    refusal = policy.refusal_for_host(host)
    if refusal is not None:
        raise FetchFailed(f"refused: {refusal}")


def _cause(err: BaseException) -> str:
    """The innermost reason, so a refused address reads as such, not as a connector error."""
    inner: BaseException = err
    while inner.__cause__ is not None or getattr(inner, "os_error", None) is not None:
        inner = getattr(inner, "os_error", None) or inner.__cause__  # type: ignore[assignment]
    return str(inner) or type(inner).__name__


def _guess(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
