"""Webhook delivery speed: deliveries per second and publish-to-delivery latency.

    .venv/bin/python bench/webhook_throughput.py [--events 6000] [--subscriptions 2]
        [--rate 300] [--seconds 10] [--fast-disk]

Starts a private PostgreSQL and NATS JetStream (comfyfleet.devstack), a receiver on
127.0.0.1 in a process of its own, and measures two relays from the same stream to the same receiver:

- baseline: a bare JetStream -> HTTP relay in its own process (push consumer, ack after the
  POST, same JSON body and concurrency), with no database, signing or retries: what this
  machine can do at all;
- service: ``python -m services.webhook`` with its defaults (durable consumer, a delivery row
  per subscription, signed POSTs, every attempt logged).

Each runs a burst (``--events`` published as fast as possible; deliveries/s until the last one
arrives) and a paced phase (``--rate`` events/s for ``--seconds``; p50/p99 from publish to
arrival), in ``--rounds`` interleaved rounds; the report gives medians, and ratios service /
baseline from the same run. CPU per delivery counts the relay with what it needs (PostgreSQL
for the service) and NATS. Traffic stays on loopback, and
every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
import asyncpg
import grpc
import nats
from nats.aio.msg import Msg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comfyfleet.common.config import NatsConfig  # noqa: E402
from comfyfleet.common.events import EventBus, connect_bus, decode_event  # noqa: E402
from comfyfleet.common.grpcserver import channel  # noqa: E402
from comfyfleet.common.ids import new_id  # noqa: E402
from comfyfleet.common.tenancy import tenant_metadata  # noqa: E402
from comfyfleet.common.timeutil import utcnow  # noqa: E402
from comfyfleet.devstack.nats import NatsServer  # noqa: E402
from comfyfleet.devstack.postgres import PostgresServer  # noqa: E402
from comfyfleet.devstack.process import free_port  # noqa: E402
from comfyfleet.executions.v1 import executions_pb2  # noqa: E402
from comfyfleet.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc  # noqa: E402
from services.webhook.payload import execution_event  # noqa: E402

TENANT = "bench"
CONCURRENCY = 256
PHASE_DEADLINE_S = 120.0
SETTLE_S = 3.0
WARM_UP_EVENTS = 1000


@dataclass
class Receiver:
    """The receiver process's arrivals: the first arrival time of each (path, event id)."""

    port: int
    arrived: dict[tuple[str, str], float] = field(default_factory=dict)

    async def follow(self, lines: asyncio.StreamReader) -> None:
        while line := await lines.readline():
            path, event_id, at = line.decode().split()
            self.arrived.setdefault((path, event_id), float(at))

    async def wait_for(self, keys: set[tuple[str, str]], deadline_s: float) -> float:
        """When the last of ``keys`` arrived; raises if they did not within the deadline."""
        end = time.monotonic() + deadline_s
        while not keys <= self.arrived.keys():
            if time.monotonic() > end:
                missing = len(keys - self.arrived.keys())
                raise RuntimeError(f"{missing} deliveries did not arrive in {deadline_s:g} s")
            await asyncio.sleep(0.01)
        return max(self.arrived[k] for k in keys)


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """A receiver in its own process (so it does not share this one's loop with the
    publisher); it reports each arrival's monotonic time, which all processes share."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--receive",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    greeting = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    receiver = Receiver(port=int(greeting.split()[1]))
    follower = asyncio.create_task(receiver.follow(proc.stdout))
    try:
        yield receiver
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), timeout=20)
        await follower


class _Receiving(asyncio.Protocol):
    """A minimal HTTP/1.1 server connection: every request is a POST of one delivery and is
    answered 204. Far cheaper than a framework, so the receiver is not what is measured."""

    _ANSWER = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    _EVENT_ID = b'"eventId":"'

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self._buffer) < end + 4 + length:
                return
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            start = body.index(self._EVENT_ID) + len(self._EVENT_ID)
            event_id = body[start : body.index(b'"', start)].decode()
            path = head.split(" ", 2)[1]
            self._out.write(f"{path} {event_id} {now!r}\n")
            assert self._transport is not None
            self._transport.write(self._ANSWER)


async def receive() -> None:
    """The receiver process: answers 204 to every POST and writes "path event-id time" for
    each to stdout, until stdin closes."""
    out = sys.stdout
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Receiving(out), "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)

    async def flush_often() -> None:
        while True:
            out.flush()
            await asyncio.sleep(0.02)

    flusher = asyncio.create_task(flush_often())
    await loop.run_in_executor(None, sys.stdin.read)
    flusher.cancel()
    server.close()
    out.flush()


def new_event() -> executions_pb2.WorkflowExecutionEvent:
    event = executions_pb2.WorkflowExecutionEvent(
        event_id=new_id("evt"),
        execution_id=new_id("exe"),
        event_type="execution.succeeded",
        tenant=TENANT,
        sequence=1,
        output_urls=["https://example.com/outputs/slot-001.png"],
    )
    event.timestamp.FromDatetime(utcnow())
    return event


@dataclass(frozen=True)
class Result:
    per_second: float
    p50_ms: float
    p99_ms: float
    # CPU per delivery in the burst, of the relay and what it needs (PostgreSQL for the
    # service) and NATS: steadier than rates when other work shares the machine.
    cpu_ms: float


@dataclass
class Contender:
    """A relay under test: where to publish, where its deliveries arrive, whose CPU counts."""

    name: str
    bus: EventBus
    paths: list[str]
    pids: list[int]
    results: list[Result] = field(default_factory=list)


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """User and system CPU of processes and all their descendants, reaped ones included."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            parent[int(entry.name)] = int(fields[1])
    wanted = set(roots)
    changed = True
    while changed:
        found = {pid for pid, ppid in parent.items() if ppid in wanted} - wanted
        changed = bool(found)
        wanted |= found
    ticks = 0
    for pid in wanted:
        if fields := _stat(pid):
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def burst(bus: EventBus, receiver: Receiver, paths: Sequence[str], count: int) -> float:
    """Publishes ``count`` events at once; deliveries per second until the last arrived."""
    events = [new_event() for _ in range(count)]
    started = time.perf_counter()
    for i in range(0, count, 200):
        await asyncio.gather(*(bus.publish(e) for e in events[i : i + 200]))
    keys = {(p, e.event_id) for e in events for p in paths}
    last = await receiver.wait_for(keys, PHASE_DEADLINE_S)
    return len(keys) / (last - started)


async def paced(
    bus: EventBus, receiver: Receiver, paths: Sequence[str], rate: float, seconds: float
) -> list[float]:
    """Publishes ``rate`` events a second; each delivery's publish-to-arrival in ms."""
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        due = start + i / rate
        if (ahead := due - time.perf_counter()) > 0:
            await asyncio.sleep(ahead)
        event = new_event()
        sent[event.event_id] = time.perf_counter()
        await bus.publish(event)
    keys = {(p, e) for e in sent for p in paths}
    await receiver.wait_for(keys, PHASE_DEADLINE_S)
    return [(receiver.arrived[(p, e)] - sent[e]) * 1000 for p, e in keys]


async def measure(contender: Contender, receiver: Receiver, args: argparse.Namespace) -> None:
    bus, paths = contender.bus, contender.paths
    await burst(bus, receiver, paths, 200)  # warm up connections and caches
    cpu_before = tree_cpu_seconds(contender.pids)
    rate = await burst(bus, receiver, paths, args.events)
    cpu = tree_cpu_seconds(contender.pids) - cpu_before
    # The paced phase measures a steady state, not the tail of the burst's bookkeeping.
    await asyncio.sleep(SETTLE_S)
    latencies = await paced(bus, receiver, paths, args.rate, args.seconds)
    result = Result(
        rate,
        statistics.median(latencies),
        percentile(latencies, 0.99),
        cpu * 1000 / (args.events * len(paths)),
    )
    contender.results.append(result)
    print(f"  {contender.name:18}{_row(result)}", flush=True)


# The baseline relay, run in its own process like the service.


async def relay(nats_url: str, stream: str, prefix: str, urls: Sequence[str]) -> None:
    """JetStream push consumer -> one POST per URL -> ack; until stdin closes."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    limit = asyncio.Semaphore(CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(url: str, body: bytes) -> None:
            async with limit, session.post(url, data=body) as resp:
                await resp.read()

        async def forward(msg: Msg) -> None:
            body = execution_event(decode_event(msg.data), utcnow()).body.encode()
            await asyncio.gather(*(post(u, body) for u in urls))
            await msg.ack()

        tasks: set[asyncio.Task[None]] = set()

        async def on_message(msg: Msg) -> None:
            task = asyncio.create_task(forward(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        await js.subscribe(
            f"{prefix}.>", stream=stream, cb=on_message, manual_ack=True, pending_msgs_limit=-1
        )
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await nc.drain()


@asynccontextmanager
async def child(argv: list[str], env: dict[str, str], log: Path) -> AsyncIterator[int]:
    """Runs a process for the block; yields its pid."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE, stdout=out, stderr=out
        )
    try:
        yield proc.pid
    finally:
        if proc.stdin:
            proc.stdin.close()
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def wait_until(check: Callable[[], bool], what: str, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def baseline_relay(
    nats_url: str, nats_pid: int, receiver: Receiver, args: argparse.Namespace, work: Path
) -> AsyncIterator[Contender]:
    cfg = NatsConfig(nats_url, stream="BENCH_BASELINE", subject_prefix="bench.baseline")
    paths = [f"/base{i}" for i in range(args.subscriptions)]
    urls = [f"http://127.0.0.1:{receiver.port}{p}" for p in paths]
    log = work / "relay.log"
    argv = [sys.executable, __file__, "--relay", nats_url, cfg.stream, cfg.subject_prefix, *urls]
    async with (
        connect_bus(cfg, name="bench-baseline") as bus,
        child(argv, dict(os.environ), log) as pid,
    ):
        await wait_until(lambda: "ready" in log.read_text(), "the relay")
        await burst(bus, receiver, paths, WARM_UP_EVENTS)
        yield Contender("baseline relay", bus, paths, [pid, nats_pid])


async def subscribe_all(port: int, urls: Sequence[str]) -> None:
    async with channel(f"127.0.0.1:{port}") as ch:
        stub = webhooks_pb2_grpc.WebhookServiceStub(ch)
        await ch.channel_ready()
        for url in urls:
            request = webhooks_pb2.CreateSubscriptionRequest(
                subscription=webhooks_pb2.Subscription(url=url)
            )
            await stub.CreateSubscription(request, metadata=tenant_metadata(TENANT), timeout=10)


@asynccontextmanager
async def webhook_service(
    dsn: str,
    nats_url: str,
    infra_pids: list[int],
    receiver: Receiver,
    args: argparse.Namespace,
    work: Path,
) -> AsyncIterator[Contender]:
    cfg = NatsConfig(nats_url, stream="BENCH_SERVICE", subject_prefix="bench.service")
    paths = [f"/hook{i}" for i in range(args.subscriptions)]
    port = free_port()
    env = {
        **os.environ,
        "COMFYFLEET_GRPC_ADDR": f"127.0.0.1:{port}",
        "COMFYFLEET_DATABASE_URL": dsn,
        "COMFYFLEET_NATS_URL": nats_url,
        "COMFYFLEET_NATS_STREAM": cfg.stream,
        "COMFYFLEET_NATS_SUBJECT_PREFIX": cfg.subject_prefix,
        "COMFYFLEET_WEBHOOK_ALLOW_LOOPBACK": "1",
    }
    argv = [sys.executable, "-m", "services.webhook"]
    async with (
        connect_bus(cfg, name="bench-service") as bus,
        child(argv, env, work / "svc.log") as pid,
    ):
        try:
            await asyncio.wait_for(
                subscribe_all(port, [f"http://127.0.0.1:{receiver.port}{p}" for p in paths]), 60
            )
        except (grpc.aio.AioRpcError, TimeoutError) as err:
            raise RuntimeError(f"the webhook service did not start: {err}") from err
        # Some rows, then planner statistics, as any deployment that has run a while has:
        # a first burst into empty, unanalysed tables measures the planner's guesses.
        await burst(bus, receiver, paths, WARM_UP_EVENTS)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("ANALYZE webhook.deliveries, webhook.delivery_attempts")
        finally:
            await conn.close()
        yield Contender("webhook service", bus, paths, [pid, *infra_pids])


def _row(r: Result) -> str:
    return f"{r.per_second:>14.0f}{r.p50_ms:>10.1f}{r.p99_ms:>10.1f}{r.cpu_ms:>17.3f}"


def _median(results: Sequence[Result]) -> Result:
    return Result(
        *(statistics.median(getattr(r, f) for r in results) for f in Result.__dataclass_fields__)
    )


def report(base: Contender, svc: Contender, args: argparse.Namespace) -> None:
    b, s = _median(base.results), _median(svc.results)
    print(f"# medians of {args.rounds} rounds")
    print(f"{'':20}{'deliveries/s':>14}{'p50 ms':>10}{'p99 ms':>10}{'CPU ms/delivery':>17}")
    print(f"{base.name:20}{_row(b)}")
    print(f"{svc.name:20}{_row(s)}")
    print(
        f"{'service/baseline':20}{s.per_second / b.per_second:>14.2f}"
        f"{s.p50_ms / b.p50_ms:>10.2f}{s.p99_ms / b.p99_ms:>10.2f}{s.cpu_ms / b.cpu_ms:>17.2f}"
    )


async def compare(
    args: argparse.Namespace, dsn: str, nats_url: str, pids: tuple[int, int], work: Path
) -> None:
    pg_pid, nats_pid = pids
    print(
        f"# {args.events} events x {args.subscriptions} subscriptions burst; "
        f"{args.rate:g} events/s for {args.seconds:g} s paced; "
        f"PostgreSQL fsync {'off' if args.fast_disk else 'on'}; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    print(f"  {'':18}{'deliveries/s':>14}{'p50 ms':>10}{'p99 ms':>10}{'CPU ms/delivery':>17}")
    async with (
        receiving() as receiver,
        baseline_relay(nats_url, nats_pid, receiver, args, work) as base,
        webhook_service(dsn, nats_url, [pg_pid, nats_pid], receiver, args, work) as svc,
    ):
        # Interleaved, so a burst of other work on the machine hits both alike.
        for _ in range(args.rounds):
            await measure(base, receiver, args)
            await measure(svc, receiver, args)
    report(base, svc, args)


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="comfyfleet-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # PostgreSQL may run as its own user and must enter it
        with (
            PostgresServer(data_dir=work / "pg", durable=not args.fast_disk) as pg,
            NatsServer(data_dir=work / "nats") as nats_server,
        ):
            dsn = pg.create_database("bench")
            assert pg.pid is not None and nats_server.pid is not None
            pids = (pg.pid, nats_server.pid)
            asyncio.run(compare(args, dsn, nats_server.url, pids, work))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=6000, help="events in the burst")
    parser.add_argument(
        "--subscriptions", type=int, default=2, help="subscriptions, each all events"
    )
    parser.add_argument("--rate", type=float, default=300.0, help="paced events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the paced phase")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each")
    parser.add_argument("--fast-disk", action="store_true", help="PostgreSQL without fsync")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--receive":
        asyncio.run(receive())
    elif len(sys.argv) > 1 and sys.argv[1] == "--relay":
        nats_url, stream, prefix, *urls = sys.argv[2:]
        asyncio.run(relay(nats_url, stream, prefix, urls))
    else:
        main(parse_args(sys.argv[1:]))
