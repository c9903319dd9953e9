"""`python -m comfyfleet.devstack` run as an operator runs it, with stand-in services."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from comfyfleet.devstack.launcher import grpc_serving
from comfyfleet.devstack.paths import REPO_ROOT
from comfyfleet.devstack.process import free_port, port_in_use
from tests.support import eventually
from tests.support.infra import session_dir

DUMMY = "tests.integration.devstack.dummy_service"
LINE_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """One base dir for the module: initdb once, later runs reuse the data dir."""
    with session_dir() as path:
        yield path


class Devstack:
    """A running `python -m comfyfleet.devstack ...` and what it printed so far."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def read_until(self, predicate: str) -> str:
        """Reads output lines until one contains `predicate`; returns that line."""
        assert self.proc.stdout is not None
        while True:
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), LINE_TIMEOUT_S)
            except TimeoutError:
                raise AssertionError(
                    f"no {predicate!r} in output:\n" + "".join(self.lines)
                ) from None
            if not raw:
                raise AssertionError(
                    f"exited without printing {predicate!r}:\n" + "".join(self.lines)
                )
            line = raw.decode()
            self.lines.append(line)
            if predicate in line:
                return line

    async def finish(self) -> int:
        assert self.proc.stdout is not None
        rest = await asyncio.wait_for(self.proc.stdout.read(), LINE_TIMEOUT_S)
        self.lines.append(rest.decode())
        return await asyncio.wait_for(self.proc.wait(), LINE_TIMEOUT_S)

    @property
    def output(self) -> str:
        return "".join(self.lines)


@asynccontextmanager
async def devstack(home: Path, *args: str, **env: str) -> AsyncIterator[Devstack]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "comfyfleet.devstack",
        *args,
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "COMFYFLEET_HOME": str(home),
            "COMFYFLEET_PG_PORT": "0",
            "COMFYFLEET_NATS_PORT": "0",
            "COMFYFLEET_S3_PORT": "0",
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield Devstack(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def last_env_seen(log: Path) -> dict[str, str]:
    """The environment the dummy printed on its latest start (logs append across runs)."""
    starts = [line for line in log.read_text().splitlines() if line.startswith("{")]
    env: dict[str, str] = json.loads(starts[-1])["env"]
    return env


def dummy_arg(name: str) -> tuple[str, str]:
    addr = f"127.0.0.1:{free_port()}"
    return addr, f"--service={name}={DUMMY}@{addr}"


async def test_up_serves_and_stops_on_sigterm(home: Path) -> None:
    alpha, alpha_arg = dummy_arg("alpha")
    beta, beta_arg = dummy_arg("beta")
    async with devstack(home, "up", alpha_arg, beta_arg) as run:
        await run.read_until("comfyfleet is up")
        await run.read_until(f"grpc {beta}")
        assert grpc_serving(alpha) and grpc_serving(beta)
        seen = last_env_seen(home / "logs" / "alpha.log")
        assert seen["COMFYFLEET_DATABASE_URL"].startswith("postgresql://postgres@127.0.0.1:")
        assert seen["COMFYFLEET_S3_BUCKET"] == "comfyfleet"
        assert seen["COMFYFLEET_GRPC_ADDR"] == alpha

        run.proc.send_signal(signal.SIGTERM)
        assert await run.finish() == 0, run.output
    assert "stopped" in run.output
    assert not grpc_serving(alpha) and not grpc_serving(beta)
    assert "stopping on SIGTERM" in (home / "logs" / "beta.log").read_text()


async def test_up_exits_non_zero_when_a_service_dies(home: Path) -> None:
    _, alpha_arg = dummy_arg("alpha")
    beta, beta_arg = dummy_arg("beta")
    async with devstack(home, "up", alpha_arg, beta_arg, DUMMY_CRASH="beta") as run:
        assert await run.finish() == 1, run.output
    assert "service beta exited with code 3" in run.output
    assert "crashing on purpose" in run.output
    assert not grpc_serving(beta)


async def test_killed_launcher_leaves_no_servers_behind(home: Path) -> None:
    async with devstack(home, "infra") as run:
        env = {}
        for _ in range(7):
            key, _, value = (await run.read_until("export ")).strip()[7:].partition("=")
            env[key] = value
        ports = [
            int(env["COMFYFLEET_DATABASE_URL"].rsplit(":", 1)[1].split("/")[0]),
            int(env["COMFYFLEET_NATS_URL"].rsplit(":", 1)[1]),
            int(env["COMFYFLEET_S3_ENDPOINT"].rsplit(":", 1)[1]),
        ]
        assert all(port_in_use(port) for port in ports)
        run.proc.kill()
        await run.proc.wait()

    async def all_closed() -> None:
        assert [p for p in ports if port_in_use(p)] == []

    await eventually(all_closed, timeout=20)


async def test_missing_s3rver_install_is_a_clear_error(home: Path, tmp_path: Path) -> None:
    async with devstack(home, "up", COMFYFLEET_NODE_DIR=str(tmp_path)) as run:
        assert await run.finish() == 2, run.output
    assert "s3rver npm package is not installed" in run.output
    assert "scripts/install-system-deps.sh" in run.output
    assert "Traceback" not in run.output
