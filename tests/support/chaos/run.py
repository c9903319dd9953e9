"""One chaos run, start to figures: subscribe a webhook receiver, submit under a seeded plan
of kills and restarts, let the platform drain, check the contracts, count."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from comfyfleet.sdk import AsyncClient, Settings
from tests.e2e.receiver import Receiver
from tests.support import eventually
from tests.support.chaos import checks
from tests.support.chaos.clients import GRPC, REST, Answers, Submitter, plan_jobs
from tests.support.chaos.fleet import STREAM, ChaosFleet, ChaosLog, chaos_plan

# Client answers that say the platform failed rather than "try again": none may be seen.
FORBIDDEN = frozenset({f"{GRPC}:INTERNAL", f"{GRPC}:UNKNOWN", f"{GRPC}:DATA_LOSS", f"{REST}:500"})
# Answers are counted as "during an outage" until this long after PostgreSQL or NATS is back.
OUTAGE_TAIL_S = 3.0


@dataclass(frozen=True)
class ChaosSettings:
    seed: int
    executions: int = 48
    # Submissions are spread over this window, and the chaos lasts as long (at least until
    # every service was killed once).
    window_s: float = 30.0
    kill_gap_s: tuple[float, float] = (1.5, 3.5)
    # How many times PostgreSQL and NATS each restart, and how long each stays down.
    infra_restarts: int = 1
    infra_down_s: float = 1.0
    clients: int = 8
    rest_every: int = 4
    # How long one submission may keep being refused before its client gives up.
    submit_deadline_s: float = 90.0
    drain_timeout_s: float = 180.0


@dataclass
class Figures:
    """What one run did and saw."""

    settings: ChaosSettings
    chaos: ChaosLog = field(default_factory=ChaosLog)
    restarts: dict[str, int] = field(default_factory=dict)
    answers: Answers = field(default_factory=Answers)
    # request_id -> the execution id its client was answered with.
    accepted: dict[str, str] = field(default_factory=dict)
    gave_up: dict[str, str] = field(default_factory=dict)
    states: Counter[str] = field(default_factory=Counter)
    attempts: Counter[int] = field(default_factory=Counter)
    events: int = 0
    deliveries: checks.Deliveries | None = None
    outputs: int = 0
    # Calls services answered INTERNAL (their logs' "unhandled error in <method>"), by method.
    internal: Counter[str] = field(default_factory=Counter)
    # Calls services answered UNAVAILABLE because a dependency was down, by method.
    unavailable: Counter[str] = field(default_factory=Counter)
    submit_s: float = 0.0
    drain_s: float = 0.0
    # From drained to every event in the stream, and to every event at the receiver.
    events_s: float = 0.0
    deliveries_s: float = 0.0
    total_s: float = 0.0

    def outage_windows(self) -> list[tuple[float, float]]:
        return [(o.down_at, o.up_at + OUTAGE_TAIL_S) for o in self.chaos.outages]

    def forbidden(self) -> Counter[str]:
        every = Counter({f"{GRPC}:{c}": n for c, n in self.answers.by_code(GRPC).items()})
        every.update({f"{REST}:{c}": n for c, n in self.answers.by_code(REST).items()})
        return Counter({k: n for k, n in every.items() if k in FORBIDDEN})

    def text(self) -> str:
        s = self.settings
        outages = ", ".join(f"{o.target} {o.up_at - o.down_at:.1f}s" for o in self.chaos.outages)
        lines = [
            f"chaos seed {s.seed}: {s.executions} executions, {s.clients} clients "
            f"(every {s.rest_every}th over REST), {s.window_s:.0f}s window, kills every "
            f"{s.kill_gap_s[0]:g}-{s.kill_gap_s[1]:g}s, PostgreSQL and NATS down "
            f"{s.infra_down_s:g}s {s.infra_restarts}x each",
            f"accepted {len(self.accepted)}, gave up {len(self.gave_up)}; states {dict(self.states)}",
            f"attempts per execution {dict(sorted(self.attempts.items()))}",
            f"kills {dict(sorted(self.chaos.kills.items()))} "
            f"(found dead: {dict(self.chaos.missed)}); restarts {self.restarts}",
            f"outages: {outages}",
            f"submit {self.submit_s:.1f}s, drain {self.drain_s:.1f}s, events in the stream "
            f"{self.events_s:.1f}s, delivered {self.deliveries_s:.1f}s, total {self.total_s:.1f}s",
            f"events {self.events}, webhook deliveries {self._deliveries()}, "
            f"outputs downloaded {self.outputs}",
            f"answers gRPC {dict(self.answers.by_code(GRPC))}",
            f"answers REST {dict(self.answers.by_code(REST))}",
            f"answers during outages {dict(self.answers.within(self.outage_windows()))}",
            f"services' UNAVAILABLE answers {dict(self.unavailable)}",
            f"services' INTERNAL answers {dict(self.internal)}",
        ]
        return "\n".join(lines)

    def _deliveries(self) -> str:
        d = self.deliveries
        return "-" if d is None else f"{d.total} ({d.repeated} repeated)"


async def run_chaos(fleet: ChaosFleet, receiver: Receiver, figures: Figures) -> None:
    """The run of ``figures.settings``, filling in ``figures``; raises AssertionError on the
    first contract broken (the figures then hold what the run got to)."""
    rng = random.Random(figures.settings.seed)
    started = time.monotonic()
    settings_ = Settings(fleet.addrs.gateway, fleet.admin_key)
    assert fleet.launcher is not None
    restarted = Counter(fleet.launcher.restarts)
    fleet.mark_logs()
    async with AsyncClient(settings_) as client:
        await client.create_subscription(receiver.url, description="chaos")
        await _harm_while_submitting(fleet, figures, rng)
        await _drain(fleet, client, figures)
        figures.restarts = dict(Counter(fleet.launcher.restarts) - restarted)
        await _check(fleet, client, receiver, figures)
    figures.total_s = time.monotonic() - started


async def _harm_while_submitting(fleet: ChaosFleet, figures: Figures, rng: random.Random) -> None:
    s = figures.settings
    assert fleet.chaos is not None and fleet.launcher is not None
    jobs = plan_jobs(s.executions, rng, s.window_s, s.rest_every)
    submitter = Submitter(
        fleet.addrs.gateway, f"http://{fleet.addrs.rest}", fleet.admin_key, figures.answers
    )
    started = time.monotonic()
    fleet.chaos.infra_down_s = s.infra_down_s
    fleet.chaos.begin(chaos_plan(rng, s.window_s, s.kill_gap_s, s.infra_restarts))
    try:
        await submitter.run(jobs, s.clients, s.submit_deadline_s)
        await asyncio.to_thread(fleet.chaos.plan_done.wait)
    finally:
        fleet.chaos.calm()
        figures.chaos = fleet.chaos.log
        figures.accepted, figures.gave_up = submitter.accepted, submitter.gave_up
        figures.submit_s = time.monotonic() - started
    some = dict(list(submitter.gave_up.items())[:3])
    assert not submitter.gave_up, f"{len(submitter.gave_up)} submissions given up, e.g. {some}"


async def _drain(fleet: ChaosFleet, client: AsyncClient, figures: Figures) -> None:
    """Waits for every service to serve again, then for every execution to end."""
    started = time.monotonic()

    async def serving() -> None:
        assert await asyncio.to_thread(fleet.all_serving), "services still down"

    async def ended() -> None:
        checks.check_terminal(await checks.all_executions(client))

    await eventually(serving, timeout=120, interval=0.5)
    await eventually(ended, timeout=figures.settings.drain_timeout_s, interval=0.5)
    figures.drain_s = time.monotonic() - started


async def _check(
    fleet: ChaosFleet, client: AsyncClient, receiver: Receiver, figures: Figures
) -> None:
    drained = time.monotonic()
    executions = await checks.all_executions(client)
    checks.check_one_each(executions, figures.accepted)
    figures.states = checks.check_terminal(executions)
    figures.attempts = Counter(e.attempt for e in executions)

    async def events_complete() -> list[checks.Event]:
        found = await checks.stream_events(fleet.nats.url, STREAM)
        checks.check_events(found, executions)
        return found

    events = await eventually(events_complete, timeout=30, interval=0.5)
    figures.events_s = time.monotonic() - drained
    ours = {e.id for e in executions}
    events = [e for e in events if e.execution_id in ours]

    async def delivered() -> None:
        figures.deliveries = checks.check_delivered(receiver, events)

    figures.events = len(events)
    await eventually(delivered, timeout=60, interval=0.5)
    figures.deliveries_s = time.monotonic() - drained
    figures.outputs = await checks.check_outputs(client, executions)
    forbidden = figures.forbidden()
    assert not forbidden, f"clients were answered {dict(forbidden)}"
    figures.unavailable = fleet.unavailable_answers()
    figures.internal = fleet.internal_answers()
    assert not figures.internal, f"services answered INTERNAL: {figures.internal}"
