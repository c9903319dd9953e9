"""Runs the platform's services on top of a DevStack, and supervises them.

`up`: start the infrastructure, then each service in order (waiting until its gRPC health
check says SERVING), print where everything listens, and watch. A service that dies takes the
whole platform down with a non-zero exit and its log tail; Ctrl-C or SIGTERM stops the
services (SIGTERM, a grace period, then SIGKILL) and then the infrastructure.

A launcher given a :class:`RestartPolicy` supervises as an orchestrator does instead: a
service that dies is started again, after a back-off that grows while it keeps dying.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from comfyfleet.devstack.errors import DevStackError
from comfyfleet.devstack.paths import REPO_ROOT
from comfyfleet.devstack.process import ManagedProcess
from comfyfleet.devstack.stack import DevStack, StackConfig


@dataclass(frozen=True)
class ServiceSpec:
    """One service process: `python -m <module>` serving gRPC (and health) on grpc_addr."""

    name: str
    grpc_addr: str
    env: Mapping[str, str] = field(default_factory=dict)
    module: str = ""
    extra_urls: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 60.0

    @property
    def python_module(self) -> str:
        return self.module or f"services.{self.name}"


@dataclass(frozen=True)
class PlatformAddrs:
    """Where each service of `make up` listens: fixed, so clients can rely on it."""

    gateway: str = "127.0.0.1:50051"
    rest: str = "127.0.0.1:8080"
    scheduler: str = "127.0.0.1:50052"
    models: str = "127.0.0.1:50053"
    webhook: str = "127.0.0.1:50054"
    executor: str = "127.0.0.1:50055"
    # Each service serves Prometheus /metrics on 127.0.0.1:<base + n>; 0 turns them off.
    metrics_port_base: int = 9101


@dataclass(frozen=True)
class ComfyUIExecutor:
    """A second executor, of a "comfyui" environment, driving a real ComfyUI it starts and
    supervises. ``comfyui_dir`` holds ``ComfyUI/`` (the source) and ``venv/`` (its Python),
    the layout ComfyUI's install script and our environment install step leave."""

    comfyui_dir: Path
    environment: str = "comfyui"
    addr: str = "127.0.0.1:50056"
    # A JSON file with the environment's declaration (custom nodes, carried models ...).
    spec_file: Path | None = None

    def command(self) -> str:
        root = self.comfyui_dir
        python = root / "venv" / "bin" / "python"
        return shlex.join([str(python), str(root / "ComfyUI" / "main.py"), "--disable-auto-launch"])

    def check(self) -> None:
        """Raises DevStackError naming what is missing from ``comfyui_dir``."""
        wanted = (
            self.comfyui_dir / "ComfyUI" / "main.py",
            self.comfyui_dir / "venv" / "bin" / "python",
        )
        missing = [str(p) for p in wanted if not p.exists()]
        if missing:
            raise DevStackError(
                f"COMFYUI_DIR={self.comfyui_dir} is not a ComfyUI install (missing "
                f"{', '.join(missing)}); make one with "
                "`../shared/comfyui-server/install.sh DIR` or the environment install step"
            )

    def service(self, scheduler_addr: str) -> ServiceSpec:
        env = {
            "COMFYFLEET_SCHEDULER_ADDR": scheduler_addr,
            "COMFYFLEET_EXECUTOR_ENGINE": "comfyui",
            "COMFYFLEET_COMFYUI_COMMAND": self.command(),
            "COMFYFLEET_ENVIRONMENT": self.environment,
            "COMFYFLEET_EXECUTOR_ID": f"local-{self.environment}",
            "COMFYFLEET_EXECUTOR_ADVERTISE_ADDR": self.addr,
        }
        if self.spec_file is not None:
            env["COMFYFLEET_ENVIRONMENT_SPEC"] = str(self.spec_file)
        # ComfyUI imports torch and its node packages before it answers.
        return ServiceSpec(
            "executor-comfyui", self.addr, env, module="services.executor", ready_timeout_s=300.0
        )

    @classmethod
    def from_env(cls) -> ComfyUIExecutor | None:
        """From ``COMFYUI_DIR`` (and ``COMFYUI_ENVIRONMENT``, ``COMFYUI_ENVIRONMENT_SPEC``);
        None when ``COMFYUI_DIR`` is not set."""
        root = os.environ.get("COMFYUI_DIR", "").strip()
        if not root:
            return None
        spec = os.environ.get("COMFYUI_ENVIRONMENT_SPEC", "").strip()
        return cls(
            Path(root).expanduser().resolve(),
            environment=os.environ.get("COMFYUI_ENVIRONMENT", "").strip() or "comfyui",
            spec_file=Path(spec).expanduser().resolve() if spec else None,
        )


def platform_services(
    addrs: PlatformAddrs | None = None, comfyui: ComfyUIExecutor | None = None
) -> list[ServiceSpec]:
    """The platform's services, in start order: dependencies first, the executors last;
    with ``comfyui``, a ComfyUI executor besides the native one."""
    a = addrs or PlatformAddrs()
    specs = _services(a)
    if comfyui is not None:
        comfyui.check()
        specs.append(comfyui.service(a.scheduler))
    return [_with_metrics(spec, a.metrics_port_base) for spec in specs]


# The metrics port of each service, counted from the base: stable whatever the start order.
_METRICS_OFFSET = {
    "gateway": 0,
    "scheduler": 1,
    "models": 2,
    "webhook": 3,
    "executor": 4,
    "executor-comfyui": 5,
}


def _with_metrics(spec: ServiceSpec, base: int) -> ServiceSpec:
    if not base or spec.name not in _METRICS_OFFSET:
        return spec
    addr = f"127.0.0.1:{base + _METRICS_OFFSET[spec.name]}"
    return ServiceSpec(
        spec.name,
        spec.grpc_addr,
        {**spec.env, "COMFYFLEET_METRICS_ADDR": addr},
        spec.module,
        {**spec.extra_urls, "metrics": f"http://{addr}/metrics"},
        spec.ready_timeout_s,
    )


def _services(a: PlatformAddrs) -> list[ServiceSpec]:
    return [
        ServiceSpec("models", a.models),
        ServiceSpec("webhook", a.webhook, {"COMFYFLEET_WEBHOOK_ALLOW_LOOPBACK": "1"}),
        ServiceSpec("scheduler", a.scheduler, {"COMFYFLEET_MODELS_ADDR": a.models}),
        ServiceSpec(
            "gateway",
            a.gateway,
            {
                "COMFYFLEET_REST_ADDR": a.rest,
                "COMFYFLEET_SCHEDULER_ADDR": a.scheduler,
                "COMFYFLEET_MODELS_ADDR": a.models,
                "COMFYFLEET_WEBHOOK_ADDR": a.webhook,
            },
            extra_urls={"rest": f"http://{a.rest}"},
        ),
        ServiceSpec(
            "executor",
            a.executor,
            {
                "COMFYFLEET_SCHEDULER_ADDR": a.scheduler,
                "COMFYFLEET_EXECUTOR_ADVERTISE_ADDR": a.executor,
            },
            ready_timeout_s=180.0,
        ),
    ]


ADMIN_KEY_FILE = "admin.key"


def platform_env(base_dir: Path) -> dict[str, str]:
    """What the services of a local platform keep under its base dir."""
    return {
        "COMFYFLEET_ADMIN_KEY_FILE": str(base_dir / ADMIN_KEY_FILE),
        "COMFYFLEET_EXECUTOR_WORK_DIR": str(base_dir / "executor"),
    }


def work_dirs(services: Sequence[ServiceSpec], base_dir: Path) -> list[ServiceSpec]:
    """Each executor beyond the first gets a work dir of its own under ``base_dir``."""
    out = []
    for spec in services:
        if spec.name.startswith("executor-") and "COMFYFLEET_EXECUTOR_WORK_DIR" not in spec.env:
            env = {**spec.env, "COMFYFLEET_EXECUTOR_WORK_DIR": str(base_dir / spec.name)}
            spec = ServiceSpec(
                spec.name, spec.grpc_addr, env, spec.module, spec.extra_urls, spec.ready_timeout_s
            )
        out.append(spec)
    return out


def grpc_serving(addr: str, timeout_s: float = 1.0) -> bool:
    """True when the grpc.health.v1 Check of the server at addr answers SERVING."""
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class ServiceFailed(DevStackError):
    """A service did not become healthy, or exited while the platform ran."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service


class StopRequested(DevStackError):
    """A signal asked the launcher to stop while it was still starting things."""


@dataclass(frozen=True)
class RestartPolicy:
    """How a supervising launcher brings a dead service back, as Kubernetes' ``restartPolicy:
    Always`` does: after ``backoff_s``, doubled for each death in a row up to
    ``max_backoff_s`` (a service that cannot start does not spin), and back to ``backoff_s``
    once it stayed up for ``stable_s``."""

    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    stable_s: float = 10.0


@dataclass
class _Revival:
    """A supervised service's restart bookkeeping."""

    started_at: float
    backoff_s: float
    due_at: float | None = None


class Launcher:
    """Starts services in order, watches them, and stops them in reverse order."""

    def __init__(
        self,
        services: Sequence[ServiceSpec],
        *,
        base_env: Mapping[str, str],
        log_dir: Path,
        stop_event: threading.Event | None = None,
        stop_grace_s: float = 10.0,
        cwd: Path = REPO_ROOT,
        restart: RestartPolicy | None = None,
    ) -> None:
        self.services = list(services)
        self.base_env = dict(base_env)
        self.log_dir = log_dir
        self.stop_event = stop_event or threading.Event()
        self.stop_grace_s = stop_grace_s
        self.cwd = cwd
        self.restart = restart
        self.processes: dict[str, ManagedProcess] = {}
        # How many times each service was started again after it died.
        self.restarts: dict[str, int] = {}
        self._revivals: dict[str, _Revival] = {}

    def start_all(self, *, together: bool = False) -> None:
        """Starts the services in order, each once the one before serves; ``together``
        starts them all at once, then waits for each (services retry peers that come late),
        which on a machine of several cores is quicker."""
        if together:
            started = [(spec, self._spawn(spec)) for spec in self.services]
            for spec, process in started:
                self._wait_healthy(spec, process)
            return
        for spec in self.services:
            if self.stop_event.is_set():
                raise StopRequested("stop requested during start")
            self._start(spec)

    def _start(self, spec: ServiceSpec) -> None:
        self._wait_healthy(spec, self._spawn(spec))

    def _spawn(self, spec: ServiceSpec) -> ManagedProcess:
        process = ManagedProcess(
            spec.name,
            [sys.executable, "-m", spec.python_module],
            log_path=self.log_dir / f"{spec.name}.log",
            env=self._env_for(spec),
            cwd=self.cwd,
        )
        self.processes[spec.name] = process
        process.start()
        if self.restart is not None:
            self._revivals[spec.name] = _Revival(time.monotonic(), self.restart.backoff_s)
        return process

    def _env_for(self, spec: ServiceSpec) -> dict[str, str]:
        pythonpath = os.pathsep.join(p for p in (str(self.cwd), os.environ.get("PYTHONPATH")) if p)
        return {
            **os.environ,
            **self.base_env,
            "PYTHONPATH": pythonpath,
            "PYTHONUNBUFFERED": "1",
            "COMFYFLEET_SERVICE_NAME": spec.name,
            "COMFYFLEET_GRPC_ADDR": spec.grpc_addr,
            **spec.env,
        }

    def _wait_healthy(self, spec: ServiceSpec, process: ManagedProcess) -> None:
        deadline = time.monotonic() + spec.ready_timeout_s
        while not grpc_serving(spec.grpc_addr):
            code = process.returncode()
            if code is not None:
                raise ServiceFailed(
                    spec.name, _failure(process, f"exited with code {code} while starting")
                )
            if time.monotonic() >= deadline:
                raise ServiceFailed(
                    spec.name,
                    _failure(
                        process,
                        f"not SERVING on {spec.grpc_addr} after {spec.ready_timeout_s:.0f}s",
                    ),
                )
            if self.stop_event.wait(0.1):
                raise StopRequested("stop requested during start")

    def supervise(self, poll_s: float = 0.2) -> None:
        """Returns when a stop is requested. A service that exits raises ServiceFailed, or
        with a restart policy is started again (see :meth:`revive_dead`)."""
        while not self.stop_event.wait(poll_s):
            if self.restart is not None:
                self.revive_dead()
                continue
            for name, process in self.processes.items():
                code = process.returncode()
                if code is not None:
                    raise ServiceFailed(name, _failure(process, f"exited with code {code}"))

    def revive_dead(self) -> list[str]:
        """One round of supervision under the restart policy: each service found dead is
        started again once its back-off has passed, without waiting for it to serve (a slow
        start delays no other revival); returns the names started.

        The kernel stops a child when the thread that started it ends, so call this from a
        thread that outlives the services (the one that calls :meth:`stop_all`).
        """
        if self.restart is None:
            raise DevStackError("revive_dead needs a launcher with a restart policy")
        now = time.monotonic()
        started = []
        for spec in self.services:
            process = self.processes.get(spec.name)
            revival = self._revivals.get(spec.name)
            if process is None or revival is None or process.returncode() is None:
                continue
            if revival.due_at is None:
                revival.due_at = now + self._backoff(revival, now)
            if now >= revival.due_at:
                backoff = revival.backoff_s
                self._spawn(spec)
                self._revivals[spec.name].backoff_s = backoff
                self.restarts[spec.name] = self.restarts.get(spec.name, 0) + 1
                started.append(spec.name)
        return started

    def _backoff(self, revival: _Revival, now: float) -> float:
        """The wait before the next start: reset when the service had stayed up, else grown."""
        assert self.restart is not None
        if now - revival.started_at >= self.restart.stable_s:
            revival.backoff_s = self.restart.backoff_s
            return revival.backoff_s
        wait = revival.backoff_s
        revival.backoff_s = min(revival.backoff_s * 2, self.restart.max_backoff_s)
        return wait

    def stop_all(self) -> None:
        """SIGTERM each service, newest first; SIGKILL whatever outlives the grace period."""
        for process in reversed(list(self.processes.values())):
            process.stop(grace_s=self.stop_grace_s)


def _failure(process: ManagedProcess, what: str) -> str:
    return f"service {process.name} {what}; last lines of {process.log_path}:\n{process.tail()}"


@contextmanager
def stop_on_signals(event: threading.Event) -> Iterator[None]:
    """Turns SIGINT and SIGTERM into `event` while the block runs."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: event.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_table(rows: Sequence[tuple[str, str, str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")
    out.flush()


def _table_rows(stack: DevStack, launcher: Launcher) -> list[tuple[str, str, str]]:
    rows = [("COMPONENT", "ADDRESS", "LOG")]
    rows += [(name, addr, str(log)) for name, addr, log in stack.endpoints()]
    for spec in launcher.services:
        urls = [f"grpc {spec.grpc_addr}", *(f"{k} {v}" for k, v in spec.extra_urls.items())]
        rows.append((spec.name, ", ".join(urls), str(launcher.processes[spec.name].log_path)))
    return rows


def run_up(
    config: StackConfig,
    services: Sequence[ServiceSpec],
    *,
    out: TextIO = sys.stdout,
    stop_grace_s: float = 10.0,
) -> int:
    """The whole platform until a signal (exit 0) or a failed service (exit 1)."""
    stop = threading.Event()
    with stop_on_signals(stop):
        stack = DevStack(config)
        launcher: Launcher | None = None
        try:
            stack.start()
            launcher = Launcher(
                work_dirs(services, config.base_dir),
                base_env={**stack.env(), **platform_env(config.base_dir)},
                log_dir=stack.log_dir,
                stop_event=stop,
                stop_grace_s=stop_grace_s,
            )
            launcher.start_all()
            out.write(f"comfyfleet is up (data in {config.base_dir}); Ctrl-C stops it\n")
            out.write(f"admin API key: {config.base_dir / ADMIN_KEY_FILE} (the CLI finds it)\n")
            _print_table(_table_rows(stack, launcher), out)
            launcher.supervise()
            out.write("stopping...\n")
            return 0
        except StopRequested:
            out.write("stopping...\n")
            return 0
        except DevStackError as exc:
            out.write(f"error: {exc}\nstopping...\n")
            return 1
        finally:
            if launcher is not None:
                launcher.stop_all()
            stack.stop()
            out.write("stopped\n")
            out.flush()


def run_infra(config: StackConfig, *, out: TextIO = sys.stdout) -> int:
    """Only the infrastructure: print its environment, run until a signal."""
    stop = threading.Event()
    with stop_on_signals(stop):
        try:
            stack = DevStack(config).start()
        except DevStackError as exc:
            out.write(f"error: {exc}\n")
            return 1
        try:
            for key, value in stack.env().items():
                out.write(f"export {key}={shlex.quote(value)}\n")
            _print_table(
                [("COMPONENT", "ADDRESS", "LOG")]
                + [(n, a, str(log)) for n, a, log in stack.endpoints()],
                out,
            )
            while not stop.wait(0.5):
                pass
            return 0
        finally:
            stack.stop()
            out.write("stopped\n")
            out.flush()
