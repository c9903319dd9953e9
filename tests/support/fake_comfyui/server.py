"""A test-only ComfyUI server that speaks the protocol captured from ComfyUI 0.3.64.

It queues prompts and "runs" them one at a time, sending the websocket messages, in the
order and shapes of ``ws_trace.json`` and filling ``/history`` as ComfyUI does, with the
submitted prompt's ids. It computes nothing: output nodes save canned files from
``shared/comfyui/reference``, the captured runtime error is raised where ComfyUI raised it,
and the captured bad workflows get the captured ``POST /prompt`` answers. Its node cache
follows ComfyUI's (an identical resubmission is answered from it).

:class:`Behaviour` makes it misbehave: answer 503 while "starting", take time per node, fall
silent on the websocket or drop it at a node, or crash (the process exits) at a node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.fake_comfyui import plan, reference


@dataclass
class Behaviour:
    # Every request is answered 503 this long after the server started.
    unavailable_for_s: float = 0.0
    # How long each node that is not cached "runs" (an interrupt stops it at once).
    node_seconds: float = 0.0
    # From this node's start on, the websocket carries nothing more for the prompt.
    silent_from_node: str | None = None
    # At this node's start every websocket is closed (the server goes on).
    drop_sockets_at_node: str | None = None
    # At this node's start the server dies (``crash`` is called, by default the process exits).
    crash_at_node: str | None = None
    # When set, crash only if this file does not exist yet, and create it: crash once.
    crash_marker: Path | None = None
    # POST /interrupt is answered but stops nothing (a node stuck outside its checks).
    ignore_interrupts: bool = False


@dataclass
class QueueItem:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra: dict[str, Any]
    outputs: list[str]
    # The prompt as the canned references name it: uploaded files by their base name.
    canonical: dict[str, Any] = field(default_factory=dict)

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra, self.outputs]


def _canonical(prompt: Any, input_dir: Path) -> Any:
    """``prompt`` as the canned references name it, so that a graph that differs from a
    reference run only where the engine moved things still finds that run's answers: a
    literal naming an uploaded file in a subfolder of the input directory (``sub/x.png``) cut
    to the file's base name, a ``filename_prefix`` out of its ``comfyfleet-*`` folder, and
    inputs the node type does not declare (which ComfyUI ignores) left out."""
    if not isinstance(prompt, dict):
        return prompt
    out: dict[str, Any] = {}
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            out[node_id] = node
            continue
        declared = _declared_inputs(node.get("class_type"))
        inputs = {
            k: _canonical_value(k, v, input_dir)
            for k, v in node["inputs"].items()
            if declared is None or k in declared
        }
        out[node_id] = {**node, "inputs": inputs}
    return out


def _declared_inputs(class_type: Any) -> set[str] | None:
    info = reference.object_info().get(class_type) if isinstance(class_type, str) else None
    if not isinstance(info, dict):
        return None
    sections = info.get("input", {})
    return {name for section in ("required", "optional") for name in sections.get(section, {})}


def _canonical_value(name: str, value: Any, input_dir: Path) -> Any:
    if not isinstance(value, str) or "/" not in value:
        return value
    if name == "filename_prefix" and value.startswith("comfyfleet-"):
        return value.partition("/")[2]
    return value.rpartition("/")[2] if (input_dir / value).is_file() else value


def _now_ms() -> int:
    return int(time.time() * 1000)


def _exit_now() -> None:
    sys.stdout.flush()
    os._exit(3)


@dataclass
class _Run:
    """What one prompt's execution collects."""

    item: QueueItem
    signatures: dict[str, str]
    cached: list[str]
    history_messages: list[list[Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    silent: bool = False


class FakeComfyUI:
    def __init__(
        self,
        input_dir: Path,
        output_dir: Path,
        behaviour: Behaviour | None = None,
        crash: Callable[[], None] = _exit_now,
        model_paths: dict[str, list[Path]] | None = None,
    ) -> None:
        self.input_dir = input_dir
        # Model folder name -> the folders it lists, as --extra-model-paths-config sets them.
        self.model_paths = model_paths or {}
        self.output_dir = output_dir
        self.temp_dir = output_dir.parent / "temp"
        for folder in (input_dir, output_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.behaviour = behaviour or Behaviour()
        self.crash = crash
        self.started_at = time.monotonic()
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.pending: list[QueueItem] = []
        self.running: QueueItem | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.cache: dict[str, dict[str, Any] | None] = {}
        self.number = 0
        self.submissions: list[Any] = []
        self.interrupts: list[Any] = []
        # The client's port of each HTTP request (websockets aside): one per connection.
        self.client_ports: list[int] = []
        self._wake = asyncio.Event()
        self._interrupt = asyncio.Event()

    # ------------------------------------------------------------------ app

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._starting], client_max_size=100 * 1024**2)
        app.add_routes(
            [
                web.get("/ws", self._websocket),
                web.get("/system_stats", self._system_stats),
                web.get("/object_info", self._object_info),
                web.get("/object_info/{node_class}", self._object_info_node),
                web.post("/prompt", self._post_prompt),
                web.get("/prompt", self._get_prompt),
                web.get("/queue", self._get_queue),
                web.post("/queue", self._post_queue),
                web.post("/interrupt", self._post_interrupt),
                web.get("/history", self._get_history),
                web.get("/history/{prompt_id}", self._get_history_entry),
                web.post("/upload/image", self._upload_image),
                web.get("/view", self._view),
                web.get("/models/{folder}", self._models),
            ]
        )
        app.cleanup_ctx.append(self._worker_ctx)
        app.on_shutdown.append(self._close_sockets)
        return app

    @web.middleware
    async def _starting(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path != "/ws" and request.transport is not None:
            self.client_ports.append(request.transport.get_extra_info("peername")[1])
        if time.monotonic() - self.started_at < self.behaviour.unavailable_for_s:
            return web.Response(status=503, text="starting")
        return await handler(request)

    async def _worker_ctx(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._worker())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self.sockets.values()):
            await ws.close()

    # ------------------------------------------------------------------ messages

    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running is not None else 0)

    async def _send(self, type_: str, data: dict[str, Any], sid: str | None = None) -> None:
        """To one socket, or to every socket when ``sid`` is None (as ComfyUI's send_sync)."""
        text = json.dumps({"type": type_, "data": data})
        targets = list(self.sockets.values()) if sid is None else [self.sockets.get(sid)]
        for ws in targets:
            if ws is not None and not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(text)

    async def _queue_updated(self) -> None:
        await self._send(
            "status", {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}
        )

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = ws
        try:
            status = {"exec_info": {"queue_remaining": self.queue_remaining()}}
            await ws.send_str(
                json.dumps({"type": "status", "data": {"status": status, "sid": sid}})
            )
            async for _ in ws:
                pass
        finally:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
        return ws

    # ------------------------------------------------------------------ simple routes

    async def _system_stats(self, request: web.Request) -> web.Response:
        device = {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": 0,
            "vram_free": 0,
            "torch_vram_total": 0,
            "torch_vram_free": 0,
        }
        system = {
            "os": os.name,
            "ram_total": 0,
            "ram_free": 0,
            "comfyui_version": "0.3.64",
            "python_version": sys.version,
            "pytorch_version": "none (fake)",
            "embedded_python": False,
            "argv": sys.argv,
        }
        return web.json_response({"system": system, "devices": [device]})

    async def _object_info(self, request: web.Request) -> web.Response:
        return web.json_response(reference.object_info())

    async def _object_info_node(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        info = reference.object_info()
        return web.json_response({name: info[name]} if name in info else {})

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": self.queue_remaining()}})

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = [self.running.as_list()] if self.running else []
        return web.json_response(
            {"queue_running": running, "queue_pending": [i.as_list() for i in self.pending]}
        )

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.pending.clear()
        for prompt_id in body.get("delete", ()):
            self.pending = [i for i in self.pending if i.prompt_id != prompt_id]
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        self.interrupts.append(body)
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        # ComfyUI 0.3.6x: with a prompt id, only that prompt is interrupted, when it runs.
        running = self.running is not None and self.running.prompt_id == prompt_id
        if (prompt_id is None or running) and not self.behaviour.ignore_interrupts:
            self._interrupt.set()
        return web.Response(status=200)

    async def _models(self, request: web.Request) -> web.Response:
        """ComfyUI's model file list of one folder: names relative to its model paths."""
        roots = self.model_paths.get(request.match_info["folder"])
        if roots is None:
            return web.Response(status=404)
        names = {
            p.relative_to(root).as_posix()
            for root in roots
            if root.is_dir()
            for p in root.rglob("*")
            if p.is_file()
        }
        return web.json_response(sorted(names))

    async def _get_history(self, request: web.Request) -> web.Response:
        return web.json_response(self.history)

    async def _get_history_entry(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    def _folder(self, type_: str) -> Path | None:
        return {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}.get(
            type_
        )

    async def _upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        folder = self._folder(str(post.get("type") or "input"))
        subfolder = str(post.get("subfolder") or "")
        if folder is None:
            return web.Response(status=400)
        target_dir = (folder / subfolder).resolve()
        if not target_dir.is_relative_to(folder.resolve()):
            return web.Response(status=400)
        data = image.file.read()
        name = _free_name(
            target_dir, image.filename, data, str(post.get("overwrite")) in {"true", "1"}
        )
        target_dir.mkdir(parents=True, exist_ok=True)
        (target_dir / name).write_bytes(data)
        return web.json_response(
            {"name": name, "subfolder": subfolder, "type": post.get("type") or "input"}
        )

    async def _view(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        filename = query.get("filename", "")
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        folder = self._folder(query.get("type", "output"))
        if folder is None:
            return web.Response(status=400)
        directory = (folder / query.get("subfolder", "")).resolve()
        if not directory.is_relative_to(folder.resolve()):
            return web.Response(status=403)
        path = directory / os.path.basename(filename)
        if not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{path.name}"'})

    # ------------------------------------------------------------------ POST /prompt

    async def _post_prompt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            broken = reference.malformed_json_answer()
            return web.Response(status=broken.status, text=broken.body)
        self.submissions.append(body)
        if "prompt" not in body:
            missing = reference.no_prompt_answer()
            return web.json_response(missing.body, status=missing.status)
        prompt = body["prompt"]
        canonical = _canonical(prompt, self.input_dir)
        answer = reference.canned_answer(canonical) or _check(prompt)
        if answer is not None and answer.status != 200:
            return web.json_response(answer.body, status=answer.status)
        node_errors = answer.body["node_errors"] if answer is not None else {}
        failed = {o for n in node_errors.values() for o in n.get("dependent_outputs", ())}
        outputs = [n for n in _output_nodes(prompt) if n not in failed]
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        item = QueueItem(self.number, str(uuid.uuid4()), prompt, extra, outputs, canonical)
        self.number += 1
        self.pending.append(item)
        self._wake.set()
        await self._queue_updated()
        return web.json_response(
            {"prompt_id": item.prompt_id, "number": item.number, "node_errors": node_errors}
        )

    # ------------------------------------------------------------------ execution

    async def _worker(self) -> None:
        while True:
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            item = self.pending.pop(0)
            self.running = item
            self._interrupt.clear()
            await self._queue_updated()
            await self._execute(item)

    async def _execute(self, item: QueueItem) -> None:
        keys = plan.signatures(item.prompt, lambda name: self.input_dir / name)
        cached = [n for n in item.prompt if keys[n] in self.cache]
        run = _Run(item, keys, cached)
        await self._message(
            run, "execution_start", {"prompt_id": item.prompt_id, "timestamp": _now_ms()}
        )
        await self._message(
            run,
            "execution_cached",
            {"nodes": cached, "prompt_id": item.prompt_id, "timestamp": _now_ms()},
        )
        order = plan.execution_order(
            item.prompt, item.outputs, set(cached), set(_output_nodes(item.prompt))
        )
        status = "success"
        for node_id in order:
            status = await self._node(run, node_id)
            if status != "success":
                break
        if status == "success":
            await self._message(
                run, "execution_success", {"prompt_id": item.prompt_id, "timestamp": _now_ms()}
            )
        self._remember(run)
        await self._finish(run, status)

    async def _message(self, run: _Run, type_: str, data: dict[str, Any]) -> None:
        """A job message: to the prompt's socket, and kept for /history when ComfyUI keeps it."""
        if type_ in {
            "execution_start",
            "execution_cached",
            "execution_success",
            "execution_error",
            "execution_interrupted",
        }:
            run.history_messages.append([type_, data])
        if not run.silent and "client_id" in run.item.extra:
            await self._send(type_, data, run.item.extra["client_id"])

    async def _progress(self, run: _Run, node_id: str, state: str, value: Any, top: Any) -> None:
        run.progress[node_id] = {
            "value": value,
            "max": top,
            "state": state,
            "node_id": node_id,
            "prompt_id": run.item.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        nodes = {k: dict(v) for k, v in run.progress.items()}
        await self._message(
            run, "progress_state", {"prompt_id": run.item.prompt_id, "nodes": nodes}
        )

    async def _executed(self, run: _Run, node_id: str, ui: dict[str, Any]) -> None:
        run.outputs[node_id] = ui
        data = {
            "node": node_id,
            "display_node": node_id,
            "output": ui,
            "prompt_id": run.item.prompt_id,
        }
        await self._message(run, "executed", data)

    async def _node(self, run: _Run, node_id: str) -> str:
        """Runs one node; "success", "error" or "interrupted"."""
        if node_id in run.cached:
            ui = self.cache[run.signatures[node_id]]
            if ui is not None:
                await self._executed(run, node_id, ui)
            await self._progress(run, node_id, "finished", 1, 1)
            return "success"
        await self._misbehave(run, node_id)
        await self._progress(run, node_id, "running", 0.0, 1.0)
        data = {"node": node_id, "display_node": node_id, "prompt_id": run.item.prompt_id}
        await self._message(run, "executing", data)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._interrupt.wait(), self.behaviour.node_seconds)
        if self._interrupt.is_set():
            await self._stopped(run, node_id, "execution_interrupted", {})
            return "interrupted"
        error = reference.captured_error(run.item.canonical)
        if error is not None and error["node_id"] == node_id:
            await self._stopped(run, node_id, "execution_error", error)
            return "error"
        if node_id in _output_nodes(run.item.prompt):
            await self._executed(
                run, node_id, await asyncio.to_thread(self._save, run.item, node_id)
            )
        await self._progress(run, node_id, "finished", 1.0, 1.0)
        run.executed.append(node_id)
        return "success"

    async def _stopped(self, run: _Run, node_id: str, type_: str, captured: dict[str, Any]) -> None:
        data: dict[str, Any] = {
            "prompt_id": run.item.prompt_id,
            "node_id": node_id,
            "node_type": run.item.prompt[node_id].get("class_type"),
            "executed": sorted(run.executed),
        }
        for key in (
            "exception_message",
            "exception_type",
            "traceback",
            "current_inputs",
            "current_outputs",
        ):
            if key in captured:
                data[key] = captured[key]
        data["timestamp"] = _now_ms()
        await self._message(run, type_, data)

    async def _misbehave(self, run: _Run, node_id: str) -> None:
        b = self.behaviour
        if node_id == b.crash_at_node and _first_time(b.crash_marker):
            self.crash()
        if node_id == b.drop_sockets_at_node:
            await self._close_sockets(web.Application())
        if node_id == b.silent_from_node:
            run.silent = True

    def _save(self, item: QueueItem, node_id: str) -> dict[str, Any]:
        """Writes the node's canned files under ComfyUI's names; its ``ui`` output."""
        prompt = item.prompt
        ui: dict[str, list[dict[str, str]]] = {}
        class_type = prompt[node_id].get("class_type")
        temp = class_type == "PreviewImage"
        prefix = (
            "ComfyUI_temp_" + uuid.uuid4().hex[:5]
            if temp
            else str(prompt[node_id].get("inputs", {}).get("filename_prefix", "ComfyUI"))
        )
        folder, subfolder, base, counter = plan.save_path(
            self.temp_dir if temp else self.output_dir, prefix
        )
        folder.mkdir(parents=True, exist_ok=True)
        for file in reference.canned_files(item.canonical, node_id):
            name = f"{base}_{counter:05}_{file.suffix}"
            shutil.copyfile(file.source, folder / name)
            counter += 1
            ref = {"filename": name, "subfolder": subfolder, "type": "temp" if temp else "output"}
            ui.setdefault(file.kind, []).append(ref)
        return ui

    def _remember(self, run: _Run) -> None:
        """ComfyUI keeps the outputs of this prompt's nodes, and drops every other."""
        kept: dict[str, dict[str, Any] | None] = {}
        for node_id in run.item.prompt:
            key = run.signatures[node_id]
            if node_id in run.executed:
                kept[key] = run.outputs.get(node_id)
            elif node_id in run.cached:
                kept[key] = self.cache[key]
        self.cache = kept

    async def _finish(self, run: _Run, status: str) -> None:
        item = run.item
        outputs = run.outputs if status == "success" else {}
        self.history[item.prompt_id] = {
            "prompt": item.as_list(),
            "outputs": outputs,
            "status": {
                "status_str": "success" if status == "success" else "error",
                "completed": status == "success",
                "messages": run.history_messages,
            },
            "meta": {
                n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
                for n in outputs
            },
        }
        self.running = None
        await self._queue_updated()
        await self._message(run, "executing", {"node": None, "prompt_id": item.prompt_id})


def _output_nodes(prompt: dict[str, Any]) -> list[str]:
    outputs = reference.output_classes()
    return [
        n
        for n, node in prompt.items()
        if isinstance(node, dict) and node.get("class_type") in outputs
    ]


def _check(prompt: Any) -> reference.CannedAnswer | None:
    """The prompt-level checks, answered in the captured shapes; None when it passes."""
    if not isinstance(prompt, dict):
        return _invalid("invalid_prompt", "Cannot execute because the prompt is not an object.", "")
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            message = "Cannot execute because a node is missing the class_type property."
            return _invalid("invalid_prompt", message, f"Node ID '#{node_id}'")
        if node["class_type"] not in reference.object_info():
            message = f"Cannot execute because node {node['class_type']} does not exist."
            return _invalid("invalid_prompt", message, f"Node ID '#{node_id}'")
    if not _output_nodes(prompt):
        return _invalid("prompt_no_outputs", "Prompt has no outputs", "")
    return None


def _invalid(type_: str, message: str, details: str) -> reference.CannedAnswer:
    error = {"type": type_, "message": message, "details": details, "extra_info": {}}
    return reference.CannedAnswer(400, {"error": error, "node_errors": {}})


def _free_name(folder: Path, filename: str, data: bytes, overwrite: bool) -> str:
    """ComfyUI's upload naming: "x (1).png" when another file already has the name."""
    if overwrite:
        return filename
    stem, suffix = os.path.splitext(filename)
    name, i = filename, 1
    while (folder / name).exists():
        if hashlib.sha256((folder / name).read_bytes()).digest() == hashlib.sha256(data).digest():
            return name
        name, i = f"{stem} ({i}){suffix}", i + 1
    return name


def read_model_paths(config: Path) -> dict[str, list[Path]]:
    """The folders of an ``extra_model_paths.yaml`` in the flat form ComfyUI documents
    (sections of ``base_path`` and ``<folder>: <path>`` lines; no YAML library needed)."""
    found: dict[str, list[Path]] = {}
    base = Path()
    for line in config.read_text().splitlines():
        key, sep, value = line.strip().partition(":")
        if not sep or not line.startswith((" ", "\t")):
            continue
        value = value.strip()
        text = json.loads(value) if value.startswith('"') else value
        if key == "base_path":
            base = Path(text)
        elif key != "is_default":
            found.setdefault(key, []).append(base / text)
    return found


def _first_time(marker: Path | None) -> bool:
    if marker is None:
        return True
    if marker.exists():
        return False
    marker.write_text("crashed once\n")
    return True


@dataclass
class RunningFake:
    fake: FakeComfyUI
    url: str


@contextlib.asynccontextmanager
async def running_fake(
    root: Path, behaviour: Behaviour | None = None, port: int = 0
) -> AsyncIterator[RunningFake]:
    """The fake on loopback ``port`` (a free one when 0) of this event loop, for the block."""
    fake = FakeComfyUI(root / "input", root / "output", behaviour)
    runner = web.AppRunner(fake.app(), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield RunningFake(fake, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
