"""Session-wide real servers and per-test isolation.

The servers start lazily: only when a test asks for one of the fixtures below, once per
session, on free ports in a temp dir, and are stopped at the end. Unit tests must not ask.

    postgres_server  -> PostgresInfo  (session)  dsn of the `postgres` database, superuser
    nats_server      -> NatsInfo      (session)  nats:// url, JetStream on
    s3_server        -> S3Info        (session)  endpoint, keys, region, default bucket
    fresh_database   -> str           (test)     DSN of a new database, dropped afterwards
    module_database  -> str           (module)   DSN of a new database shared by a module
    nats_names       -> NatsNames     (test)     a stream name and subject prefix of its own
    s3_bucket        -> str           (test)     a new bucket of its own
    infra_env        -> dict[str,str] (test)     COMFYFLEET_* variables for a service process

The real ComfyUI's fixtures (``real_comfyui``, ``comfyui_server``) come from
tests/support/real_comfyui.py, registered here for every folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.infra import (
    NatsInfo,
    NatsNames,
    PostgresInfo,
    S3Info,
    running_nats,
    running_postgres,
    running_s3,
    session_dir,
    suite_s3_backend,
)
from tests.support.names import (
    unique_bucket_name,
    unique_database_name,
    unique_stream_name,
    unique_subject_prefix,
)

INFRA_FIXTURES = frozenset(
    {
        "postgres_server",
        "nats_server",
        "s3_server",
        "fresh_database",
        "module_database",
        "nats_names",
        "s3_bucket",
        "infra_env",
        "real_comfyui",
        "comfyui_server",
    }
)
pytest_plugins = ["tests.support.real_comfyui"]

_MARK_BY_DIR = {"integration": "integration", "e2e": "e2e"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks tests by folder, and refuses unit tests that would start servers."""
    tests_dir = Path(__file__).parent
    for item in items:
        parts = (
            item.path.relative_to(tests_dir).parts if item.path.is_relative_to(tests_dir) else ()
        )
        folder = parts[0] if parts else ""
        if folder in _MARK_BY_DIR:
            item.add_marker(_MARK_BY_DIR[folder])
        used = INFRA_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if folder == "unit" and used:
            raise pytest.UsageError(
                f"{item.nodeid} is a unit test but uses {sorted(used)}: "
                "move it to tests/integration"
            )


@pytest.fixture(scope="session")
def devstack_session_dir() -> Iterator[Path]:
    with session_dir() as path:
        yield path


@pytest.fixture(scope="session")
def postgres_server(devstack_session_dir: Path) -> Iterator[PostgresInfo]:
    with running_postgres(devstack_session_dir) as info:
        yield info


@pytest.fixture(scope="session")
def nats_server(devstack_session_dir: Path) -> Iterator[NatsInfo]:
    with running_nats(devstack_session_dir) as info:
        yield info


@pytest.fixture(scope="session")
def s3_server(devstack_session_dir: Path) -> Iterator[S3Info]:
    with running_s3(devstack_session_dir, suite_s3_backend(), "comfyfleet-test") as info:
        yield info


def _database(postgres: PostgresInfo, hint: str) -> Iterator[str]:
    name = unique_database_name(hint)
    dsn = postgres.create_database(name)
    yield dsn
    postgres.drop_database(name)


@pytest.fixture
def fresh_database(postgres_server: PostgresInfo, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty database for this test; its DSN. Dropped (connections closed) after."""
    yield from _database(postgres_server, request.node.name)


@pytest.fixture(scope="module")
def module_database(postgres_server: PostgresInfo, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty database shared by the tests of one module; its DSN."""
    yield from _database(postgres_server, request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture
def nats_names(nats_server: NatsInfo, request: pytest.FixtureRequest) -> NatsNames:
    """A stream name and subject prefix unused by any other test (create the stream yourself)."""
    hint = request.node.name
    return NatsNames(stream=unique_stream_name(hint), subject_prefix=unique_subject_prefix(hint))


@pytest.fixture
def s3_bucket(s3_server: S3Info, request: pytest.FixtureRequest) -> str:
    """A new, empty bucket for this test; its name."""
    return s3_server.create_bucket(unique_bucket_name(request.node.name))


@pytest.fixture
def infra_env(fresh_database: str, nats_server: NatsInfo, s3_server: S3Info) -> dict[str, str]:
    """The COMFYFLEET_* variables a service process reads, pointing at this session's servers.

    The database is fresh for this test; the bucket is the session's default one.
    """
    return {
        "COMFYFLEET_DATABASE_URL": fresh_database,
        "COMFYFLEET_NATS_URL": nats_server.url,
        "COMFYFLEET_S3_ENDPOINT": s3_server.endpoint,
        "COMFYFLEET_S3_ACCESS_KEY": s3_server.access_key,
        "COMFYFLEET_S3_SECRET_KEY": s3_server.secret_key,
        "COMFYFLEET_S3_REGION": s3_server.region,
        "COMFYFLEET_S3_BUCKET": s3_server.bucket,
    }
