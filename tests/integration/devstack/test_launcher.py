"""The launcher with stand-in services (dummy_service.py) instead of the platform's."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from comfyfleet.devstack.launcher import (
    Launcher,
    PlatformAddrs,
    RestartPolicy,
    ServiceFailed,
    ServiceSpec,
    grpc_serving,
    platform_services,
)
from comfyfleet.devstack.process import free_port

DUMMY = "tests.integration.devstack.dummy_service"


def dummy(name: str, **env: str) -> ServiceSpec:
    return ServiceSpec(name, f"127.0.0.1:{free_port()}", env=env, module=DUMMY, ready_timeout_s=30)


def launcher(tmp_path: Path, *services: ServiceSpec, **base_env: str) -> Launcher:
    return Launcher(services, base_env=base_env, log_dir=tmp_path, stop_grace_s=5)


def env_seen_by(launched: Launcher, name: str) -> dict[str, str]:
    first_line = launched.processes[name].log_path.read_text().splitlines()[1]
    env: dict[str, str] = json.loads(first_line)["env"]
    return env


def test_starts_services_in_order_and_stops_them(tmp_path: Path) -> None:
    alpha, beta = dummy("alpha", COMFYFLEET_EXTRA="for-alpha"), dummy("beta")
    launched = launcher(tmp_path, alpha, beta, COMFYFLEET_DATABASE_URL="postgresql://db")
    try:
        launched.start_all()
        assert grpc_serving(alpha.grpc_addr) and grpc_serving(beta.grpc_addr)
        assert list(launched.processes) == ["alpha", "beta"]
        seen = env_seen_by(launched, "alpha")
        assert seen["COMFYFLEET_GRPC_ADDR"] == alpha.grpc_addr
        assert seen["COMFYFLEET_SERVICE_NAME"] == "alpha"
        assert seen["COMFYFLEET_DATABASE_URL"] == "postgresql://db"
        assert seen["COMFYFLEET_EXTRA"] == "for-alpha"
        assert "COMFYFLEET_EXTRA" not in env_seen_by(launched, "beta")
    finally:
        launched.stop_all()
    assert [p.returncode() for p in launched.processes.values()] == [0, 0]
    assert not grpc_serving(alpha.grpc_addr)
    assert "stopping on SIGTERM" in launched.processes["beta"].tail()


def test_a_crashed_service_is_reported_with_its_log(tmp_path: Path) -> None:
    launched = launcher(tmp_path, dummy("alpha"), dummy("beta"), DUMMY_CRASH="beta")
    try:
        launched.start_all()
        with pytest.raises(ServiceFailed) as failed:
            launched.supervise(poll_s=0.05)
    finally:
        launched.stop_all()
    assert failed.value.service == "beta"
    assert "exited with code 3" in str(failed.value)
    assert "crashing on purpose" in str(failed.value)


def test_a_service_that_exits_while_starting_fails_fast(tmp_path: Path) -> None:
    launched = launcher(tmp_path, dummy("alpha"), dummy("beta"), DUMMY_FAIL_START="alpha")
    try:
        with pytest.raises(ServiceFailed, match="exited with code 4 while starting") as failed:
            launched.start_all()
    finally:
        launched.stop_all()
    assert "failing on purpose" in str(failed.value)
    assert "beta" not in launched.processes


def test_a_service_never_serving_times_out(tmp_path: Path) -> None:
    spec = ServiceSpec("alpha", f"127.0.0.1:{free_port()}", module=DUMMY, ready_timeout_s=1.5)
    launched = launcher(tmp_path, spec, DUMMY_NOT_SERVING="alpha")
    try:
        with pytest.raises(ServiceFailed, match=r"not SERVING .* after 2s"):
            launched.start_all()
    finally:
        launched.stop_all()


def test_a_service_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    launched = Launcher(
        [dummy("alpha")],
        base_env={"DUMMY_IGNORE_SIGTERM": "alpha"},
        log_dir=tmp_path,
        stop_grace_s=0.5,
    )
    launched.start_all()
    launched.stop_all()
    assert launched.processes["alpha"].returncode() == -9


def wait_for(check: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_with_a_restart_policy_a_killed_service_comes_back_on_its_address(
    tmp_path: Path,
) -> None:
    alpha, beta = dummy("alpha"), dummy("beta")
    launched = Launcher(
        [alpha, beta],
        base_env={},
        log_dir=tmp_path,
        stop_grace_s=5,
        restart=RestartPolicy(backoff_s=0.1),
    )
    supervisor = threading.Thread(target=launched.supervise, kwargs={"poll_s": 0.05})
    try:
        launched.start_all()
        supervisor.start()
        first = launched.processes["beta"]
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        wait_for(lambda: launched.processes["beta"] is not first and grpc_serving(beta.grpc_addr))
        assert launched.restarts == {"beta": 1}
        assert first.returncode() == -signal.SIGKILL
    finally:
        launched.stop_event.set()
        supervisor.join(timeout=10)
        launched.stop_all()
    assert launched.processes["beta"].tail().count("starting:") == 2


def test_a_service_that_keeps_dying_is_restarted_with_a_growing_backoff(tmp_path: Path) -> None:
    launched = Launcher(
        [dummy("alpha")],
        base_env={"DUMMY_FAIL_START": "alpha"},
        log_dir=tmp_path,
        restart=RestartPolicy(backoff_s=0.2, max_backoff_s=0.8, stable_s=60),
    )
    launched._spawn(launched.services[0])  # what start_all does, without waiting to serve
    next_waits: list[float] = []
    try:
        while len(next_waits) < 4:
            if launched.revive_dead():
                next_waits.append(launched._revivals["alpha"].backoff_s)
            time.sleep(0.02)
    finally:
        launched.stop_all()
    # Every start fails at once: the wait before the next one doubles up to the cap.
    assert next_waits == [0.4, 0.8, 0.8, 0.8]
    assert launched.restarts == {"alpha": 4}
    assert launched.processes["alpha"].tail().count("starting:") == 5


def test_platform_services_contract() -> None:
    services = {s.name: s for s in platform_services()}
    assert list(services) == ["models", "webhook", "scheduler", "gateway", "executor"]
    assert {n: s.grpc_addr for n, s in services.items()} == {
        "models": "127.0.0.1:50053",
        "webhook": "127.0.0.1:50054",
        "scheduler": "127.0.0.1:50052",
        "gateway": "127.0.0.1:50051",
        "executor": "127.0.0.1:50055",
    }
    assert all(s.python_module == f"services.{s.name}" for s in services.values())
    assert services["gateway"].env == {
        "COMFYFLEET_REST_ADDR": "127.0.0.1:8080",
        "COMFYFLEET_SCHEDULER_ADDR": "127.0.0.1:50052",
        "COMFYFLEET_MODELS_ADDR": "127.0.0.1:50053",
        "COMFYFLEET_WEBHOOK_ADDR": "127.0.0.1:50054",
        "COMFYFLEET_METRICS_ADDR": "127.0.0.1:9101",
    }
    assert services["executor"].env == {
        "COMFYFLEET_SCHEDULER_ADDR": "127.0.0.1:50052",
        "COMFYFLEET_EXECUTOR_ADVERTISE_ADDR": "127.0.0.1:50055",
        "COMFYFLEET_METRICS_ADDR": "127.0.0.1:9105",
    }
    assert services["webhook"].env == {
        "COMFYFLEET_WEBHOOK_ALLOW_LOOPBACK": "1",
        "COMFYFLEET_METRICS_ADDR": "127.0.0.1:9104",
    }
    assert services["scheduler"].env == {
        "COMFYFLEET_MODELS_ADDR": "127.0.0.1:50053",
        "COMFYFLEET_METRICS_ADDR": "127.0.0.1:9102",
    }
    metrics_off = {s.name: s for s in platform_services(PlatformAddrs(metrics_port_base=0))}
    assert all("COMFYFLEET_METRICS_ADDR" not in s.env for s in metrics_off.values())
