"""``comfyfleet webhooks add|list|test|deliveries|delete``: the tenant's subscriptions."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from comfyfleet.sdk import Client
from comfyfleet.webhooks.v1 import webhooks_pb2


def state_name(value: int) -> str:
    return webhooks_pb2.DeliveryState.Name(value).removeprefix("DELIVERY_STATE_").lower()  # type: ignore[arg-type]


def cmd_add(client: Client, args: argparse.Namespace) -> int:
    sub = client.create_subscription(args.url, args.event, description=args.description)
    print(f"subscription {sub.id} -> {sub.url}", file=sys.stderr)
    print("its signing secret, shown only now:", file=sys.stderr)
    print(sub.secret)
    return 0


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    for s in client.list_subscriptions(page_size=args.limit).subscriptions:
        events = ",".join(s.event_types) or "all events"
        state = "enabled" if s.enabled else f"disabled {s.disabled_reason}".strip()
        print(f"{s.id}  {state:<9} {s.url}  ({events})")
    return 0


def cmd_test(client: Client, args: argparse.Namespace) -> int:
    delivery = client.ping_subscription(args.id)
    print(f"sent webhook.test as delivery {delivery.id}; follow it with:", file=sys.stderr)
    print(f"  comfyfleet webhooks deliveries {args.id}", file=sys.stderr)
    print(delivery.id)
    return 0


def cmd_deliveries(client: Client, args: argparse.Namespace) -> int:
    page = client.list_deliveries(args.id, page_size=args.limit)
    for d in page.deliveries:
        outcome = f"HTTP {d.last_status_code}" if d.last_status_code else d.last_error or "-"
        stamp = d.create_time.ToDatetime()
        print(
            f"{d.id}  {stamp:%Y-%m-%d %H:%M:%S}  {state_name(d.state):<9} "
            f"{d.event_type:<22} attempts {d.attempts}  {outcome}"
        )
    return 0


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    client.delete_subscription(args.id)
    print(f"deleted {args.id}", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    hooks = sub.add_parser("webhooks", help="webhook subscriptions").add_subparsers(
        dest="webhooks_command", required=True
    )
    add = hooks.add_parser("add", help="subscribe a URL to events")
    add.add_argument("url")
    add.add_argument(
        "--event",
        action="append",
        default=[],
        help='repeatable, e.g. execution.succeeded or "execution.*" (default: all)',
    )
    add.add_argument("--description", default="")
    add.set_defaults(run=cmd_add)

    listing = hooks.add_parser("list", help="list subscriptions")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(run=cmd_list)

    test = hooks.add_parser("test", help="send a webhook.test event to a subscription")
    test.add_argument("id")
    test.set_defaults(run=cmd_test)

    deliveries = hooks.add_parser("deliveries", help="a subscription's deliveries, newest first")
    deliveries.add_argument("id")
    deliveries.add_argument("--limit", type=int, default=20)
    deliveries.set_defaults(run=cmd_deliveries)

    delete = hooks.add_parser("delete", help="delete a subscription")
    delete.add_argument("id")
    delete.set_defaults(run=cmd_delete)
