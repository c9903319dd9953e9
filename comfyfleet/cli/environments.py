"""``comfyfleet environments list|get NAME|catalog NAME [--node CLASS]|create --spec FILE``:
the runtimes executions run in, their node catalogs, and (admin keys) declaring one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from comfyfleet.cli.usage import UsageError
from comfyfleet.common.environments import load_spec_file
from comfyfleet.environments.v1 import environments_pb2
from comfyfleet.sdk import Client
from comfyfleet.sdk.requests import object_info_of

CATALOG_STATES = {
    environments_pb2.CATALOG_STATE_PENDING: "pending",
    environments_pb2.CATALOG_STATE_KNOWN: "known",
}


def describe(env: environments_pb2.Environment) -> str:
    """One line of ``environments list``."""
    engine = f"{env.engine} {env.comfyui_version}".strip()
    catalog = CATALOG_STATES.get(env.catalog_state, "?")
    nodes = f"{env.node_type_count} node types" if env.node_type_count else "no catalog"
    return (
        f"{env.name:<24} {engine:<16} {catalog:<8} {nodes:<16} "
        f"{env.executor_count} executor(s)  {env.description}"
    ).rstrip()


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    token = ""
    while True:
        page = client.list_environments(page_token=token)
        for env in page.environments:
            print(describe(env))
        token = page.next_page_token
        if not token:
            return 0


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    env = client.get_environment(args.name)
    print_json(json_format.MessageToDict(env, preserving_proto_field_name=True))
    return 0


def cmd_catalog(client: Client, args: argparse.Namespace) -> int:
    object_info = object_info_of(client.get_environment_catalog(args.name))
    if args.node is None:
        print_json(object_info)
        return 0
    if args.node not in object_info:
        raise UsageError(
            f"environment {args.name!r} has no node type {args.node!r}"
            f" ({len(object_info)} node types)"
        )
    print_json(object_info[args.node])
    return 0


def cmd_create(client: Client, args: argparse.Namespace) -> int:
    try:
        spec = load_spec_file(Path(args.spec))
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.name:
        spec.name = args.name
    if not spec.name:
        raise UsageError(f'{args.spec} names no environment: add "name" or pass --name')
    env = client.create_environment(spec, request_id=args.request_id or "")
    print_json(json_format.MessageToDict(env, preserving_proto_field_name=True))
    return 0


def add_parser(sub: Any) -> None:
    envs = sub.add_parser(
        "environments", help="the runtimes executions run in (engine, custom nodes, models)"
    )
    commands = envs.add_subparsers(dest="environments_command", required=True)

    listing = commands.add_parser("list", help="list the environments")
    listing.set_defaults(run=cmd_list)

    get = commands.add_parser("get", help="show an environment")
    get.add_argument("name")
    get.set_defaults(run=cmd_get)

    catalog = commands.add_parser(
        "catalog", help="an environment's node catalog (its engine's GET /object_info)"
    )
    catalog.add_argument("name")
    catalog.add_argument("--node", metavar="CLASS", help="only this node type")
    catalog.set_defaults(run=cmd_catalog)

    create = commands.add_parser(
        "create",
        help="declare an environment before any executor of it registers (admin keys)",
    )
    create.add_argument(
        "--spec",
        required=True,
        metavar="FILE.json",
        help="the environment in the proto's field names (engine, comfyui_version,"
        " custom_nodes, python_packages, apt_packages, models, description, name):"
        " the file its executors read through COMFYFLEET_ENVIRONMENT_SPEC",
    )
    create.add_argument("--name", help="the environment's name (default: the spec's)")
    create.add_argument("--request-id", help="idempotency key: a retry returns the first result")
    create.set_defaults(run=cmd_create)
