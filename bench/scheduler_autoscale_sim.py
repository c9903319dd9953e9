"""Replays a bursty day against autoscaling policies: p95 wait and GPU cost per policy.

    .venv/bin/python bench/scheduler_autoscale_sim.py [--seed 7] [--json]

Two days are simulated second by second:

- ``workshop``: 20 users in a three-hour workshop; every 15 minutes the instructor says "run
  it", and each user submits one to four workflows within a minute; nothing else all day.
- ``10k-users``: 10,000 users submitting about two workflows each over the day, following a
  day-night curve (the afternoon peak at twice the mean), with three viral bursts of 400
  workflows in five minutes.

Each workflow runs 8 to 40 s (lognormal around 15 s) on one GPU replica. A new replica takes
45 s to boot (a cold start) before it takes work; a replica is paid from the moment it is
asked for until it is released, per second, at $1.12/h (an RTX 4090 on RunPod). The
autoscaler decides every 15 s with ``services.scheduler.autoscale.decide``, the function the
scheduler applies. Scale-in releases idle replicas only.

Policies: ``design`` (the source design's defaults), ``static`` (the baseline: a fixed fleet
sized for the peak, always on), ``no-warm-pool`` (the design without a warm pool, down to
zero after 2 minutes idle), ``patient`` (the design keeping its warm pool 20 minutes) and
``eager`` (+4 per 30 s up, -1 per 120 s down). Ratios are
against ``static`` from the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.scheduler.autoscale import ScalePolicy, ScaleState, Signals, decide

DAY_S = 24 * 3600
TICK_S = 15
COLD_START_S = 45
USD_PER_HOUR = 1.12


@dataclass(frozen=True)
class Scenario:
    name: str
    arrivals: list[float]
    durations: list[float]
    max_replicas: int


def _duration(rng: random.Random) -> float:
    return min(40.0, max(8.0, rng.lognormvariate(math.log(15), 0.4)))


def workshop(rng: random.Random) -> Scenario:
    arrivals = []
    for burst in range(12):  # 10:00 to 13:00, every 15 minutes
        start = 10 * 3600 + burst * 900
        for _user in range(20):
            arrivals += [start + rng.uniform(0, 60) for _ in range(rng.randint(1, 4))]
    arrivals.sort()
    return Scenario("workshop", arrivals, [_duration(rng) for _ in arrivals], 10)


def ten_k_users(rng: random.Random) -> Scenario:
    mean_rate = 10_000 * 2 / DAY_S
    arrivals = []
    for second in range(DAY_S):
        # Night at a fifth of the mean, the afternoon peak (15:00) at twice it.
        shape = 1.1 - 0.9 * math.cos(2 * math.pi * (second - 3 * 3600) / DAY_S)
        if rng.random() < mean_rate * shape:
            arrivals.append(second + rng.random())
    for start in (11 * 3600, 16 * 3600 + 1800, 21 * 3600):
        arrivals += [start + rng.uniform(0, 300) for _ in range(400)]
    arrivals.sort()
    return Scenario("10k-users", arrivals, [_duration(rng) for _ in arrivals], 40)


@dataclass
class Replica:
    ready_at: float
    busy_until: float = 0.0


@dataclass
class Result:
    policy: str
    scenario: str
    jobs: int
    p50_wait_s: float
    p95_wait_s: float
    max_wait_s: float
    gpu_hours: float
    cost_usd: float
    peak_replicas: int


@dataclass
class Fleet:
    replicas: list[Replica] = field(default_factory=list)
    paid_s: float = 0.0
    peak: int = 0

    def resize(self, desired: int, now: float) -> None:
        while len(self.replicas) < desired:
            self.replicas.append(Replica(ready_at=now + COLD_START_S))
        idle = [r for r in self.replicas if r.ready_at <= now and r.busy_until <= now]
        for r in idle[: max(0, len(self.replicas) - desired)]:
            self.replicas.remove(r)
        self.peak = max(self.peak, len(self.replicas))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def simulate(scenario: Scenario, name: str, policy: ScalePolicy | None, static: int) -> Result:
    """``policy`` None: a static fleet of ``static`` replicas."""
    fleet, state = Fleet(), ScaleState()
    if policy is None:
        fleet.resize(static, -COLD_START_S)  # warm before the day starts
    queue: deque[tuple[float, float]] = deque()
    waits: list[float] = []
    pending = deque(zip(scenario.arrivals, scenario.durations, strict=True))
    for now in range(DAY_S):
        while pending and pending[0][0] <= now:
            queue.append(pending.popleft())
        for replica in fleet.replicas:
            if queue and replica.ready_at <= now and replica.busy_until <= now:
                arrived, duration = queue.popleft()
                waits.append(now - arrived)
                replica.busy_until = now + duration
        if policy is not None and now % TICK_S == 0:
            busy = sum(1 for r in fleet.replicas if r.busy_until > now)
            oldest = now - queue[0][0] if queue else 0.0
            signals = Signals(len(queue), oldest, len(fleet.replicas), busy)
            decision = decide(policy, signals, state, float(now))
            state = decision.state
            fleet.resize(decision.desired, now)
        fleet.paid_s += len(fleet.replicas)
    return Result(
        policy=name,
        scenario=scenario.name,
        jobs=len(waits),
        p50_wait_s=percentile(waits, 0.5),
        p95_wait_s=percentile(waits, 0.95),
        max_wait_s=max(waits, default=0.0),
        gpu_hours=fleet.paid_s / 3600,
        cost_usd=fleet.paid_s / 3600 * USD_PER_HOUR,
        peak_replicas=fleet.peak,
    )


def policies(max_replicas: int) -> dict[str, ScalePolicy | None]:
    design = ScalePolicy(max_replicas=max_replicas)
    return {
        "static": None,
        "design": design,
        "no-warm-pool": replace(design, warm_pool=0, max_idle_s=120),
        "patient": replace(design, max_idle_s=1200),
        "eager": replace(design, scale_up_step=4, scale_up_window_s=30, scale_down_window_s=120),
    }


def run(seed: int) -> list[Result]:
    results = []
    for make in (workshop, ten_k_users):
        scenario = make(random.Random(seed))
        for name, policy in policies(scenario.max_replicas).items():
            results.append(simulate(scenario, name, policy, scenario.max_replicas))
    return results


def table(results: list[Result]) -> str:
    base = {r.scenario: r for r in results if r.policy == "static"}
    lines = [
        "| scenario | policy | jobs | p50 wait s | p95 wait s | max wait s | GPU hours | cost $"
        " | peak replicas | p95 wait vs static | cost vs static |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        b = base[r.scenario]
        wait_ratio = r.p95_wait_s / b.p95_wait_s if b.p95_wait_s else math.inf
        lines.append(
            f"| {r.scenario} | {r.policy} | {r.jobs} | {r.p50_wait_s:.0f} | {r.p95_wait_s:.0f}"
            f" | {r.max_wait_s:.0f} | {r.gpu_hours:.1f} | {r.cost_usd:.2f} | {r.peak_replicas}"
            f" | {'-' if r is b else f'{wait_ratio:.1f}x'}"
            f" | {'-' if r is b else f'{r.cost_usd / b.cost_usd:.2f}x'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = run(args.seed)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        print(table(results))


if __name__ == "__main__":
    main()
