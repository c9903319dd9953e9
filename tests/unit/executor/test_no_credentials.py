"""An executor holds no database, NATS or storage credentials, and has no client to use them."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from services.executor.config import Config

EXECUTOR = Path(__file__).resolve().parents[3] / "services" / "executor"
# The clients of PostgreSQL, NATS and S3, and our modules built on them.
CLIENTS = {"asyncpg", "nats", "minio", "boto3", "botocore", "aiobotocore"}
PLATFORM = {"comfyfleet.common.db", "comfyfleet.common.events", "comfyfleet.common.storage"}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_executor_module_imports_a_database_nats_or_storage_client() -> None:
    offenders = {}
    for path in sorted(EXECUTOR.rglob("*.py")):
        modules = imported_modules(path)
        bad = {m for m in modules if m.split(".")[0] in CLIENTS or m in PLATFORM}
        if bad:
            offenders[str(path.relative_to(EXECUTOR))] = sorted(bad)
    assert offenders == {}


def test_the_configuration_has_no_place_for_credentials() -> None:
    names = {f.name for f in dataclasses.fields(Config)}
    forbidden = ("database", "nats", "s3", "secret", "access_key", "password", "bucket")
    assert [n for n in names if any(word in n for word in forbidden)] == []
