"""``python -m services.migrate``: apply (or report) the services' PostgreSQL migrations.

Each service applies its own migrations when it starts. Operators who would rather apply
them as a deploy step (a Kubernetes Job before the rollout, with
``COMFYFLEET_MIGRATE_ON_START=false`` on the services, which then refuse to start on a
schema that lacks a migration) run this with the services' ``COMFYFLEET_DATABASE_URL``:

    python -m services.migrate                 # every service with tables
    python -m services.migrate scheduler       # only these
    python -m services.migrate --status        # what is applied and what is not; exit 1
                                               # when anything is left to apply
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from comfyfleet.common.config import ConfigError, DatabaseConfig, env_str
from comfyfleet.common.db import applied_versions, migrate, migration_files
from comfyfleet.common.service import configure_logging

SERVICES = ("gateway", "scheduler", "models", "webhook")


@dataclass(frozen=True)
class Target:
    service: str
    schema: str
    directory: Path


def targets(names: list[str]) -> list[Target]:
    """Where each named service keeps its tables and migrations (the scheduler's schema
    follows ``COMFYFLEET_SCHEDULER_SCHEMA``, as the scheduler itself does)."""
    here = Path(__file__).parent
    found = []
    for name in names or SERVICES:
        if name not in SERVICES:
            raise ConfigError(f"no migrations for {name!r}: choose from {', '.join(SERVICES)}")
        schema = env_str("SCHEDULER_SCHEMA", "scheduler") if name == "scheduler" else name
        found.append(Target(name, schema, here / name / "migrations"))
    return found


@dataclass(frozen=True)
class Report:
    target: Target
    total: int
    pending: list[str]
    # Versions applied that this build does not know: a newer build ran on this database.
    unknown: list[int]

    def lines(self) -> list[str]:
        t = self.target
        line = f"{t.service} (schema {t.schema}): {self.total - len(self.pending)}/{self.total}"
        line += f" applied; pending: {', '.join(self.pending)}" if self.pending else " applied"
        extra = [f"  applied by a newer build: {self.unknown}"] if self.unknown else []
        return [line, *extra]


async def report(conn: asyncpg.Connection, t: Target) -> Report:
    done = await applied_versions(conn, t.schema)
    files = migration_files(t.directory)
    return Report(
        target=t,
        total=len(files),
        pending=[p.name for v, p in files if v not in done],
        unknown=sorted(done - {v for v, _ in files}),
    )


async def run(url: str, chosen: list[Target], *, report_only: bool) -> int:
    """Applies (unless ``report_only``) and reports; 1 when anything is left pending."""
    conn = await asyncpg.connect(url)
    try:
        if not report_only:
            for t in chosen:
                applied = await migrate(conn, t.schema, t.directory)
                print(f"{t.service}: applied {len(applied)} migration(s) {applied or ''}".rstrip())
        reports = [await report(conn, t) for t in chosen]
    finally:
        await conn.close()
    for r in reports:
        print("\n".join(r.lines()))
    return 1 if any(r.pending for r in reports) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.migrate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("services", nargs="*", help=f"some of {', '.join(SERVICES)} (all)")
    parser.add_argument(
        "--status", action="store_true", help="report only; exit 1 when anything is pending"
    )
    parser.add_argument("--database-url", help="default: COMFYFLEET_DATABASE_URL")
    args = parser.parse_args(argv)
    try:
        chosen = targets(args.services)
        url = args.database_url or DatabaseConfig.from_env().url
    except ConfigError as err:
        parser.error(str(err))
    try:
        return asyncio.run(run(url, chosen, report_only=args.status))
    except (OSError, asyncpg.PostgresError) as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    configure_logging()
    sys.exit(main())
