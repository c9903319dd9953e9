"""ECS: executors run as tasks of one ECS service. They are the same gRPC executors as the
local pool (they register with provider "ecs"); what is particular to ECS is scaling, through
the service's desired count with boto3's ECS client (UpdateService, DescribeServices).

Scale-in is left to the service: ECS picks the tasks to stop, each gets SIGTERM and stops
taking work, and an attempt a stopped task could not finish is retried elsewhere when its
lease runs out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from comfyfleet.common.config import Settings, setting


@dataclass(frozen=True)
class EcsConfig(Settings):
    """The ECS service of GPU executors; scaling is off without a cluster and a service."""

    cluster: str = setting("ECS_CLUSTER", "")
    service: str = setting("ECS_SERVICE", "")
    # The object storage's region when not set.
    region: str = setting("ECS_REGION", "us-east-1", also=("S3_REGION",))
    # Another ECS API than AWS's own (a local one in tests); "" for AWS.
    endpoint_url: str = setting("ECS_ENDPOINT_URL", "")
    min_replicas: int = setting("ECS_MIN_REPLICAS", 0)
    max_replicas: int = setting("ECS_MAX_REPLICAS", 10)
    warm_pool: int = setting("ECS_WARM_POOL", 3)
    # The environment its tasks run (they register with it): its queue is what scales them.
    environment: str = setting("ECS_ENVIRONMENT", "native")

    @property
    def enabled(self) -> bool:
        return bool(self.cluster and self.service)


class EcsScaler:
    """Reads and sets the service's desired count; boto3 is blocking, so calls run in a
    thread. AWS credentials come from the usual places (environment, task role)."""

    provider = "ecs"

    def __init__(self, cfg: EcsConfig) -> None:
        self.cfg = cfg
        self.environment = cfg.environment
        self._client: Any = None

    def _ecs(self) -> Any:
        if self._client is None:
            self._client = boto3.client(
                "ecs", region_name=self.cfg.region, endpoint_url=self.cfg.endpoint_url or None
            )
        return self._client

    async def replicas(self) -> int | None:
        """The service's desired count; None when ECS cannot say."""
        try:
            found = await asyncio.to_thread(
                self._ecs().describe_services, cluster=self.cfg.cluster, services=[self.cfg.service]
            )
        except (BotoCoreError, ClientError):
            return None
        services = found.get("services") or []
        return int(services[0]["desiredCount"]) if services else None

    async def apply(self, desired: int) -> str | None:
        """Sets the desired count; None when ECS took it, else why not."""
        try:
            await asyncio.to_thread(
                self._ecs().update_service,
                cluster=self.cfg.cluster,
                service=self.cfg.service,
                desiredCount=desired,
            )
        except (BotoCoreError, ClientError) as err:
            return f"ECS UpdateService failed: {err}"
        return None
