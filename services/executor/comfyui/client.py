"""ComfyUI's HTTP API and websocket, over one aiohttp session.

Any way ComfyUI fails to answer (refused connection, reset, timeout, a 5xx) becomes
:class:`ComfyUIUnavailable`: a retryable failure of the infrastructure, never of the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from comfyfleet.common.errors import Unavailable
from services.executor.comfyui.protocol import OutputRef, rejection

# Websocket messages can carry tracebacks and tensor reprs (execution_error).
MAX_MESSAGE_BYTES = 64 * 1024**2


class ComfyUIUnavailable(Unavailable):
    """ComfyUI did not answer as a working server would."""

    reason = "COMFYUI_UNAVAILABLE"


@dataclass(frozen=True)
class Submitted:
    prompt_id: str
    # Errors of outputs that did not validate; ComfyUI runs the others.
    node_errors: Mapping[str, Any]


@dataclass
class MessageStream:
    """The websocket's decoded JSON messages, read by a task into a queue.

    Binary frames (previews) are dropped. ``closed`` turns true once the socket ended.
    """

    ws: aiohttp.ClientWebSocketResponse
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    closed: bool = False

    async def pump(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._put(msg.data)
        except (aiohttp.ClientError, OSError, ValueError):
            pass
        finally:
            self.closed = True

    def _put(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict):
            self.queue.put_nowait(message)

    async def next(self, timeout: float) -> dict[str, Any] | None:  # noqa: ASYNC109
        """The next message, or None when none came within ``timeout``."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        try:
            async with asyncio.timeout(timeout):
                return await self.queue.get()
        except TimeoutError:
            return None


class SharedSession:
    """The aiohttp session an engine's runs share, so they reuse its keep-alive connections.

    Made on first use, on the event loop that uses it. :meth:`close` drops it when its
    connections may lead nowhere (ComfyUI restarted, or stopped answering); the next
    :meth:`client` makes another.
    """

    def __init__(self, request_timeout_s: float) -> None:
        limit = request_timeout_s
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=limit, sock_read=limit)
        self._http: aiohttp.ClientSession | None = None

    def client(self, base_url: str) -> ComfyUIClient:
        """A client of the ComfyUI at ``base_url``; call on the session's event loop."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        return ComfyUIClient(self._http, base_url)

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()


class ComfyUIClient:
    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    @contextlib.contextmanager
    def _answering(self, what: str) -> Iterator[None]:
        try:
            yield
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            detail = str(err) or type(err).__name__
            raise ComfyUIUnavailable(
                f"ComfyUI at {self.base_url} did not answer {what}: {detail}"
            ) from err

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        what = f"{method} {path}"
        with self._answering(what):
            async with self.http.request(method, self.base_url + path, **kwargs) as response:
                if response.status != 200:
                    raise ComfyUIUnavailable(f"ComfyUI answered {response.status} to {what}")
                return await _json_or_none(response)

    async def system_stats(self) -> Mapping[str, Any]:
        return await self._json("GET", "/system_stats")  # type: ignore[no-any-return]

    async def object_info(self) -> Mapping[str, Any]:
        info = await self._json("GET", "/object_info")
        if not isinstance(info, Mapping):
            raise ComfyUIUnavailable("ComfyUI answered GET /object_info with no node types")
        return info

    async def upload_input(self, data: bytes, name: str) -> None:
        """Puts one input file where LoadImage finds it as ``name`` (``sub/x.png`` allowed)."""
        subfolder, _, filename = name.rpartition("/")
        form = aiohttp.FormData()
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        form.add_field("image", data, filename=filename, content_type=content_type)
        form.add_field("subfolder", subfolder)
        form.add_field("type", "input")
        # Without it ComfyUI keeps an older file of that name and renames the new one.
        form.add_field("overwrite", "true")
        await self._json("POST", "/upload/image", data=form)

    async def submit(self, prompt: Mapping[str, Any], client_id: str) -> Submitted:
        """``POST /prompt``; raises WorkflowRejected when ComfyUI refuses the workflow."""
        payload = {"prompt": prompt, "client_id": client_id}
        with self._answering("POST /prompt"):
            async with self.http.post(self.base_url + "/prompt", json=payload) as response:
                body = await _json_or_none(response)
                if response.status == 400:
                    raise rejection(body)
                if response.status != 200 or not isinstance(body, Mapping):
                    raise ComfyUIUnavailable(f"ComfyUI answered {response.status} to POST /prompt")
        node_errors = body.get("node_errors")
        return Submitted(
            str(body["prompt_id"]), node_errors if isinstance(node_errors, Mapping) else {}
        )

    async def history(self, prompt_id: str) -> Mapping[str, Any] | None:
        """The prompt's history entry; None until the prompt ended."""
        body = await self._json("GET", f"/history/{prompt_id}")
        entry = body.get(prompt_id) if isinstance(body, Mapping) else None
        return entry if isinstance(entry, Mapping) else None

    async def queued(self) -> set[str]:
        """The ids of the prompts running or waiting."""
        body = await self._json("GET", "/queue")
        ids: set[str] = set()
        for key in ("queue_running", "queue_pending"):
            for item in body.get(key, ()) if isinstance(body, Mapping) else ():
                if isinstance(item, list) and len(item) > 1:
                    ids.add(str(item[1]))
        return ids

    async def interrupt(self, prompt_id: str) -> None:
        # ComfyUI 0.3.6x interrupts only the named prompt; older versions ignore the body.
        await self._json("POST", "/interrupt", json={"prompt_id": prompt_id})
        await self._json("POST", "/queue", json={"delete": [prompt_id]})

    async def view(self, ref: OutputRef) -> tuple[bytes, str]:
        """The bytes of one output file and their content type."""
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        what = f"GET /view for {ref.subfolder}/{ref.filename}".replace("//", "/")
        with self._answering(what):
            async with self.http.get(self.base_url + "/view", params=params) as response:
                if response.status != 200:
                    raise ComfyUIUnavailable(f"ComfyUI answered {response.status} to {what}")
                data = await response.read()
                guessed = mimetypes.guess_type(ref.filename)[0]
                return data, guessed or response.content_type or "application/octet-stream"

    @contextlib.asynccontextmanager
    async def messages(self, client_id: str) -> AsyncIterator[MessageStream]:
        """The websocket of ``client_id``, open for the block, read in the background."""
        with self._answering("the websocket"):
            ws = await self.http.ws_connect(
                f"{self.base_url}/ws",
                params={"clientId": client_id},
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                max_msg_size=MAX_MESSAGE_BYTES,
            )
        stream = MessageStream(ws)
        reader = asyncio.create_task(stream.pump(), name=f"comfyui ws {client_id}")
        try:
            yield stream
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await ws.close()


async def _json_or_none(response: aiohttp.ClientResponse) -> Any:
    try:
        return await response.json(content_type=None)
    except ValueError:
        return None
