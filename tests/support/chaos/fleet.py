"""The platform's processes for a chaos run, and the thread that supervises and harms them.

Every service runs as ``make up`` runs it, under one :class:`Launcher` with a restart policy:
a gateway, two scheduler replicas (the gateway and each executor reach them as one gRPC
target of two addresses, as a Kubernetes Service would), models, webhook and two native
executors. PostgreSQL and NATS are this fleet's own, so they can be restarted; the object
store is given (nothing here restarts it).

One thread, :class:`Chaos`, does everything that starts a process after the start: reviving
dead services and restarting PostgreSQL and NATS. The kernel stops a child when the thread
that started it ends, so that thread lives as long as the fleet.
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from comfyfleet.devstack.launcher import Launcher, RestartPolicy, ServiceSpec, grpc_serving
from comfyfleet.devstack.nats import NatsServer
from comfyfleet.devstack.postgres import PostgresServer
from comfyfleet.devstack.process import Server, free_port
from tests.support.infra import session_dir

SERVICES = (
    "gateway",
    "scheduler-a",
    "scheduler-b",
    "models",
    "webhook",
    "executor-a",
    "executor-b",
)
INFRA = ("postgres", "nats")
STREAM = "CHAOS_EVENTS"
# Leases and heartbeats short enough that a killed executor or scheduler is noticed within
# seconds (as in test_no_lost_work).
SCHEDULER_ENV = {
    "COMFYFLEET_SCHEDULER_LEASE": "4s",
    "COMFYFLEET_SCHEDULER_HEARTBEAT_INTERVAL": "1s",
    "COMFYFLEET_SCHEDULER_REAPER_INTERVAL": "200ms",
    "COMFYFLEET_SCHEDULER_POLL_INTERVAL": "200ms",
    "COMFYFLEET_SCHEDULER_BACKOFF_BASE": "200ms",
    "COMFYFLEET_SCHEDULER_BACKOFF_MAX": "1s",
    "COMFYFLEET_SCHEDULER_SHUTDOWN_GRACE": "2s",
}
RESTARTS = RestartPolicy(backoff_s=0.3, max_backoff_s=3.0, stable_s=10.0)


@dataclass(frozen=True)
class ObjectStoreInfo:
    """Where outputs go: an S3 endpoint, its keys and a bucket that exists."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    bucket: str

    def env(self) -> dict[str, str]:
        return {
            "COMFYFLEET_S3_ENDPOINT": self.endpoint,
            "COMFYFLEET_S3_ACCESS_KEY": self.access_key,
            "COMFYFLEET_S3_SECRET_KEY": self.secret_key,
            "COMFYFLEET_S3_REGION": self.region,
            "COMFYFLEET_S3_BUCKET": self.bucket,
        }


@dataclass(frozen=True)
class Addrs:
    gateway: str
    rest: str
    schedulers: tuple[str, str]
    models: str
    webhook: str
    executors: tuple[str, str]

    @classmethod
    def free(cls) -> Addrs:
        a = [f"127.0.0.1:{free_port()}" for _ in range(8)]
        return cls(a[0], a[1], (a[2], a[3]), a[4], a[5], (a[6], a[7]))

    def scheduler_target(self, first: int = 0) -> str:
        """Both replicas as one gRPC target; the channel moves on when one goes away."""
        ordered = self.schedulers[first:] + self.schedulers[:first]
        return "ipv4:" + ",".join(ordered)


def fleet_services(addrs: Addrs, work: Path) -> list[ServiceSpec]:
    schedulers = [
        ServiceSpec(
            f"scheduler-{x}",
            addr,
            {**SCHEDULER_ENV, "COMFYFLEET_MODELS_ADDR": addrs.models},
            module="services.scheduler",
        )
        for x, addr in zip("ab", addrs.schedulers, strict=True)
    ]
    gateway = {
        "COMFYFLEET_REST_ADDR": addrs.rest,
        "COMFYFLEET_SCHEDULER_ADDR": addrs.scheduler_target(),
        "COMFYFLEET_MODELS_ADDR": addrs.models,
        "COMFYFLEET_WEBHOOK_ADDR": addrs.webhook,
    }
    return [
        ServiceSpec("models", addrs.models),
        ServiceSpec("webhook", addrs.webhook, {"COMFYFLEET_WEBHOOK_ALLOW_LOOPBACK": "1"}),
        *schedulers,
        ServiceSpec("gateway", addrs.gateway, gateway),
        *(_executor(addrs, i, work) for i in range(2)),
    ]


def _executor(addrs: Addrs, i: int, work: Path) -> ServiceSpec:
    name = f"executor-{'ab'[i]}"
    env = {
        "COMFYFLEET_SCHEDULER_ADDR": addrs.scheduler_target(first=i),
        "COMFYFLEET_EXECUTOR_ADVERTISE_ADDR": addrs.executors[i],
        "COMFYFLEET_EXECUTOR_ID": name,
        "COMFYFLEET_EXECUTOR_DEVICE": "cpu",
        "COMFYFLEET_EXECUTOR_WORK_DIR": str(work / name),
        "COMFYFLEET_EXECUTOR_SHUTDOWN_GRACE": "1s",
    }
    return ServiceSpec(
        name, addrs.executors[i], env, module="services.executor", ready_timeout_s=180
    )


@dataclass(frozen=True)
class Action:
    """At ``at_s`` into the chaos: SIGKILL a service, or restart PostgreSQL or NATS."""

    at_s: float
    target: str

    @property
    def kind(self) -> str:
        return "restart" if self.target in INFRA else "kill"


def chaos_plan(
    rng: random.Random,
    window_s: float,
    kill_gap_s: tuple[float, float],
    infra_restarts: int = 1,
) -> list[Action]:
    """Kills every ``kill_gap_s`` (uniform) for ``window_s`` and until each service died once
    (in a shuffled order, then at random); the window cut in ``infra_restarts`` parts, each
    restarting PostgreSQL at a third of the way and NATS at two thirds."""
    first_round = list(SERVICES)
    rng.shuffle(first_round)
    actions, t = [], 0.0
    while True:
        t += rng.uniform(*kill_gap_s)
        if t >= window_s and not first_round:
            break
        actions.append(Action(t, first_round.pop() if first_round else rng.choice(SERVICES)))
    part = window_s / infra_restarts
    for i in range(infra_restarts):
        actions += [Action(part * (i + 1 / 3), "postgres"), Action(part * (i + 2 / 3), "nats")]
    return sorted(actions, key=lambda a: a.at_s)


@dataclass
class Outage:
    """PostgreSQL or NATS down from ``down_at`` to ``up_at`` (monotonic seconds)."""

    target: str
    down_at: float
    up_at: float = 0.0


@dataclass
class ChaosLog:
    """What the chaos did: kills by service (and those that found it already dead), and
    PostgreSQL and NATS outages."""

    kills: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)
    outages: list[Outage] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


class Chaos(threading.Thread):
    """Revives dead services (the launcher's restart policy) all along, and carries out a
    plan of kills and restarts between :meth:`begin` and the plan's end or :meth:`calm`."""

    def __init__(self, launcher: Launcher, infra: dict[str, Server]) -> None:
        super().__init__(name="chaos", daemon=True)
        self.launcher = launcher
        self.infra = infra
        self.log = ChaosLog()
        self.plan_done = threading.Event()
        self.infra_down_s = 1.0
        self._plan: list[Action] = []
        self._t0: float | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()

    def begin(self, plan: list[Action]) -> None:
        """Carries out ``plan`` from now, in a fresh log."""
        with self._lock:
            self._plan, self._t0 = list(plan), time.monotonic()
            self.log = ChaosLog()
            self.plan_done.clear()

    def calm(self) -> None:
        """No further harm; dead services are still revived."""
        with self._lock:
            self._plan = []
        self.plan_done.set()

    def finish(self) -> None:
        self._done.set()
        self.join(timeout=30)

    def run(self) -> None:
        while not self._done.is_set():
            self.launcher.revive_dead()
            action = self._due()
            if action is not None:
                self._perform(action)
            self._done.wait(0.05)

    def _due(self) -> Action | None:
        with self._lock:
            if self._t0 is None or not self._plan:
                return None
            if time.monotonic() - self._t0 < self._plan[0].at_s:
                return None
            action = self._plan.pop(0)
            if not self._plan:
                self.plan_done.set()
            return action

    def _perform(self, action: Action) -> None:
        t = time.monotonic() - (self._t0 or 0.0)
        if action.kind == "restart":
            self._restart(action.target)
        else:
            self._kill(action.target)
        self.log.lines.append(f"{t:7.2f}s {action.kind} {action.target}")

    def _kill(self, name: str) -> None:
        process = self.launcher.processes[name]
        if process.pid is None or not process.running():
            self.log.missed[name] += 1
            return
        os.kill(process.pid, signal.SIGKILL)
        self.log.kills[name] += 1

    def _restart(self, name: str) -> None:
        server = self.infra[name]
        outage = Outage(name, time.monotonic())
        self.log.outages.append(outage)
        server.stop()
        self._done.wait(self.infra_down_s)
        server.start()
        outage.up_at = time.monotonic()


class ChaosFleet:
    """The platform and its own PostgreSQL and NATS; ``with ChaosFleet.running(...)``."""

    def __init__(self, base: Path, store: ObjectStoreInfo) -> None:
        self.base = base
        self.addrs = Addrs.free()
        self.postgres = PostgresServer(data_dir=base / "postgres", durable=False, port=free_port())
        self.nats = NatsServer(data_dir=base / "nats", port=free_port())
        self.store = store
        self.launcher: Launcher | None = None
        self.chaos: Chaos | None = None
        # Where each service's log stood at mark_logs(): what is counted is after it.
        self._log_marks: dict[Path, int] = {}

    @classmethod
    @contextmanager
    def running(cls, store: ObjectStoreInfo) -> Iterator[ChaosFleet]:
        with session_dir() as base:
            fleet = cls(base, store)
            try:
                fleet._start()
                yield fleet
            finally:
                fleet._stop()

    @property
    def env(self) -> dict[str, str]:
        return {
            "COMFYFLEET_DATABASE_URL": self.postgres.dsn("comfyfleet"),
            "COMFYFLEET_NATS_URL": self.nats.url,
            "COMFYFLEET_NATS_STREAM": STREAM,
            "COMFYFLEET_NATS_SUBJECT_PREFIX": "chaos.events",
            "COMFYFLEET_ADMIN_KEY_FILE": str(self.base / "admin.key"),
            "COMFYFLEET_WEBHOOK_RETRY_SCHEDULE": "0.2,0.5,1,2,5",
            # A killed webhook process's claims and unacked messages come back this soon.
            "COMFYFLEET_WEBHOOK_CLAIM_LEASE": "5s",
            "COMFYFLEET_WEBHOOK_REQUEST_TIMEOUT": "2s",
            "COMFYFLEET_WEBHOOK_ACK_WAIT": "5s",
            "COMFYFLEET_GATEWAY_RATE_PER_S": "0",
            **self.store.env(),
        }

    @property
    def admin_key(self) -> str:
        return (self.base / "admin.key").read_text().strip()

    @property
    def log_dir(self) -> Path:
        return self.base / "logs"

    def _start(self) -> None:
        self.postgres.start()
        self.postgres.create_database("comfyfleet")
        self.nats.start()
        self.launcher = Launcher(
            fleet_services(self.addrs, self.base / "work"),
            base_env=self.env,
            log_dir=self.log_dir,
            stop_grace_s=5.0,
            restart=RESTARTS,
        )
        self.launcher.start_all(together=True)
        self.chaos = Chaos(self.launcher, {"postgres": self.postgres, "nats": self.nats})
        self.chaos.start()

    def _stop(self) -> None:
        if self.launcher is not None and self.chaos is not None:
            self.chaos.calm()
        if self.launcher is not None:
            if self.chaos is not None:
                self.chaos.finish()
            self.launcher.stop_all()
        self.nats.stop()
        self.postgres.stop()

    def all_serving(self) -> bool:
        """Every service answers its health check (blocking: call it in a thread)."""
        assert self.launcher is not None
        return all(grpc_serving(spec.grpc_addr) for spec in self.launcher.services)

    def internal_answers(self) -> Counter[str]:
        """Calls any service answered INTERNAL so far, by "service method": what the error
        interceptor logs as "unhandled error in <method>" (internal calls included)."""
        return self._logged(re.compile(r"unhandled error in (\S+)"))

    def unavailable_answers(self) -> Counter[str]:
        """Calls any service answered UNAVAILABLE because a dependency was down."""
        return self._logged(re.compile(r" (\S+) met a dependency that is down"))

    def mark_logs(self) -> None:
        """Counts of answers from now on leave out what the logs hold already."""
        self._log_marks = {log: log.stat().st_size for log in self.log_dir.glob("*.log")}

    def _logged(self, pattern: re.Pattern[str]) -> Counter[str]:
        found: Counter[str] = Counter()
        for log in sorted(self.log_dir.glob("*.log")):
            with log.open("rb") as f:
                f.seek(self._log_marks.get(log, 0))
                text = f.read().decode(errors="replace")
            for match in pattern.finditer(text):
                found[f"{log.stem} {match.group(1).rsplit('/', 1)[-1]}"] += 1
        return found

    def tail(self, name: str) -> str:
        assert self.launcher is not None
        return self.launcher.processes[name].tail()
