"""The comfyui engine: runs workflows on a real ComfyUI server, as an :class:`Engine`.

Each run opens a websocket with a client id of its own, submits the prompt under that id
(ComfyUI sends a prompt's messages only to the socket named in its ``POST /prompt``), turns
the messages into node events, and reads the result from ``/history/{prompt_id}``, which is
filled before ComfyUI announces the end. When the socket falls silent longer than the
watchdog allows (a long node, or a stuck socket) or drops, the run is followed by polling
``/history`` instead. A ComfyUI that cannot be reached fails the run as retryable
UNAVAILABLE; a process this engine started is restarted before the next run.

Tenants never see each other's results through ComfyUI's cache, output or input folders:
see :mod:`services.executor.comfyui.isolation` for how and why.

``run`` blocks: its async work runs on the engine's event loop, a thread of its own started
once, and every run shares one HTTP session (and its keep-alive connections to ComfyUI) until
ComfyUI restarts or fails to answer. The small file steps (inputs, model links, output
cleanup, restored PNGs) run on that loop too: no other run waits on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import secrets
import shutil
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from comfyfleet.common.errors import FieldViolation
from comfyfleet.workflow.runner import CancelToken
from services.executor.comfyui.client import (
    ComfyUIClient,
    ComfyUIUnavailable,
    MessageStream,
    SharedSession,
)
from services.executor.comfyui.isolation import Isolated, Isolation, NodeKinds
from services.executor.comfyui.loop import LoopThread
from services.executor.comfyui.process import ComfyUIProcess
from services.executor.comfyui.protocol import (
    Outcome,
    OutputRef,
    RunTracker,
    nodes_to_run,
    outcome_of,
    rejection,
)
from services.executor.comfyui.settings import ComfyUISettings
from services.executor.engine import (
    EngineJob,
    EngineResult,
    NodeRaised,
    OnEvent,
    ProducedFile,
    RunInterrupted,
    WorkflowRejected,
)

log = logging.getLogger(__name__)

# How often a run looks at its cancel token and the process while waiting for messages.
TICK_S = 0.05
# Between readiness probes of a starting ComfyUI.
READY_POLL_S = 0.2
# The name of each engine's event loop thread.
LOOP_THREAD_NAME = "comfyui-engine"


class ComfyUIEngine:
    """:class:`Engine` over one ComfyUI server; call :meth:`start` before anything else.

    ``cache_secret`` keys the salts that keep tenants apart in ComfyUI's cache (random when
    not given): engines sharing one ComfyUI by URL share a tenant's cache only with the same.
    """

    name = "comfyui"

    def __init__(
        self,
        settings: ComfyUISettings,
        device: str,
        work_dir: Path,
        *,
        cache_secret: bytes | None = None,
    ) -> None:
        self.settings = settings
        self._isolation = Isolation(cache_secret or secrets.token_bytes(32))
        self._kinds = NodeKinds()
        self._device = device
        self._base_url = settings.url.rstrip("/")
        self._process: ComfyUIProcess | None = None
        if settings.command:
            self._process = ComfyUIProcess(settings.argv, work_dir, device)
            # The child must not outlive the executor, even when close() is never called.
            weakref.finalize(self, self._process.stop)
        self._http = SharedSession(settings.request_timeout_s)
        self._loop = LoopThread(LOOP_THREAD_NAME, on_stop=self._http.close)
        # Nor its loop's thread (which, like on_stop, holds no reference to the engine).
        weakref.finalize(self, self._loop.stop)
        self._object_info: Mapping[str, Any] = {}
        self._output_classes: frozenset[str] = frozenset()

    @property
    def device(self) -> str:
        return self._device

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def process(self) -> ComfyUIProcess | None:
        return self._process

    def node_types(self) -> Sequence[str]:
        return sorted(self._object_info)

    def upload_name(self, cache_scope: str, data: bytes, name: str) -> str:
        """Where a ComfyUI reached by URL finds a job's input ``name`` (in its input folder)."""
        return self._isolation.upload_name(cache_scope, data, name)

    def output_folder(self, cache_scope: str) -> str:
        """The folder of ComfyUI's output folder a scope's files are saved in."""
        return self._isolation.scope_folder(cache_scope)

    def object_info(self) -> Mapping[str, Any]:
        """What ComfyUI answered ``GET /object_info`` with at start: its node catalog."""
        return self._object_info

    @property
    def loop_thread(self) -> LoopThread:
        """The thread the engine's async work runs on (between start and close)."""
        return self._loop

    def start(self) -> None:
        """Starts the engine's event loop and (or reaches) ComfyUI, waits until it answers
        and reads its node types.

        Blocking. Raises :class:`ComfyUIUnavailable` when it does not come up in time.
        """
        self._loop.run(self._start())

    def close(self) -> None:
        """Stops a ComfyUI process this engine started, the engine's HTTP session and its
        event loop. A later run starts them again."""
        if self._process is not None:
            self._process.stop()
        self._loop.stop()

    def run(self, job: EngineJob, on_event: OnEvent, cancel: CancelToken) -> EngineResult:
        try:
            return self._loop.run(self._run(job, on_event, cancel))
        except concurrent.futures.CancelledError:
            raise ComfyUIUnavailable("the comfyui engine was closed during the run") from None

    # ------------------------------------------------------------------ server lifecycle

    async def _start(self) -> None:
        client = await self._bring_up()
        info = await client.object_info()
        self._object_info = info
        self._kinds = NodeKinds.from_object_info(info)
        self._output_classes = frozenset(
            name
            for name, node in info.items()
            if isinstance(node, Mapping) and node.get("output_node")
        )
        log.info("ComfyUI at %s is ready with %d node types", self._base_url, len(info))

    async def _bring_up(self) -> ComfyUIClient:
        """Starts the process when there is one, then waits until ComfyUI answers."""
        if self._process is not None:
            # Connections to an earlier process lead nowhere.
            await self._http.close()
            self._base_url = await asyncio.to_thread(self._process.start)
        client = self._http.client(self._base_url)
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while True:
            self._check_process("while starting")
            try:
                await client.system_stats()
                return client
            except ComfyUIUnavailable as err:
                if time.monotonic() >= deadline:
                    # Stopped, so that the next run starts a fresh one instead of waiting on it.
                    if self._process is not None:
                        await asyncio.to_thread(self._process.stop)
                    raise ComfyUIUnavailable(
                        f"ComfyUI did not answer within {self.settings.startup_timeout_s:g}s: "
                        f"{err.message}{self._log_tail()}"
                    ) from err
            await asyncio.sleep(READY_POLL_S)

    async def _ensure_up(self) -> ComfyUIClient:
        """Before a run: restarts a process that died, or checks that the URL answers.

        A live process is not probed: the probe costs ComfyUI milliseconds per run, and one
        that stopped answering fails the submit just the same.
        """
        process = self._process
        if process is not None and (not process.started or process.exit_code() is not None):
            log.warning("ComfyUI exited with code %s; restarting it", process.exit_code())
            return await self._bring_up()
        client = self._http.client(self._base_url)
        if process is None:
            await client.system_stats()
        return client

    def _check_process(self, when: str) -> None:
        code = None if self._process is None else self._process.exit_code()
        if code is not None:
            raise ComfyUIUnavailable(f"ComfyUI exited with code {code} {when}{self._log_tail()}")

    def _log_tail(self) -> str:
        tail = self._process.log_tail() if self._process is not None else ""
        return f"; its log ends with:\n{tail}" if tail else ""

    # ------------------------------------------------------------------ one run

    async def _run(self, job: EngineJob, on_event: OnEvent, cancel: CancelToken) -> EngineResult:
        submitted = _decode(job.workflow_json)
        try:
            client = await self._ensure_up()
            inputs = _read_tree(job.input_dir)
            uploaded = await self._place_files(client, job, inputs)
            if cancel.cancelled:
                raise RunInterrupted("the run was cancelled before it was submitted")
            isolated = self._isolation.isolate(
                _renamed(submitted, uploaded),
                submitted,
                job.cache_scope,
                self._kinds,
                job.models,
                inputs,
            )
            try:
                tracker, entry = await self._execute(client, isolated.prompt, on_event, cancel)
            except WorkflowRejected as err:
                # Errors name the files as the workflow did, not as they were uploaded.
                if not uploaded or err.comfy_body is None:
                    raise
                raise rejection(_names_restored(err.comfy_body, uploaded)) from None
            outcome = outcome_of(entry)
            tracker.settle(outcome)
            return await self._result(client, outcome, tracker.expected, isolated)
        except ComfyUIUnavailable:
            # Its connections may lead to a ComfyUI that went away: the next run makes new ones.
            await self._http.close()
            # A refused connection says little; a process that exited says why.
            self._check_process("during the run")
            raise

    async def _execute(
        self,
        client: ComfyUIClient,
        prompt: Mapping[str, Any],
        on_event: OnEvent,
        cancel: CancelToken,
    ) -> tuple[RunTracker, Mapping[str, Any]]:
        client_id = str(uuid.uuid4())
        # Open before submitting: a short prompt may end before a later socket would connect.
        async with client.messages(client_id) as stream:
            submitted = await client.submit(prompt, client_id)
            expected = nodes_to_run(prompt, self._output_classes, submitted.node_errors)
            tracker = RunTracker(submitted.prompt_id, prompt, expected, on_event)
            entry = await self._follow(client, stream, tracker, cancel)
        return tracker, entry

    async def _follow(
        self, client: ComfyUIClient, stream: MessageStream, tracker: RunTracker, cancel: CancelToken
    ) -> Mapping[str, Any]:
        """Feeds the tracker until the prompt's history entry is there, and returns it."""
        watchdog = _Watchdog(self.settings.watchdog_s, self.settings.poll_s)
        while True:
            if cancel.cancelled:
                await self._interrupt(client, tracker.prompt_id)
                raise RunInterrupted("the run was cancelled")
            message = await stream.next(TICK_S)
            if message is not None:
                watchdog.heard()
                tracker.feed(message)
            else:
                # Only while it is quiet: a process that died sends nothing.
                self._check_process("during the run")
            if watchdog.due(tracker.finished, stream.closed):
                entry = await client.history(tracker.prompt_id)
                if entry is not None:
                    return entry

    async def _interrupt(self, client: ComfyUIClient, prompt_id: str) -> None:
        """Stops the prompt, running or queued; kills a started process that ignores it."""
        deadline = time.monotonic() + self.settings.interrupt_timeout_s
        with contextlib.suppress(ComfyUIUnavailable):
            await client.interrupt(prompt_id)
            while time.monotonic() < deadline:
                if (
                    await client.history(prompt_id) is not None
                    or prompt_id not in await client.queued()
                ):
                    return
                await asyncio.sleep(TICK_S)
        log.warning("ComfyUI did not stop prompt %s after an interrupt", prompt_id)
        if self._process is not None:
            # Restarted before the next run, which would otherwise wait behind this prompt.
            await asyncio.to_thread(self._process.stop)

    async def _place_files(
        self, client: ComfyUIClient, job: EngineJob, inputs: Sequence[tuple[str, bytes]]
    ) -> dict[str, str]:
        """Puts the job's inputs (and, for a started ComfyUI, models) where ComfyUI reads them;
        returns the names they were given where those differ from the workflow's.

        A ComfyUI reached by URL is shared with other runs (other executors, other tenants)
        and keeps every file uploaded to it. Each input goes into a folder named after the
        job's cache scope and a digest of its bytes, so no run can read another tenant's file
        by naming it, or overwrite it. A tenant's identical inputs land in the same place,
        which keeps ComfyUI's cache working across its runs. It must hold the models itself.
        """
        process = self._process
        if process is None:
            uploaded: dict[str, str] = {}
            for name, data in inputs:
                uploaded[name] = self._isolation.upload_name(job.cache_scope, data, name)
                await client.upload_input(data, uploaded[name])
            return uploaded
        # Emptied first: a run must not read files an earlier run (or tenant) left there.
        _replace_tree(job.input_dir, process.input_dir)
        process.link_models(job.models)
        return {}

    async def _result(
        self,
        client: ComfyUIClient,
        outcome: Outcome,
        expected: Sequence[str],
        isolated: Isolated,
    ) -> EngineResult:
        if outcome.status == "interrupted":
            raise RunInterrupted("ComfyUI interrupted the run")
        if outcome.status == "error":
            raise _node_raised(outcome.error)
        refs = [ref for ref in outcome.outputs if ref.type == "output"]
        files = [await self._fetch(client, ref, isolated) for ref in refs]
        if self._process is not None:
            _keep_only(self._process.output_dir, outcome.outputs)
        cached = tuple(n for n in outcome.cached_nodes if n in expected)
        return EngineResult(tuple(files), cached)

    @staticmethod
    async def _fetch(client: ComfyUIClient, ref: OutputRef, isolated: Isolated) -> ProducedFile:
        """The file as ComfyUI would have saved it for the submitted workflow."""
        data, content_type = await client.view(ref)
        data = isolated.restored(ref.filename, data)
        subfolder = isolated.client_subfolder(ref.subfolder)
        return ProducedFile(ref.node_id, ref.filename, subfolder, ref.kind, content_type, data)


class _Watchdog:
    """Says when to ask ``/history``: once the prompt ended, and while the socket is silent
    past its limit or gone, every ``poll_s``."""

    def __init__(self, silence_s: float, poll_s: float) -> None:
        self.silence_s = silence_s
        self.poll_s = poll_s
        self.last_heard = time.monotonic()
        self.next_poll = 0.0
        self.fired = False

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    def due(self, finished: bool, closed: bool) -> bool:
        now = time.monotonic()
        silent = closed or now - self.last_heard >= self.silence_s
        if silent and not self.fired and not finished:
            self.fired = True
            log.warning(
                "ComfyUI's websocket is %s; following the run through /history",
                "closed" if closed else f"silent for {self.silence_s:g}s",
            )
        if not (finished or silent) or now < self.next_poll:
            return False
        self.next_poll = now + self.poll_s
        return True


def _decode(workflow_json: str) -> Mapping[str, Any]:
    try:
        prompt = json.loads(workflow_json)
    except ValueError as err:
        violation = FieldViolation("workflow", f"malformed JSON: {err}", "invalid_prompt")
        raise WorkflowRejected("the workflow is not valid JSON", [violation]) from err
    if not isinstance(prompt, dict):
        violation = FieldViolation("workflow", "must be a JSON object of nodes", "invalid_prompt")
        raise WorkflowRejected("the workflow must be a JSON object of nodes", [violation])
    return prompt


def _node_raised(error: Mapping[str, Any]) -> NodeRaised:
    trace = error.get("traceback")
    return NodeRaised(
        str(error.get("node_id", "")),
        str(error.get("node_type", "")),
        str(error.get("exception_type", "")),
        str(error.get("exception_message", "")).strip(),
        "".join(trace) if isinstance(trace, list) else str(trace or ""),
    )


def _renamed(prompt: Mapping[str, Any], names: Mapping[str, str]) -> Mapping[str, Any]:
    """``prompt`` with every literal input that names one of the run's input files changed
    to the name it was uploaded under; links and every other value unchanged."""
    if not names:
        return prompt
    out: dict[str, Any] = {}
    for node_id, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            out[node_id] = node
            continue
        moved = {
            key: names.get(value, value) if isinstance(value, str) else value
            for key, value in inputs.items()
        }
        out[node_id] = {**node, "inputs": moved}
    return out


def _names_restored(body: Mapping[str, Any], names: Mapping[str, str]) -> Any:
    """ComfyUI's answer with the files named as the workflow named them."""
    text = json.dumps(body)
    for name, uploaded in names.items():
        text = text.replace(json.dumps(uploaded)[1:-1], json.dumps(name)[1:-1])
    return json.loads(text)


def _read_tree(root: Path) -> list[tuple[str, bytes]]:
    """Every file under ``root`` as (its path relative to ``root``, its bytes)."""
    if not root.is_dir():
        return []
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return [(p.relative_to(root).as_posix(), p.read_bytes()) for p in files]


def _replace_tree(source: Path, target: Path) -> None:
    """Makes ``target`` a copy of ``source`` (empty when there is none). The folder itself
    stays: a run without inputs costs a look into each folder."""
    try:
        with os.scandir(target) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
    except FileNotFoundError:
        target.mkdir(parents=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)


def _keep_only(output_dir: Path, refs: Iterable[OutputRef]) -> None:
    """Deletes the files earlier runs left, keeping this run's.

    A resubmission answered from ComfyUI's cache reports the files of the run that filled
    the cache, so those must stay until a run reports others.
    """
    keep = {
        os.path.normpath(os.path.join(output_dir, r.subfolder, r.filename))
        for r in refs
        if r.type == "output"
    }
    for top, _, files in os.walk(output_dir):
        for name in files:
            path = os.path.join(top, name)
            if os.path.normpath(path) not in keep:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
