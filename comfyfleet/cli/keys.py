"""``comfyfleet keys create|list|revoke``: API keys of the caller's tenant (or, for admins,
of any tenant by name)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from comfyfleet.cli.usage import UsageError
from comfyfleet.sdk import Client

OWN_TENANT = "-"


def tenant_of(client: Client, name: str | None, *, create: bool = False) -> str:
    """The id of the tenant named on the command line, else "-" (the key's own)."""
    if not name:
        return OWN_TENANT
    tenant = client.find_or_create_tenant(name) if create else client.find_tenant(name)
    if tenant is None:
        raise UsageError(f"no tenant named {name!r}")
    print(f"tenant {tenant.name} ({tenant.id})", file=sys.stderr)
    return tenant.id


def cmd_create(client: Client, args: argparse.Namespace) -> int:
    tenant_id = tenant_of(client, args.tenant, create=True)
    created = client.create_key(tenant_id, description=args.description, scopes=args.scope)
    scopes = ", ".join(created.api_key.scopes)
    print(f"key {created.api_key.id} with scopes {scopes}", file=sys.stderr)
    print("store this key now; it is not shown again:", file=sys.stderr)
    print(created.secret)
    return 0


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    for key in client.list_keys(tenant_of(client, args.tenant)).api_keys:
        state = "revoked" if key.HasField("revoke_time") else "active"
        stamp = key.create_time.ToDatetime()
        scopes = ",".join(key.scopes)
        print(f"{key.id}  {state:<7} {stamp:%Y-%m-%d %H:%M}  {scopes:<40} {key.description}")
    return 0


def cmd_revoke(client: Client, args: argparse.Namespace) -> int:
    revoked = client.revoke_key(args.id, tenant_of(client, args.tenant))
    print(f"revoked {revoked.id}", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True
    )
    tenant_help = "a tenant by name (admin keys; default: the key's own tenant)"
    create = keys.add_parser("create", help="create a key; its secret is printed once")
    create.add_argument("--tenant", help=tenant_help + "; created if missing")
    create.add_argument("--description", default="")
    create.add_argument(
        "--scope",
        action="append",
        default=[],
        help="repeatable: executions:write, models:write, webhooks:write, keys:write, admin "
        "(default: the first three, within the creating key's own)",
    )
    create.set_defaults(run=cmd_create)

    listing = keys.add_parser("list", help="list keys, without their secrets")
    listing.add_argument("--tenant", help=tenant_help)
    listing.set_defaults(run=cmd_list)

    revoke = keys.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("id", help="the key's id (the part after cfk_)")
    revoke.add_argument("--tenant", help=tenant_help)
    revoke.set_defaults(run=cmd_revoke)
