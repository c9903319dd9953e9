"""The ECS GPU executor and the RunPod endpoint settings."""

from __future__ import annotations

import json
import re
from typing import Any

from comfyfleet.common.config import parse_duration
from tests.deploy.support import DEPLOY


def load(path: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DEPLOY / path).read_text())
    return loaded


def task() -> dict[str, Any]:
    return load("ecs/executor-task-definition.json")


def test_the_task_takes_one_gpu_on_ec2() -> None:
    (container,) = task()["containerDefinitions"]
    assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert task()["requiresCompatibilities"] == ["EC2"]
    assert task()["networkMode"] == "awsvpc"


def test_the_container_is_non_root_read_only_without_capabilities() -> None:
    (container,) = task()["containerDefinitions"]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", container["user"])
    assert container["readonlyRootFilesystem"] is True
    assert container["privileged"] is False
    linux = container["linuxParameters"]
    assert linux["capabilities"] == {"drop": ["ALL"]}
    writable = {t["containerPath"] for t in linux["tmpfs"]} | {
        m["containerPath"] for m in container["mountPoints"]
    }
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert {"/tmp", env["COMFYFLEET_EXECUTOR_WORK_DIR"]} <= writable
    volumes = {v["name"] for v in task()["volumes"]}
    assert {m["sourceVolume"] for m in container["mountPoints"]} <= volumes


def test_health_check_and_logs() -> None:
    (container,) = task()["containerDefinitions"]
    assert container["healthCheck"]["command"] == [
        "CMD",
        "python",
        "/opt/comfyfleet/healthcheck.py",
    ]
    # ECS allows at most 300 s of start period: torch and CUDA load within it.
    assert container["healthCheck"]["startPeriod"] <= 300
    logs = container["logConfiguration"]
    assert logs["logDriver"] == "awslogs"
    assert {"awslogs-group", "awslogs-region", "awslogs-stream-prefix"} <= set(logs["options"])
    # Longer than the executor's shutdown grace, so a running attempt is handed back.
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert container["stopTimeout"] > parse_duration(env["COMFYFLEET_EXECUTOR_SHUTDOWN_GRACE"])


def test_the_task_holds_no_aws_credentials_and_no_secrets() -> None:
    # Executors get presigned URLs: no task role, no secrets.
    assert "taskRoleArn" not in task()
    (container,) = task()["containerDefinitions"]
    assert "secrets" not in container


def test_the_service_runs_the_task_privately_and_rolls_back_bad_deploys() -> None:
    service = load("ecs/executor-service.json")
    assert service["taskDefinition"] == task()["family"]
    vpc = service["networkConfiguration"]["awsvpcConfiguration"]
    assert vpc["assignPublicIp"] == "DISABLED" and vpc["securityGroups"]
    breaker = service["deploymentConfiguration"]["deploymentCircuitBreaker"]
    assert breaker == {"enable": True, "rollback": True}
    assert service["enableExecuteCommand"] is False


def test_runpod_endpoint_scales_to_zero_with_flashboot_on_gpus() -> None:
    endpoint = load("runpod/endpoint.json")["endpoint"]
    assert endpoint["workersMin"] == 0 < endpoint["workersMax"]
    assert endpoint["flashboot"] is True
    assert endpoint["gpuTypeIds"] and endpoint["gpuCount"] == 1
    assert endpoint["idleTimeout"] == 600
    assert endpoint["scalerType"] == "QUEUE_DELAY" and endpoint["scalerValue"] == 30


def test_runpod_runs_the_worker_image() -> None:
    template = load("runpod/endpoint.json")["template"]
    assert template["isServerless"] is True
    # executor-runpod, or executor-comfyui-runpod for a ComfyUI environment's worker.
    assert template["imageName"].split(":")[0].endswith("/${COMFYFLEET_EXECUTOR_IMAGE}-runpod")
    cache = int(template["env"]["COMFYFLEET_EXECUTOR_MODEL_CACHE_BYTES"])
    assert cache < template["containerDiskInGb"] * 1024**3


def test_the_ecs_task_and_the_runpod_template_name_the_environment_they_serve() -> None:
    (container,) = task()["containerDefinitions"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["COMFYFLEET_ENVIRONMENT"] == "${COMFYFLEET_ENVIRONMENT}"
    template = load("runpod/endpoint.json")["template"]
    assert template["env"]["COMFYFLEET_ENVIRONMENT"] == "${COMFYFLEET_ENVIRONMENT}"
