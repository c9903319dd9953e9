"""`python -m comfyfleet.devstack up|infra`: the platform, or only its infrastructure.

Ports and names come from the environment (see StackConfig.from_env): COMFYFLEET_HOME,
COMFYFLEET_PG_PORT (55432), COMFYFLEET_NATS_PORT (54222), COMFYFLEET_S3_PORT (59000),
COMFYFLEET_S3_BACKEND (s3rver), COMFYFLEET_S3_BUCKET (comfyfleet).

COMFYUI_DIR (a ComfyUI install: ComfyUI/ and venv/) adds an executor of a "comfyui"
environment that starts and supervises that ComfyUI; COMFYUI_ENVIRONMENT names the
environment (default "comfyui"), COMFYUI_ENVIRONMENT_SPEC is a JSON file declaring it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from comfyfleet.devstack.errors import DevStackError
from comfyfleet.devstack.launcher import (
    ComfyUIExecutor,
    ServiceSpec,
    platform_services,
    run_infra,
    run_up,
)
from comfyfleet.devstack.s3 import S3_BACKENDS
from comfyfleet.devstack.stack import StackConfig


def _service(text: str) -> ServiceSpec:
    """NAME=MODULE@HOST:PORT, e.g. gateway=services.gateway@127.0.0.1:50051."""
    name, sep, rest = text.partition("=")
    module, at, addr = rest.partition("@")
    if not (sep and at and name and module and addr):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=MODULE@HOST:PORT")
    return ServiceSpec(name, addr, module=module)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comfyfleet.devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="infrastructure plus the platform's services")
    infra = commands.add_parser("infra", help="only PostgreSQL, NATS and S3; prints the env")
    for sub in (up, infra):
        sub.add_argument("--base-dir", type=Path, help="data and logs (default .comfyfleet/)")
        sub.add_argument("--s3-backend", choices=S3_BACKENDS, help="default: s3rver")
    up.add_argument(
        "--only", help="comma-separated subset of the platform's services, e.g. gateway,models"
    )
    up.add_argument(
        "--service",
        type=_service,
        action="append",
        help="run this service instead of the platform's (repeatable): NAME=MODULE@HOST:PORT",
    )
    up.add_argument("--stop-grace", type=float, default=10.0, help="seconds before SIGKILL")
    return parser


def _config(args: argparse.Namespace) -> StackConfig:
    config = StackConfig.from_env()
    if args.base_dir:
        config = replace(config, base_dir=args.base_dir.resolve())
    if args.s3_backend:
        config = replace(config, s3_backend=args.s3_backend)
    return config


def _services(args: argparse.Namespace) -> list[ServiceSpec]:
    services: list[ServiceSpec] = args.service or platform_services(
        comfyui=ComfyUIExecutor.from_env()
    )
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = wanted - {s.name for s in services}
        if unknown:
            raise SystemExit(f"unknown service(s): {', '.join(sorted(unknown))}")
        services = [s for s in services if s.name in wanted]
    return services


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _config(args)
        if args.command == "infra":
            return run_infra(config)
        return run_up(config, _services(args), stop_grace_s=args.stop_grace)
    except DevStackError as exc:
        # Raised before anything started (bad config, a missing program): no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
