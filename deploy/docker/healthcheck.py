"""Container health check: exit 0 when this container's gRPC server answers SERVING.

Docker's HEALTHCHECK and ECS's healthCheck run a command inside the container, and no
``grpc_health_probe`` binary can be fetched at build time, so this asks ``grpc.health.v1``
with the grpcio already in the image. Kubernetes uses its native ``grpc:`` probes instead.

The port comes from COMFYFLEET_GRPC_ADDR (the address the service binds), or argv[1].
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def target(argv: list[str]) -> str:
    address = argv[1] if len(argv) > 1 else os.environ.get("COMFYFLEET_GRPC_ADDR", "")
    _, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or port == "0":
        raise SystemExit(f"healthcheck: no fixed port in {address!r}")
    return f"127.0.0.1:{port}"


def main(argv: list[str]) -> int:
    with grpc.insecure_channel(target(argv)) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=3.0
            )
        except grpc.RpcError as err:
            print(f"healthcheck: {err.code().name}", file=sys.stderr)
            return 1
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    if not serving:
        print(f"healthcheck: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
