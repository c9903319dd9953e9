"""The first admin key, so a fresh platform can be used without a manual database step."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from services.gateway.tenants import SCOPES, TenantStore

log = logging.getLogger(__name__)


async def ensure_admin_key(store: TenantStore, key_file: Path, tenant_name: str) -> bool:
    """Creates an admin key of ``tenant_name`` and writes it to ``key_file`` (mode 0600),
    unless the file exists. Returns whether it made one."""
    if await asyncio.to_thread(key_file.exists):
        return False
    tenant = await store.find_tenant(tenant_name)
    if tenant is None:
        tenant = await store.create_tenant(tenant_name, 0, "")
    record, token = await store.create_key(
        # No request_id: a lost key file must yield a new key, never a replay without a token.
        tenant.id,
        "bootstrap admin key",
        sorted(SCOPES),
        "",
    )
    assert token is not None
    await asyncio.to_thread(write_secret_file, key_file, token)
    log.info("wrote admin key %s of tenant %s to %s", record.id, tenant.name, key_file)
    return True


def write_secret_file(path: Path, secret: str) -> None:
    """Writes ``secret`` readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    tmp.replace(path)
