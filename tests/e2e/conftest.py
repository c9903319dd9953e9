"""The whole platform as processes, the way an operator runs it, on this session's servers."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from comfyfleet.devstack.launcher import (
    ComfyUIExecutor,
    Launcher,
    PlatformAddrs,
    platform_services,
    work_dirs,
)
from comfyfleet.devstack.process import free_port
from tests.support.infra import NatsInfo, PostgresInfo, S3Info
from tests.support.names import (
    unique_bucket_name,
    unique_database_name,
    unique_stream_name,
    unique_subject_prefix,
)


@dataclass(frozen=True)
class Platform:
    addrs: PlatformAddrs
    admin_key: str
    env: dict[str, str]
    log_dir: Path

    @property
    def rest_url(self) -> str:
        return f"http://{self.addrs.rest}"


def _free_addrs() -> PlatformAddrs:
    gateway, rest, scheduler, models, webhook, executor = (
        f"127.0.0.1:{free_port()}" for _ in range(6)
    )
    # No fixed metrics ports in tests: a module that scrapes sets its own through the env.
    return PlatformAddrs(gateway, rest, scheduler, models, webhook, executor, metrics_port_base=0)


@pytest.fixture(scope="module")
def platform_extra_env() -> dict[str, str]:
    """Variables a test module adds to every service's environment: override this fixture
    in the module (tracing and metrics settings, say)."""
    return {}


@pytest.fixture(scope="module")
def platform_comfyui() -> ComfyUIExecutor | None:
    """A ComfyUI executor to run beside the native one: override this fixture in a module
    that needs one (its ``addr`` is replaced by a free port)."""
    return None


@pytest.fixture(scope="module")
def platform(
    postgres_server: PostgresInfo,
    nats_server: NatsInfo,
    s3_server: S3Info,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    platform_extra_env: dict[str, str],
    platform_comfyui: ComfyUIExecutor | None,
) -> Iterator[Platform]:
    """gateway, scheduler, models, webhook and one native executor, each its own process
    (and a ComfyUI executor when the module asks for one)."""
    hint = request.module.__name__.rsplit(".", 1)[-1]
    workdir = tmp_path_factory.mktemp(hint)
    env = {
        "COMFYFLEET_DATABASE_URL": postgres_server.create_database(unique_database_name(hint)),
        "COMFYFLEET_NATS_URL": nats_server.url,
        "COMFYFLEET_NATS_STREAM": unique_stream_name(hint),
        "COMFYFLEET_NATS_SUBJECT_PREFIX": unique_subject_prefix(hint),
        "COMFYFLEET_S3_ENDPOINT": s3_server.endpoint,
        "COMFYFLEET_S3_ACCESS_KEY": s3_server.access_key,
        "COMFYFLEET_S3_SECRET_KEY": s3_server.secret_key,
        "COMFYFLEET_S3_REGION": s3_server.region,
        "COMFYFLEET_S3_BUCKET": s3_server.create_bucket(unique_bucket_name(hint)),
        "COMFYFLEET_ADMIN_KEY_FILE": str(workdir / "admin.key"),
        "COMFYFLEET_EXECUTOR_WORK_DIR": str(workdir / "executor"),
        "COMFYFLEET_WEBHOOK_RETRY_SCHEDULE": "0.2,0.5,1",
        **platform_extra_env,
    }
    addrs = _free_addrs()
    comfyui = platform_comfyui
    if comfyui is not None:
        comfyui = dataclasses.replace(comfyui, addr=f"127.0.0.1:{free_port()}")
    services = work_dirs(platform_services(addrs, comfyui), workdir)
    launcher = Launcher(services, base_env=env, log_dir=workdir / "logs", stop_grace_s=10.0)
    try:
        launcher.start_all()
        key = (workdir / "admin.key").read_text().strip()
        yield Platform(addrs, key, env, workdir / "logs")
    finally:
        launcher.stop_all()
