"""A stand-in for a platform service: serves grpc.health.v1 on $COMFYFLEET_GRPC_ADDR.

The launcher tests run it as `python -m tests.integration.devstack.dummy_service`. It prints
the COMFYFLEET_* environment it got as one JSON line, so tests can check the env contract.
Behaviour switches name the service they apply to ($COMFYFLEET_SERVICE_NAME):
  DUMMY_CRASH=<name>           exit 3 shortly after becoming SERVING
  DUMMY_FAIL_START=<name>      exit 4 before serving
  DUMMY_NOT_SERVING=<name>     answer NOT_SERVING forever
  DUMMY_IGNORE_SIGTERM=<name>  ignore SIGTERM (so only SIGKILL stops it)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

NAME = os.environ.get("COMFYFLEET_SERVICE_NAME", "dummy")


def _switch(var: str) -> bool:
    return NAME in os.environ.get(var, "").split(",")


def main() -> int:
    contract = {k: v for k, v in os.environ.items() if k.startswith("COMFYFLEET_")}
    print(json.dumps({"service": NAME, "pid": os.getpid(), "env": contract}), flush=True)
    if _switch("DUMMY_FAIL_START"):
        print(f"{NAME}: failing on purpose before serving", flush=True)
        return 4
    stop = threading.Event()
    if _switch("DUMMY_IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(os.environ["COMFYFLEET_GRPC_ADDR"])
    server.start()
    status = health_pb2.HealthCheckResponse.NOT_SERVING
    if not _switch("DUMMY_NOT_SERVING"):
        status = health_pb2.HealthCheckResponse.SERVING
    servicer.set("", status)
    print(f"{NAME}: serving on {os.environ['COMFYFLEET_GRPC_ADDR']}", flush=True)
    if _switch("DUMMY_CRASH"):
        stop.wait(0.5)
        print(f"{NAME}: crashing on purpose", flush=True)
        return 3
    while not stop.wait(0.2):
        pass
    print(f"{NAME}: stopping on SIGTERM", flush=True)
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
