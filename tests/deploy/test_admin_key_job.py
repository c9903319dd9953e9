"""The admin-key Job's script, run as the Job runs it, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from services.gateway import keys
from tests.deploy.support import find, pod_spec, render
from tests.support.paths import REPO_ROOT

WRITTEN = "admin key of tenant"


@pytest.fixture
def job_script() -> tuple[str, dict[str, str]]:
    (job,) = find(render("bootstrap"), "Job", "comfyfleet-admin-key")
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return container["args"][0], env


@pytest.fixture
def job(
    job_script: tuple[str, dict[str, str]], fresh_database: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    script, job_env = job_script
    key_file = tmp_path / "bootstrap" / "admin-key-x1y2z.key"
    env = {
        **os.environ,
        **job_env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "COMFYFLEET_DATABASE_URL": fresh_database,
        "COMFYFLEET_ADMIN_KEY_FILE": str(key_file),
    }
    # A session of its own: the gateway the script starts goes down with it.
    process = subprocess.Popen(
        ["/bin/sh", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield process, key_file
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


async def test_the_job_writes_an_admin_key_the_database_knows_then_waits(
    job: tuple[subprocess.Popen[str], Path], fresh_database: str
) -> None:
    process, key_file = job
    assert process.stdout is not None
    # The script prints once the gateway wrote the key and stopped; then it sleeps.
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout=120)
    assert line.startswith(WRITTEN), line
    assert process.poll() is None, "the Job must keep the key until it is fetched"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    parsed = keys.parse(key_file.read_text().strip())
    assert parsed is not None
    conn = await asyncpg.connect(fresh_database)
    try:
        row = await conn.fetchrow(
            "SELECT k.secret_sha256, k.scopes, t.name FROM gateway.api_keys k"
            " JOIN gateway.tenants t ON t.id = k.tenant_id WHERE k.id = $1",
            parsed.key_id,
        )
    finally:
        await conn.close()
    assert row is not None and row["name"] == "default" and "admin" in row["scopes"]
    assert keys.matches(parsed, row["secret_sha256"])
