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

from comfyfleet.common.config import env_int, env_str


@dataclass(frozen=True)
class EcsConfig:
    """The ECS service of GPU executors; scaling is off without a cluster and a service."""

    cluster: str = ""
    service: str = ""
    region: str = "us-east-1"
    # Another ECS API than AWS's own (a local one in tests); "" for AWS.
    endpoint_url: str = ""
    min_replicas: int = 0
    max_replicas: int = 10
    warm_pool: int = 3
    # The environment its tasks run (they register with it): its queue is what scales them.
    environment: str = "native"

    @property
    def enabled(self) -> bool:
        return bool(self.cluster and self.service)

    @classmethod
    def from_env(cls) -> EcsConfig:
        d = cls()
        return cls(
            cluster=env_str("ECS_CLUSTER", ""),
            service=env_str("ECS_SERVICE", ""),
            region=env_str("ECS_REGION", env_str("S3_REGION", d.region)),
            endpoint_url=env_str("ECS_ENDPOINT_URL", ""),
            min_replicas=env_int("ECS_MIN_REPLICAS", d.min_replicas),
            max_replicas=env_int("ECS_MAX_REPLICAS", d.max_replicas),
            warm_pool=env_int("ECS_WARM_POOL", d.warm_pool),
            environment=env_str("ECS_ENVIRONMENT", d.environment),
        )


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
