"""PostgreSQL, NATS JetStream and S3 together, and the environment services read."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self, cast

from comfyfleet.devstack.errors import DevStackError
from comfyfleet.devstack.nats import NatsServer
from comfyfleet.devstack.paths import default_home
from comfyfleet.devstack.postgres import PostgresServer
from comfyfleet.devstack.process import Server
from comfyfleet.devstack.s3 import S3_BACKENDS, S3Backend, S3Credentials, S3Server, make_s3_server

# Fixed ports for `make up`, so the platform's address does not change between runs.
DEFAULT_PG_PORT = 55432
DEFAULT_NATS_PORT = 54222
DEFAULT_S3_PORT = 59000


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its data and which ports it uses (None: any free port)."""

    base_dir: Path
    pg_port: int | None = None
    nats_port: int | None = None
    s3_port: int | None = None
    s3_backend: S3Backend = "s3rver"
    s3_credentials: S3Credentials = field(default_factory=S3Credentials)
    bucket: str = "comfyfleet"
    database: str = "comfyfleet"
    durable: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        """The `make up` configuration: fixed ports and names, each overridable by env.

        A port of 0 means any free port.
        """
        env = os.environ if environ is None else environ
        base = env.get("COMFYFLEET_HOME")
        defaults = S3Credentials()
        return cls(
            base_dir=Path(base).resolve() if base else default_home(),
            pg_port=_port(env, "COMFYFLEET_PG_PORT", DEFAULT_PG_PORT),
            nats_port=_port(env, "COMFYFLEET_NATS_PORT", DEFAULT_NATS_PORT),
            s3_port=_port(env, "COMFYFLEET_S3_PORT", DEFAULT_S3_PORT),
            s3_backend=_backend(env.get("COMFYFLEET_S3_BACKEND", "s3rver")),
            s3_credentials=S3Credentials(
                access_key=env.get("COMFYFLEET_S3_ACCESS_KEY", defaults.access_key),
                secret_key=env.get("COMFYFLEET_S3_SECRET_KEY", defaults.secret_key),
                region=env.get("COMFYFLEET_S3_REGION", defaults.region),
            ),
            bucket=env.get("COMFYFLEET_S3_BUCKET", "comfyfleet"),
            database=env.get("COMFYFLEET_DATABASE_NAME", "comfyfleet"),
        )


def _port(env: Mapping[str, str], name: str, default: int) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        raise DevStackError(f"${name}={raw!r} is not a port number") from None
    return port or None


def _backend(name: str) -> S3Backend:
    if name not in S3_BACKENDS:
        raise DevStackError(f"$COMFYFLEET_S3_BACKEND={name!r}: choose one of {S3_BACKENDS}")
    return cast(S3Backend, name)


class DevStack:
    """Starts PostgreSQL, NATS and S3 under `base_dir`; data survives a restart there.

    Layout: base_dir/{postgres,nats,s3} hold the data, base_dir/logs the logs. One stack at a
    time may use a base dir (a lock file says so).
    """

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.base_dir = config.base_dir
        self.log_dir = config.base_dir / "logs"
        self._lock: IO[str] | None = None
        self.postgres = PostgresServer(
            data_dir=self.base_dir / "postgres",
            log_dir=self.log_dir,
            port=config.pg_port,
            durable=config.durable,
        )
        self.nats = NatsServer(
            data_dir=self.base_dir / "nats", log_dir=self.log_dir, port=config.nats_port
        )
        self.s3: S3Server = make_s3_server(
            config.s3_backend,
            data_dir=self.base_dir / "s3",
            log_dir=self.log_dir,
            port=config.s3_port,
            credentials=config.s3_credentials,
        )

    @property
    def servers(self) -> tuple[Server, ...]:
        return (self.postgres, self.nats, self.s3)

    @property
    def database_url(self) -> str:
        return self.postgres.dsn(self.config.database)

    def start(self) -> Self:
        self._take_lock()
        try:
            self.postgres.start()
            self.postgres.create_database(self.config.database)
            self.nats.start()
            self.s3.start()
            self.s3.ensure_bucket(self.config.bucket)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops every server that runs, in reverse order, even if one of them fails."""
        errors: list[str] = []
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as exc:
                errors.append(f"{server.name}: {exc}")
        self._release_lock()
        if errors:
            raise DevStackError("could not stop cleanly: " + "; ".join(errors))

    def env(self) -> dict[str, str]:
        """The environment variables every service reads to find the infrastructure."""
        creds = self.config.s3_credentials
        return {
            "COMFYFLEET_DATABASE_URL": self.database_url,
            "COMFYFLEET_NATS_URL": self.nats.url,
            "COMFYFLEET_S3_ENDPOINT": self.s3.endpoint,
            "COMFYFLEET_S3_ACCESS_KEY": creds.access_key,
            "COMFYFLEET_S3_SECRET_KEY": creds.secret_key,
            "COMFYFLEET_S3_REGION": creds.region,
            "COMFYFLEET_S3_BUCKET": self.config.bucket,
        }

    def endpoints(self) -> list[tuple[str, str, Path]]:
        """(name, address, log file) of each server, for the launcher's table."""
        return [
            ("postgres", self.database_url, self.postgres.log_path),
            ("nats", self.nats.url, self.nats.log_path),
            (f"s3 ({self.config.s3_backend})", self.s3.endpoint, self.s3.log_path),
        ]

    def _take_lock(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        lock = (self.base_dir / "devstack.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DevStackError(
                f"another devstack is running in {self.base_dir}; stop it first"
            ) from None
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
