"""A private PostgreSQL server: its own data dir, port and unix socket, trust auth."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
from pathlib import Path

from comfyfleet.devstack.errors import DevStackError, MissingBinaryError
from comfyfleet.devstack.process import Server

SUPERUSER = "postgres"
_APT_PACKAGE = "postgresql"
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# sun_path holds 108 bytes with the trailing NUL.
_MAX_SOCKET_PATH = 107


def find_bindir() -> Path:
    """The directory that holds initdb, postgres, pg_isready and psql."""
    override = os.environ.get("COMFYFLEET_PG_BINDIR")
    if override:
        return Path(override)
    versioned = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates = [_pg_config_bindir(), *versioned]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if candidate and (candidate / "initdb").is_file() and (candidate / "postgres").is_file():
            return candidate
    raise MissingBinaryError(
        "PostgreSQL server (initdb, postgres)",
        _APT_PACKAGE,
        ["pg_config --bindir", "/usr/lib/postgresql/*/bin", "$PATH"],
    )


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if not pg_config:
        return None
    try:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip())


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def _os_user() -> str | None:
    """PostgreSQL refuses to run as root, so as root it runs as the `postgres` OS user."""
    if os.geteuid() != 0:
        return None
    user = os.environ.get("COMFYFLEET_PG_OS_USER", "postgres")
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise DevStackError(
            f"running as root, PostgreSQL needs the OS user {user!r}, which does not exist: "
            f"`apt-get install {_APT_PACKAGE}` creates it"
        ) from None
    return user


def _check_traversable(directory: Path, user: str) -> None:
    """Fails early, and clearly, where `user` could not reach its own data dir."""
    entry = pwd.getpwnam(user)
    for parent in [directory, *directory.parents]:
        st = parent.stat()
        if st.st_uid == entry.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == entry.pw_gid:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            raise DevStackError(
                f"PostgreSQL runs as OS user {user!r}, which cannot enter {parent}; "
                f"`chmod o+x {parent}` or put the data dir elsewhere"
            )


def _chown(directory: Path, user: str) -> None:
    """Hands the component dir to `user`; initdb then creates the data dir as that user."""
    entry = pwd.getpwnam(user)
    os.chown(directory, entry.pw_uid, entry.pw_gid)


class PostgresServer(Server):
    """PostgreSQL on 127.0.0.1:port with its data in `data_dir/data`.

    An existing data dir is reused, so data survives a restart. `durable=False` turns fsync
    off, which is what tests want: much faster, and nothing there has to survive a crash.
    """

    name = "postgres"
    start_timeout_s = 60.0

    def __init__(
        self,
        *,
        data_dir: Path,
        log_dir: Path | None = None,
        port: int | None = None,
        durable: bool = True,
        max_connections: int = 200,
    ) -> None:
        super().__init__(data_dir=data_dir, log_dir=log_dir, port=port)
        self.durable = durable
        self.max_connections = max_connections
        self.bindir = find_bindir()
        self.os_user = _os_user()

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "data"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq/asyncpg URL for `database` as the superuser (trust auth, no password)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def _prepare(self) -> None:
        super()._prepare()
        if self.os_user:
            _check_traversable(self.data_dir, self.os_user)
            _chown(self.data_dir, self.os_user)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()

    def _initdb(self) -> None:
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise DevStackError(f"{self.pgdata} is neither empty nor a PostgreSQL data dir")
        argv = [
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.pgdata),
            "--username",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ]
        if not self.durable:
            argv.append("--no-sync")
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=self.data_dir,
            user=self.os_user,
            timeout=300,
            check=False,
        )
        with self.log_path.open("a") as log:
            log.write(result.stdout + result.stderr)
        if result.returncode != 0:
            raise DevStackError(
                f"initdb failed with code {result.returncode}:\n{result.stdout}{result.stderr}"
            )

    def _argv(self) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": self._socket_dir(),
            "max_connections": str(self.max_connections),
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            "logging_collector": "off",
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.pgdata)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _socket_dir(self) -> str:
        """The data dir, unless the socket path would be too long for a unix socket."""
        socket_path = self.pgdata / f".s.PGSQL.{self.port}"
        return str(self.pgdata) if len(str(socket_path)) <= _MAX_SOCKET_PATH else ""

    def _user(self) -> str | None:
        return self.os_user

    def _stop_signal(self) -> int:
        # SIGINT is PostgreSQL's "fast" shutdown, what `pg_ctl stop -m fast` sends.
        return signal.SIGINT

    def _is_ready(self) -> bool:
        probe = [
            str(self.bindir / "pg_isready"),
            "--quiet",
            f"--host={self.host}",
            f"--port={self.port}",
            f"--username={SUPERUSER}",
            "--dbname=postgres",
            "--timeout=2",
        ]
        return subprocess.run(probe, check=False, timeout=10).returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Runs SQL through psql and returns its unaligned output."""
        argv = [
            str(self.bindir / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--tuples-only",
            "--no-align",
            "--set=ON_ERROR_STOP=1",
            f"--host={self.host}",
            f"--port={self.port}",
            f"--username={SUPERUSER}",
            f"--dbname={database}",
            f"--command={sql}",
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise DevStackError(f"psql failed ({sql!r}): {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """Creates database `name` unless it exists; returns its DSN."""
        _check_name(name)
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
            self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drops database `name`, closing its connections first."""
        _check_name(name)
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"database name {name!r} must match {_NAME_RE.pattern}")
