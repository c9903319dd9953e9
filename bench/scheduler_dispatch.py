"""Scheduler dispatch rate and submit->start latency with trivial workflows and deep queues.

    .venv/bin/python bench/scheduler_dispatch.py                  # 1k and 5k queued, < 3 min
    .venv/bin/python bench/scheduler_dispatch.py --sizes 1000,10000,100000
    .venv/bin/python bench/scheduler_dispatch.py --output-slots 4  # fewer URLs to presign

Starts a private PostgreSQL, NATS JetStream and S3 server (comfyfleet.devstack) and the
scheduler as its own process (``python -m services.scheduler``), as deployed. The executors
are in this process: gRPC ExecutorServices that register with the scheduler and finish every
attempt at once (started, then completed without outputs), so what is measured is the
scheduler: claims, attempts, leases, events and the outbox relay to JetStream.

For each size N:

1. submit N executions through ``ExecutionService.CreateExecution`` (64 at a time) while no
   executor is registered: the submit rate;
2. register the executors and time until all N have succeeded: the dispatch rate; while they
   drain, a priority-100 probe is submitted every 200 ms and its submit->start latency taken
   (an urgent execution behind N queued ones);
3. with the queue empty, probes at 10/s for 5 s: the submit->start latency of an idle queue.

The machine is shared, so beside the rates it reports the CPU time the scheduler process and
PostgreSQL (all its processes) spent per dispatched execution while the queue drained, read
from /proc: a figure that other load on the machine changes much less than a rate.

Baseline, measured in the same run on the same PostgreSQL and JetStream: a bare queue that
does only the durable steps any such scheduler must take per execution, with no scheduler,
gRPC, leases, presigning or executors: N rows claimed 32 at a time with FOR UPDATE SKIP
LOCKED, then per execution a "started" and a "succeeded" commit and four events published to
JetStream (acks awaited together per claim). The report gives dispatch/s over that rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import nats

from comfyfleet.common.grpcserver import channel, registration, serve
from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.devstack.process import ManagedProcess, free_port
from comfyfleet.devstack.stack import DevStack, StackConfig
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.executor.v1 import executor_pb2, executor_pb2_grpc
from comfyfleet.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = (
    '{"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}},'
    ' "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}'
)
SUBMIT_CONCURRENCY = 64


class InstantExecutor(executor_pb2_grpc.ExecutorServiceServicer):
    """Takes every attempt and finishes it at once."""

    def __init__(self, executor_id: str) -> None:
        self.executor_id = executor_id
        self.attempts = 0

    async def Execute(
        self, request: executor_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[executor_pb2.ExecuteUpdate]:
        self.attempts += 1
        yield executor_pb2.ExecuteUpdate(
            started=executor_pb2.Started(executor_id=self.executor_id, device="cpu")
        )
        yield executor_pb2.ExecuteUpdate(completed=executor_pb2.Completed())

    async def Cancel(
        self, request: executor_pb2.CancelRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.CancelResponse:
        return executor_pb2.CancelResponse(found=False)


@contextlib.asynccontextmanager
async def executors(
    scheduler: scheduler_pb2_grpc.SchedulerServiceStub, count: int, slots: int
) -> AsyncIterator[list[InstantExecutor]]:
    """``count`` executors of ``slots`` slots each, registered and heartbeating."""
    async with contextlib.AsyncExitStack() as stack:
        found = []
        for n in range(count):
            servicer = InstantExecutor(f"bench-{n}")
            reg = registration(servicer, executor_pb2_grpc, "ExecutorService")
            server = await stack.enter_async_context(serve("127.0.0.1:0", [reg], grace=0.1))
            executor = scheduler_pb2.Executor(
                id=servicer.executor_id,
                address=f"127.0.0.1:{server.port}",
                provider="local",
                capacity=scheduler_pb2.ExecutorCapacity(slots=slots),
            )
            await scheduler.RegisterExecutor(
                scheduler_pb2.RegisterExecutorRequest(executor=executor)
            )
            found.append(servicer)
        beats = asyncio.create_task(_heartbeat(scheduler, [e.executor_id for e in found], slots))
        try:
            yield found
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
            for e in found:
                await scheduler.DeregisterExecutor(
                    scheduler_pb2.DeregisterExecutorRequest(executor_id=e.executor_id)
                )


async def _heartbeat(
    scheduler: scheduler_pb2_grpc.SchedulerServiceStub, ids: list[str], slots: int
) -> None:
    capacity = scheduler_pb2.ExecutorCapacity(slots=slots)
    while True:
        for executor_id in ids:
            await scheduler.Heartbeat(
                scheduler_pb2.HeartbeatRequest(executor_id=executor_id, capacity=capacity)
            )
        await asyncio.sleep(1.0)


@dataclass
class Clients:
    executions: executions_pb2_grpc.ExecutionServiceStub
    scheduler: scheduler_pb2_grpc.SchedulerServiceStub
    tenant: tuple[tuple[str, str], ...]

    async def submit(self, priority: int = 0) -> executions_pb2.Execution:
        return await self.executions.CreateExecution(
            executions_pb2.CreateExecutionRequest(workflow_json=WORKFLOW, priority=priority),
            metadata=self.tenant,
        )

    async def latency_s(self, execution_id: str) -> float:
        """submit->start of a finished execution, from the scheduler's own timestamps."""
        while True:
            found = await self.executions.GetExecution(
                executions_pb2.GetExecutionRequest(id=execution_id), metadata=self.tenant
            )
            if found.state == executions_pb2.EXECUTION_STATE_SUCCEEDED:
                start = found.start_time.ToDatetime()
                return (start - found.create_time.ToDatetime()).total_seconds()
            await asyncio.sleep(0.05)


async def submit_many(clients: Clients, n: int) -> float:
    """Submits n executions, SUBMIT_CONCURRENCY at a time; returns the seconds it took."""
    began = time.perf_counter()
    left = iter(range(n))

    async def worker() -> None:
        for _ in left:
            await clients.submit()

    await asyncio.gather(*(worker() for _ in range(SUBMIT_CONCURRENCY)))
    return time.perf_counter() - began


async def drained(clients: Clients) -> None:
    while True:
        stats = await clients.scheduler.GetQueueStats(scheduler_pb2.GetQueueStatsRequest())
        if stats.depth == 0 and stats.running == 0:
            return
        # The stats group every waiting execution: with a deep queue, asking ten times a
        # second would load PostgreSQL more than the dispatching measured.
        await asyncio.sleep(0.1 if stats.depth < 2000 else 0.5)


async def probe_while(clients: Clients, done: asyncio.Task[None], every_s: float) -> list[str]:
    ids = []
    while not done.done():
        ids.append((await clients.submit(priority=100)).id)
        await asyncio.sleep(every_s)
    return ids


@dataclass
class Row:
    size: int
    submit_per_s: float
    drain_s: float
    dispatch_per_s: float
    urgent_p50_ms: float
    urgent_p95_ms: float
    idle_p50_ms: float
    idle_p95_ms: float
    # CPU milliseconds per dispatched execution while draining (NaN where /proc is missing).
    scheduler_cpu_ms: float = float("nan")
    postgres_cpu_ms: float = float("nan")
    # The bare queue's executions/s at the same depth, same run (the baseline).
    baseline_per_s: float = float("nan")


_TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _tree(root: int) -> list[int]:
    """``root`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_s(root: int | None) -> float:
    """User and system CPU seconds used so far by ``root``'s process tree: each living
    process's own, plus what its children that ended used (PostgreSQL backends come and go
    with pool connections; the postmaster reaps them)."""
    if root is None or not Path("/proc/self/stat").exists():
        return float("nan")
    total = 0.0
    for pid in _tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            # utime, stime, cutime, cstime
            total += sum(int(f) for f in fields[11:15]) * _TICK_S
    return total


@dataclass
class Watched:
    """The processes whose CPU time is counted."""

    scheduler: int | None
    postgres: int | None

    def now(self) -> tuple[float, float]:
        return cpu_s(self.scheduler), cpu_s(self.postgres)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


async def measure(clients: Clients, size: int, count: int, slots: int, watched: Watched) -> Row:
    submit_s = await submit_many(clients, size)
    began = time.perf_counter()
    cpu_before = watched.now()
    async with executors(clients.scheduler, count, slots):
        done = asyncio.create_task(drained(clients))
        urgent = await probe_while(clients, done, 0.2)
        await done
        drain_s = time.perf_counter() - began
        cpu_after = watched.now()
        urgent_s = [await clients.latency_s(i) for i in urgent]
        idle = []
        for _ in range(50):
            idle.append((await clients.submit()).id)
            await asyncio.sleep(0.1)
        idle_s = [await clients.latency_s(i) for i in idle]
    return Row(
        size=size,
        submit_per_s=size / submit_s,
        drain_s=drain_s,
        dispatch_per_s=(size + len(urgent)) / drain_s,
        urgent_p50_ms=statistics.median(urgent_s) * 1000,
        urgent_p95_ms=p95(urgent_s) * 1000,
        idle_p50_ms=statistics.median(idle_s) * 1000,
        idle_p95_ms=p95(idle_s) * 1000,
        scheduler_cpu_ms=(cpu_after[0] - cpu_before[0]) * 1000 / (size + len(urgent)),
        postgres_cpu_ms=(cpu_after[1] - cpu_before[1]) * 1000 / (size + len(urgent)),
    )


BASELINE_WORKERS = 4
BASELINE_CLAIM = 32


async def bare_queue_per_s(database_url: str, nats_url: str, size: int) -> float:
    """Executions/s through the bare queue of the module docstring, at ``size`` queued."""
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=2 * BASELINE_WORKERS)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="BENCH_BARE", subjects=["bench.bare.>"], max_age=3600)
        await pool.execute(
            "DROP TABLE IF EXISTS public.bench_bare;"
            " CREATE TABLE public.bench_bare (id bigserial PRIMARY KEY, priority int NOT NULL,"
            " state text NOT NULL, created timestamptz NOT NULL DEFAULT now(),"
            " started timestamptz, ended timestamptz);"
            " CREATE INDEX bench_bare_queued ON public.bench_bare (priority DESC, id)"
            " WHERE state = 'queued'"
        )
        await pool.execute(
            "INSERT INTO public.bench_bare (priority, state)"
            " SELECT 0, 'queued' FROM generate_series(1, $1)",
            size,
        )

        async def one(row_id: int) -> None:
            async with pool.acquire() as conn:
                await conn.execute(
                    "UPDATE public.bench_bare SET state = 'running', started = now() WHERE id = $1",
                    row_id,
                )
                await conn.execute(
                    "UPDATE public.bench_bare SET state = 'succeeded', ended = now() WHERE id = $1",
                    row_id,
                )

        async def events(row_id: int) -> None:
            await asyncio.gather(
                *(
                    js.publish(
                        f"bench.bare.{row_id}",
                        b"x" * 96,
                        headers={"Nats-Msg-Id": f"{row_id}-{n}"},
                    )
                    for n in range(4)
                )
            )

        async def worker() -> None:
            while True:
                async with pool.acquire() as conn, conn.transaction():
                    claimed = await conn.fetch(
                        "UPDATE public.bench_bare SET state = 'dispatched' WHERE id IN ("
                        " SELECT id FROM public.bench_bare WHERE state = 'queued'"
                        " ORDER BY priority DESC, id LIMIT $1 FOR UPDATE SKIP LOCKED)"
                        " RETURNING id",
                        BASELINE_CLAIM,
                    )
                if not claimed:
                    return
                ids = [r["id"] for r in claimed]
                await asyncio.gather(*(one(i) for i in ids), *(events(i) for i in ids))

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(BASELINE_WORKERS)))
        elapsed = time.perf_counter() - began
        await pool.execute("DROP TABLE public.bench_bare")
        await js.delete_stream("BENCH_BARE")
        return size / elapsed
    finally:
        await nc.close()
        await pool.close()


@contextlib.contextmanager
def scheduler_process(
    stack: DevStack, work: Path, output_slots: int
) -> Iterator[tuple[str, ManagedProcess]]:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        **stack.env(),
        "PYTHONPATH": str(ROOT),
        "COMFYFLEET_GRPC_ADDR": address,
        "COMFYFLEET_SCHEDULER_POLL_INTERVAL_S": "0.5",
        # Each attempt gets this many presigned PUT URLs: the scheduler's default is 32.
        "COMFYFLEET_SCHEDULER_OUTPUT_SLOTS": str(output_slots),
        # Trivial attempts: never let a slow moment cost a lease.
        "COMFYFLEET_SCHEDULER_LEASE_S": "60",
    }
    process = ManagedProcess(
        "scheduler",
        [sys.executable, "-m", "services.scheduler"],
        log_path=work / "scheduler.log",
        env=env,
        cwd=ROOT,
    )
    process.start()
    try:
        yield address, process
    finally:
        process.stop(grace_s=10)


async def wait_serving(address: str, process: ManagedProcess) -> None:
    async with channel(address) as ch:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(ch)
        while True:
            if process.returncode() is not None:
                raise SystemExit(f"the scheduler exited:\n{process.tail()}")
            try:
                await stub.GetQueueStats(scheduler_pb2.GetQueueStatsRequest(), timeout=1)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)


def workdir(tmp: str) -> Path:
    work = Path(tmp)
    work.chmod(0o755)  # PostgreSQL may run as its own user and must enter it
    return work


async def bench(sizes: list[int], count: int, slots: int, output_slots: int) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="comfyfleet-sched-bench-") as tmp:
        work = workdir(tmp)
        stack = DevStack(StackConfig(base_dir=work, durable=False)).start()
        try:
            with scheduler_process(stack, work, output_slots) as (address, process):
                await wait_serving(address, process)
                watched = Watched(process.pid, stack.postgres.pid)
                async with channel(address) as ch:
                    clients = Clients(
                        executions_pb2_grpc.ExecutionServiceStub(ch),
                        scheduler_pb2_grpc.SchedulerServiceStub(ch),
                        tenant_metadata("bench", max_concurrency=count * slots),
                    )
                    for size in sizes:
                        row = await measure(clients, size, count, slots, watched)
                        row.baseline_per_s = await bare_queue_per_s(
                            stack.database_url, stack.nats.url, size
                        )
                        rows.append(row)
                        print(table(rows[-1:], header=not rows[:-1]), flush=True)
        finally:
            stack.stop()
    return rows


def table(rows: list[Row], header: bool = True) -> str:
    lines = []
    if header:
        lines += [
            "| queued | submit/s | drain s | dispatch/s | urgent p50 ms | urgent p95 ms"
            " | idle p50 ms | idle p95 ms | scheduler CPU ms/exec | PostgreSQL CPU ms/exec"
            " | bare queue/s | dispatch / bare |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
    for r in rows:
        lines.append(
            f"| {r.size} | {r.submit_per_s:.0f} | {r.drain_s:.1f} | {r.dispatch_per_s:.0f}"
            f" | {r.urgent_p50_ms:.0f} | {r.urgent_p95_ms:.0f} | {r.idle_p50_ms:.0f}"
            f" | {r.idle_p95_ms:.0f} | {r.scheduler_cpu_ms:.2f} | {r.postgres_cpu_ms:.2f}"
            f" | {r.baseline_per_s:.0f} | {r.dispatch_per_s / r.baseline_per_s:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000", help="queued executions, comma-separated")
    parser.add_argument("--executors", type=int, default=4)
    parser.add_argument("--slots", type=int, default=16, help="slots per executor")
    parser.add_argument("--output-slots", type=int, default=32, help="output URLs per attempt")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    asyncio.run(bench(sizes, args.executors, args.slots, args.output_slots))


if __name__ == "__main__":
    main()
