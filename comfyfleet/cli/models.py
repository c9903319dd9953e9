"""``comfyfleet models push|list|delete``: the tenant's model registry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from comfyfleet.cli.transfer import BytesLine
from comfyfleet.cli.usage import UsageError
from comfyfleet.models.v1 import models_pb2
from comfyfleet.sdk import Client
from comfyfleet.sdk.multipart import MIB, MULTIPART_THRESHOLD, PARALLEL_PARTS

KINDS = [n.removeprefix("MODEL_TYPE_").lower() for n in models_pb2.ModelType.keys()[1:]]


def type_name(value: int) -> str:
    return models_pb2.ModelType.Name(value).removeprefix("MODEL_TYPE_").lower()  # type: ignore[arg-type]


def cmd_push(client: Client, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no model file at {args.file}")
    bar = BytesLine(args.name or path.name)
    try:
        model = client.upload_model(
            path,
            args.type,
            name=args.name or "",
            progress=bar,
            multipart_threshold=args.multipart_threshold * MIB,
            part_size=args.part_size * MIB,
            parallel=args.parallel,
        )
    finally:
        bar.close()
    print(
        f"{model.name} version {model.version} ({type_name(model.type)}, sha256 {model.sha256})",
        file=sys.stderr,
    )
    print(model.id)
    return 0


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    page = client.list_models(kind=args.type, page_size=args.limit)
    for m in page.models:
        size = m.size_bytes / (1024 * 1024)
        print(f"{m.id}  {type_name(m.type):<14} v{m.version:<3} {size:>10.1f} MiB  {m.name}")
    return 0


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    client.delete_model(args.id)
    print(f"deleted {args.id}", file=sys.stderr)
    return 0


def _mib(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of MiB") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def add_parser(sub: Any) -> None:
    models = sub.add_parser("models", help="the model registry").add_subparsers(
        dest="models_command", required=True
    )
    push = models.add_parser("push", help="upload a model file (safetensors)")
    push.add_argument("file")
    push.add_argument("--type", required=True, choices=KINDS)
    push.add_argument("--name", help="the name workflows use (default: the file's name)")
    push.add_argument(
        "--multipart-threshold",
        type=_mib,
        default=MULTIPART_THRESHOLD // MIB,
        metavar="MIB",
        help="files larger than this many MiB go straight to storage in parts (default: %(default)s)",
    )
    push.add_argument(
        "--part-size",
        type=_mib,
        default=0,
        metavar="MIB",
        help="MiB per part, at least 5 (default: the platform chooses)",
    )
    push.add_argument(
        "--parallel",
        type=int,
        default=PARALLEL_PARTS,
        metavar="N",
        help="parts sent at once (default: %(default)s)",
    )
    push.set_defaults(run=cmd_push)

    listing = models.add_parser("list", help="list the tenant's models")
    listing.add_argument("--type", choices=KINDS)
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(run=cmd_list)

    delete = models.add_parser("delete", help="delete a model version")
    delete.add_argument("id")
    delete.set_defaults(run=cmd_delete)
