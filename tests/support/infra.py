"""What integration tests get: one PostgreSQL, NATS and S3 server per session.

The servers are the devstack's own (comfyfleet.devstack), on free ports in a temp dir. Tests
share them and stay apart by name: a database, a stream and subject prefix, a bucket of their
own (see names.py and the fixtures in tests/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from minio import Minio

from comfyfleet.common.config import S3Config
from comfyfleet.devstack.nats import NatsServer
from comfyfleet.devstack.postgres import PostgresServer
from comfyfleet.devstack.s3 import S3_BACKENDS, S3Backend, S3Server, make_s3_server


@dataclass(frozen=True)
class PostgresInfo:
    """The session's PostgreSQL; `dsn` points at its `postgres` database as superuser."""

    host: str
    port: int
    dsn: str
    server: PostgresServer = field(repr=False, compare=False)

    def dsn_for(self, database: str) -> str:
        return self.server.dsn(database)

    def create_database(self, name: str) -> str:
        """Creates database `name` and returns its DSN."""
        return self.server.create_database(name)

    def drop_database(self, name: str) -> None:
        self.server.drop_database(name)


@dataclass(frozen=True)
class NatsInfo:
    """The session's NATS server, JetStream enabled."""

    host: str
    port: int
    url: str


@dataclass(frozen=True)
class NatsNames:
    """A stream name and a subject prefix that belong to one test only."""

    stream: str
    subject_prefix: str

    def subject(self, *tokens: str) -> str:
        """`subject("a", "b")` is `<prefix>.a.b`; no tokens gives the prefix itself."""
        return ".".join((self.subject_prefix, *tokens))

    @property
    def wildcard(self) -> str:
        """Every subject under the prefix: bind the stream to this."""
        return f"{self.subject_prefix}.>"


@dataclass(frozen=True)
class S3Info:
    """The session's S3 server and its default bucket (already created)."""

    endpoint: str
    host: str
    access_key: str
    secret_key: str
    region: str
    bucket: str
    backend: str
    server: S3Server = field(repr=False, compare=False)

    def client(self) -> Minio:
        """A `minio` client with the region set, so it never looks the region up."""
        return self.server.client()

    def create_bucket(self, name: str) -> str:
        self.server.ensure_bucket(name)
        return name

    def config(self, bucket: str) -> S3Config:
        """A service's settings for this server and ``bucket``."""
        return S3Config(self.endpoint, self.access_key, self.secret_key, self.region, bucket)


def suite_s3_backend() -> S3Backend:
    """Which S3 server the suite uses: $COMFYFLEET_TEST_S3_BACKEND, s3rver by default.

    s3rver is what `make up` runs, and it verifies signatures; moto takes any signature.
    """
    name = os.environ.get("COMFYFLEET_TEST_S3_BACKEND", "s3rver")
    if name not in S3_BACKENDS:
        raise ValueError(f"$COMFYFLEET_TEST_S3_BACKEND={name!r}: choose one of {S3_BACKENDS}")
    return cast(S3Backend, name)


@contextmanager
def session_dir() -> Iterator[Path]:
    """A temp dir for the session's servers, removed afterwards.

    Not pytest's tmp_path: that lives under a root-only dir, and PostgreSQL, running as the
    `postgres` OS user when the suite runs as root, must be able to enter it.
    Set COMFYFLEET_TEST_KEEP_DIR=1 to keep it (and the servers' logs) for a post-mortem.
    """
    path = Path(tempfile.mkdtemp(prefix="comfyfleet-tests-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        if not os.environ.get("COMFYFLEET_TEST_KEEP_DIR"):
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def running_postgres(base_dir: Path) -> Iterator[PostgresInfo]:
    """PostgreSQL without fsync: fast, and nothing in a test must survive a crash."""
    with PostgresServer(data_dir=base_dir / "postgres", durable=False) as server:
        yield PostgresInfo(host=server.host, port=server.port, dsn=server.dsn(), server=server)


@contextmanager
def running_nats(base_dir: Path) -> Iterator[NatsInfo]:
    with NatsServer(data_dir=base_dir / "nats") as server:
        yield NatsInfo(host=server.host, port=server.port, url=server.url)


@contextmanager
def running_s3(base_dir: Path, backend: S3Backend, bucket: str) -> Iterator[S3Info]:
    with make_s3_server(backend, data_dir=base_dir / f"s3-{backend}") as server:
        server.ensure_bucket(bucket)
        creds = server.credentials
        yield S3Info(
            endpoint=server.endpoint,
            host=server.address,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            region=creds.region,
            bucket=bucket,
            backend=backend,
            server=server,
        )
