"""The comfyui engine's cost per job against the same real ComfyUI driven directly.

    .venv/bin/python bench/comfyui_engine.py [--jobs a_tiny=200,t01_txt2img=40] [--discard 3]

One real ComfyUI 0.3.64 (CPU), started by a comfyui engine in started mode (installed once per
machine, see tests/support/real_comfyui.py). Two sides run the same workflows on it, one job
of each side after the other so both see the same load:

- engine: ``ComfyUIEngine.run`` as the executor calls it (a blocking call on a worker thread):
  its checks, the job's inputs and models placed, websocket, ``POST /prompt``, progress
  events, ``/history``, ``/view``, output folder cleanup;
- direct: the least a client must do, on one long-lived aiohttp session: a websocket with a
  client id, ``POST /prompt``, messages until the prompt's ``executing`` with ``node: null``,
  ``GET /history/{id}``, ``GET /view`` for each image.

Every job gets a colour (a_tiny's EmptyImage) or seed (t01's KSampler) no other job had, so its
output node always runs (ComfyUI still answers unchanged upstream nodes, such as the checkpoint
loader, from its cache, for both sides alike). p50/p95 per side and the engine's added ms
(engine p50 - direct p50) are printed as a markdown table, with the added ms outside ComfyUI:
each job's time less ComfyUI's own (its ``execution_start`` to ``execution_success``, read from
``/history`` after the job, in whole ms), p50 per side, engine minus direct. ComfyUI's own time
varies from job to job by more than the engine adds (t01: tens of ms); this does not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comfyfleet.workflow.runner import CancelToken  # noqa: E402
from services.executor.comfyui import ComfyUIEngine, ComfyUISettings  # noqa: E402
from services.executor.engine import EngineJob  # noqa: E402
from tests.support.paths import comfyui_ref  # noqa: E402
from tests.support.real_comfyui import RealComfyUI, ensure_real_comfyui  # noqa: E402

DEFAULT_JOBS = "a_tiny=200,t01_txt2img=40"
# A job of either side that takes longer fails the benchmark instead of hanging it.
JOB_TIMEOUT_S = 120.0
# The goal for the engine's added time per job.
GOAL_MS = 5.0
_unique = count(1)


def workflow(real: RealComfyUI, name: str) -> dict[str, Any]:
    if name.startswith("t0"):
        doc: dict[str, Any] = json.loads(real.workflow(name))
    else:
        doc = json.loads((comfyui_ref() / "workflows" / f"{name}.json").read_text())
    return doc


def unique(prompt: dict[str, Any]) -> dict[str, Any]:
    """``prompt`` with every seed and EmptyImage colour set to a value no job had."""
    out = json.loads(json.dumps(prompt))
    for node in out.values():
        inputs = node["inputs"]
        if "seed" in inputs:
            inputs["seed"] = next(_unique)
        if node["class_type"] == "EmptyImage":
            inputs["color"] = next(_unique) % 0xFFFFFF
    return out


@dataclass
class Side:
    seconds: list[float]
    # Each job's seconds outside ComfyUI's execution of its prompt.
    outside: list[float]

    def ms(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def outside_p50(self) -> float:
        return statistics.median(self.outside) * 1000

    def add(self, seconds: float, comfyui_seconds: float) -> None:
        self.seconds.append(seconds)
        self.outside.append(seconds - comfyui_seconds)


async def comfyui_seconds(http: aiohttp.ClientSession, url: str) -> float:
    """How long ComfyUI ran its latest prompt, by the timestamps (ms) of its messages."""
    async with http.get(f"{url}/history", params={"max_items": "1"}) as response:
        [entry] = (await response.json()).values()
    stamps = {name: data["timestamp"] for name, data in entry["status"]["messages"]}
    return float(stamps["execution_success"] - stamps["execution_start"]) / 1000


class Direct:
    """A bare client of ComfyUI's API on one session."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.ws_url = "ws" + url.removeprefix("http") + "/ws"

    async def run(self, prompt: dict[str, Any]) -> int:
        """Runs ``prompt`` to its end; the number of output bytes fetched."""
        client_id = uuid.uuid4().hex
        async with self.http.ws_connect(f"{self.ws_url}?clientId={client_id}") as ws:
            body = {"prompt": prompt, "client_id": client_id}
            async with self.http.post(f"{self.url}/prompt", json=body) as response:
                response.raise_for_status()
                prompt_id = (await response.json())["prompt_id"]
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(message.data)
                data = event.get("data", {})
                if event["type"] == "execution_error":
                    raise RuntimeError(f"ComfyUI failed the prompt: {data}")
                done = event["type"] == "executing" and data.get("node") is None
                if done and data.get("prompt_id") == prompt_id:
                    break
        async with self.http.get(f"{self.url}/history/{prompt_id}") as response:
            entry = (await response.json())[prompt_id]
        fetched = 0
        for output in entry["outputs"].values():
            for image in output.get("images", []):
                params = {k: image[k] for k in ("filename", "subfolder", "type")}
                async with self.http.get(f"{self.url}/view", params=params) as response:
                    fetched += len(await response.read())
        return fetched


def engine_job(engine: ComfyUIEngine, job: EngineJob) -> float:
    """One engine run on this (worker) thread; its seconds."""
    started = time.perf_counter()
    cancel = CancelToken()
    # A stuck run is cancelled (RunInterrupted) rather than waited on for ever.
    timer = threading.Timer(JOB_TIMEOUT_S, cancel.cancel)
    timer.start()
    try:
        result = engine.run(job, lambda _: None, cancel)
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - started
    assert result.files, "the engine returned no files"
    return elapsed


async def compare(
    engine: ComfyUIEngine, real: RealComfyUI, name: str, jobs: int, discard: int, inputs: Path
) -> tuple[Side, Side]:
    base = workflow(real, name)
    models = real.models if name.startswith("t0") else {}
    engine_side, direct_side = Side([], []), Side([], [])
    async with aiohttp.ClientSession() as http:
        direct = Direct(http, engine.base_url)
        for i in range(discard + jobs):
            job = EngineJob(json.dumps(unique(base)), inputs, models)
            took = await asyncio.to_thread(engine_job, engine, job)
            # Read between the jobs, outside either's time.
            engine_in_comfyui = await comfyui_seconds(http, engine.base_url)
            prompt = unique(base)
            started = time.perf_counter()
            async with asyncio.timeout(JOB_TIMEOUT_S):
                await direct.run(prompt)
            direct_took = time.perf_counter() - started
            direct_in_comfyui = await comfyui_seconds(http, engine.base_url)
            print(
                f"{name} {i + 1}/{discard + jobs}: engine {took * 1000:.1f} ms, direct "
                f"{direct_took * 1000:.1f} ms",
                file=sys.stderr,
                flush=True,
            )
            if i >= discard:
                engine_side.add(took, engine_in_comfyui)
                direct_side.add(direct_took, direct_in_comfyui)
    return engine_side, direct_side


def table(rows: list[tuple[str, Side, Side]]) -> Iterator[str]:
    yield "| workflow | jobs/side | direct p50 ms | direct p95 ms | engine p50 ms | engine p95 ms | engine added p50 ms | added outside ComfyUI p50 ms |"
    yield "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for name, engine_side, direct_side in rows:
        added = engine_side.p50 - direct_side.p50
        outside = engine_side.outside_p50 - direct_side.outside_p50
        yield (
            f"| {name} | {len(engine_side.seconds)} | {direct_side.p50:.2f} | "
            f"{direct_side.ms(0.95):.2f} | {engine_side.p50:.2f} | {engine_side.ms(0.95):.2f} | "
            f"{added:+.2f} | {outside:+.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", default=DEFAULT_JOBS, help="workflow=N,... (N jobs per side)")
    parser.add_argument("--discard", type=int, default=3, help="warm-up jobs per side, dropped")
    args = parser.parse_args()
    plan = [(name, int(n)) for name, n in (item.split("=") for item in args.jobs.split(","))]
    # Stopped by a signal, the engine still stops the ComfyUI it started (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    real = ensure_real_comfyui()
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="comfyfleet-bench-") as tmp:
        work = Path(tmp)
        (work / "inputs").mkdir()
        settings = ComfyUISettings(command=real.command())
        engine = ComfyUIEngine(settings, "cpu", work / "engine")
        try:
            engine.start()
            rows = []
            for name, jobs in plan:
                sides = asyncio.run(
                    compare(engine, real, name, jobs, args.discard, work / "inputs")
                )
                rows.append((name, *sides))
        finally:
            engine.close()
    load = os.getloadavg()[0]
    print(
        f"\nReal ComfyUI {real.install_dir.name} on the CPU, load average "
        f"{load_at_start:.2f} at the start, {load:.2f} at the end:\n"
    )
    print("\n".join(table(rows)))
    print(f"\nGoal: the engine adds <= {GOAL_MS:g} ms per job.")
    for name, e, d in rows:
        added, outside = e.p50 - d.p50, e.outside_p50 - d.outside_p50
        print(
            f"{name}: added p50 {added:+.2f} ms ({'met' if added <= GOAL_MS else 'NOT met'}), "
            f"outside ComfyUI {outside:+.2f} ms ({'met' if outside <= GOAL_MS else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
