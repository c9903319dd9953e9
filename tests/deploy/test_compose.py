"""The one-host stack: hardened containers, the executor fenced in, every service present."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.support import DEPLOY, SERVICES, compose, port_of

# The one container allowed root: it chowns fresh volumes for the non-root ones, then exits.
INIT = "volume-init"


def services() -> dict[str, Any]:
    return dict(compose()["services"])


def long_running() -> dict[str, Any]:
    return {name: s for name, s in services().items() if name != INIT}


def test_the_stack_has_infrastructure_services_and_both_executor_profiles() -> None:
    names = set(services())
    assert {"postgres", "nats", "minio", "otel-collector", *SERVICES, "executor-gpu"} <= names
    assert services()["executor"]["profiles"] == ["cpu"]
    assert services()["executor-gpu"]["profiles"] == ["gpu"]


@pytest.mark.parametrize("name", sorted(long_running()))
def test_every_container_is_non_root_read_only_without_capabilities(name: str) -> None:
    s = long_running()[name]
    uid = str(s["user"]).split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"{name} runs as {s.get('user')!r}"
    assert s["read_only"] is True
    assert s["cap_drop"] == ["ALL"]
    assert "cap_add" not in s and not s.get("privileged", False)
    assert "no-new-privileges:true" in s["security_opt"]


def test_the_volume_init_container_gets_chown_and_nothing_else() -> None:
    init = services()[INIT]
    assert init["cap_drop"] == ["ALL"] and init["cap_add"] == ["CHOWN"]
    assert init["network_mode"] == "none" and init["restart"] == "no"
    assert init["command"][0] == "chown"


def test_executors_sit_on_an_internal_network_with_only_the_scheduler_and_minio() -> None:
    stack = compose()
    assert stack["networks"]["executors"]["internal"] is True
    on_it = {name for name, s in services().items() if "executors" in (s.get("networks") or {})}
    assert on_it == {"executor", "executor-gpu", "scheduler", "minio"}
    for name in ("executor", "executor-gpu"):
        assert services()[name]["networks"] == ["executors"]


def test_minio_answers_to_the_presigned_url_host_on_both_networks() -> None:
    minio = services()["minio"]
    endpoint = services()["scheduler"]["environment"]["COMFYFLEET_S3_ENDPOINT"]
    host = endpoint.split("//")[1].split(":")[0]
    for network in ("platform", "executors"):
        assert host in minio["networks"][network]["aliases"]


def test_the_gpu_executor_reserves_an_nvidia_gpu() -> None:
    devices = services()["executor-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services()["executor-gpu"]["environment"]["COMFYFLEET_EXECUTOR_DEVICE"] == "cuda"


def test_state_lives_on_named_volumes() -> None:
    volumes = set(compose()["volumes"])
    mounts = {
        name: [m.split(":")[0] for m in s.get("volumes", [])] for name, s in services().items()
    }
    assert "nats-data" in mounts["nats"] and "postgres-data" in mounts["postgres"]
    assert "minio-data" in mounts["minio"] and "gateway-bootstrap" in mounts["gateway"]
    assert {"nats-data", "postgres-data", "minio-data", "gateway-bootstrap"} <= volumes


def test_the_nats_config_enables_jetstream_on_the_volume() -> None:
    conf = (DEPLOY / "compose" / "nats.conf").read_text()
    assert "jetstream" in conf and "store_dir: /data" in conf
    assert "/data" in [m.split(":")[1] for m in services()["nats"]["volumes"]]


def test_the_executor_advertises_its_own_service_name() -> None:
    for name in ("executor", "executor-gpu"):
        addr = services()[name]["environment"]["COMFYFLEET_EXECUTOR_ADVERTISE_ADDR"]
        assert addr == f"{name}:50055" and port_of(addr) == 50055


def test_k8s_dev_overlay_carries_the_same_nats_and_collector_configs() -> None:
    dev = DEPLOY / "k8s" / "overlays" / "dev"
    compose_dir = DEPLOY / "compose"
    assert (dev / "nats.conf").read_text() == (compose_dir / "nats.conf").read_text()
    assert (dev / "otel-collector-config.yaml").read_text() == (
        compose_dir / "otel-collector.yaml"
    ).read_text()
