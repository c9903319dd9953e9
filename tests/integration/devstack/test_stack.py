from __future__ import annotations

import io
from dataclasses import replace

import asyncpg
import nats
import pytest
from nats.js.api import StreamConfig

from comfyfleet.devstack.errors import DevStackError
from comfyfleet.devstack.stack import DevStack, StackConfig


async def _write_everything(env: dict[str, str]) -> None:
    conn = await asyncpg.connect(env["COMFYFLEET_DATABASE_URL"])
    try:
        await conn.execute("CREATE TABLE kept (v text)")
        await conn.execute("INSERT INTO kept VALUES ('row survives')")
    finally:
        await conn.close()
    nc = await nats.connect(env["COMFYFLEET_NATS_URL"])
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="KEPT", subjects=["kept.>"]))
        await js.publish("kept.one", b"message survives")
    finally:
        await nc.close()


async def _read_everything(env: dict[str, str]) -> tuple[str, int]:
    conn = await asyncpg.connect(env["COMFYFLEET_DATABASE_URL"])
    try:
        row = await conn.fetchval("SELECT v FROM kept")
    finally:
        await conn.close()
    nc = await nats.connect(env["COMFYFLEET_NATS_URL"])
    try:
        info = await nc.jetstream().stream_info("KEPT")
    finally:
        await nc.close()
    return row, info.state.messages


async def test_data_survives_a_restart(stack_config: StackConfig) -> None:
    with DevStack(stack_config) as stack:
        env = stack.env()
        await _write_everything(env)
        stack.s3.client().put_object(
            env["COMFYFLEET_S3_BUCKET"], "outputs/o.txt", io.BytesIO(b"object survives"), 15
        )

    with DevStack(stack_config) as stack:
        env = stack.env()
        assert await _read_everything(env) == ("row survives", 1)
        response = stack.s3.client().get_object(env["COMFYFLEET_S3_BUCKET"], "outputs/o.txt")
        try:
            assert response.read() == b"object survives"
        finally:
            response.close()
            response.release_conn()


def test_env_contract_and_layout(stack_config: StackConfig) -> None:
    with DevStack(stack_config) as stack:
        env = stack.env()
        assert env == {
            "COMFYFLEET_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{stack.postgres.port}/comfyfleet",
            "COMFYFLEET_NATS_URL": f"nats://127.0.0.1:{stack.nats.port}",
            "COMFYFLEET_S3_ENDPOINT": f"http://127.0.0.1:{stack.s3.port}",
            "COMFYFLEET_S3_ACCESS_KEY": "comfyfleet",
            "COMFYFLEET_S3_SECRET_KEY": "comfyfleet-dev-secret",
            "COMFYFLEET_S3_REGION": "us-east-1",
            "COMFYFLEET_S3_BUCKET": "comfyfleet",
        }
        assert stack.s3.client().bucket_exists("comfyfleet")
        base = stack_config.base_dir
        assert (base / "postgres" / "data" / "PG_VERSION").is_file()
        assert (base / "nats" / "jetstream").is_dir()
        logs = {p.name for p in (base / "logs").iterdir()}
        assert {"postgres.log", "nats.log", "s3.log"} <= logs


def test_base_dir_and_fixed_ports_are_not_shared(stack_config: StackConfig) -> None:
    with DevStack(stack_config) as first:
        with pytest.raises(DevStackError, match="another devstack is running"):
            DevStack(stack_config).start()
        clash = replace(
            stack_config, base_dir=stack_config.base_dir / "second", pg_port=first.postgres.port
        )
        second = DevStack(clash)
        with pytest.raises(DevStackError, match=rf"port {first.postgres.port} .* already in use"):
            second.start()
        assert not second.nats.running()


def test_config_from_env_defaults_and_overrides() -> None:
    defaults = StackConfig.from_env({"COMFYFLEET_HOME": "/srv/cf"})
    assert (defaults.pg_port, defaults.nats_port, defaults.s3_port) == (55432, 54222, 59000)
    assert defaults.s3_backend == "s3rver"
    assert str(defaults.base_dir) == "/srv/cf"
    custom = StackConfig.from_env(
        {"COMFYFLEET_PG_PORT": "0", "COMFYFLEET_S3_PORT": "6000", "COMFYFLEET_S3_BACKEND": "moto"}
    )
    assert custom.pg_port is None
    assert custom.s3_port == 6000
    assert custom.s3_backend == "moto"
    with pytest.raises(DevStackError, match="not a port"):
        StackConfig.from_env({"COMFYFLEET_NATS_PORT": "abc"})
    with pytest.raises(DevStackError, match="choose one of"):
        StackConfig.from_env({"COMFYFLEET_S3_BACKEND": "minio"})
