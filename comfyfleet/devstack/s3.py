"""Local S3 servers that the `minio` SDK talks to.

Two backends behind one interface:
- `s3rver` (npm package, run by Node.js through s3rver/server.js) keeps objects in a
  directory, so they survive a restart, and, with our sigv4.js middleware, refuses unsigned
  requests and wrong signatures as S3 does: the backend of `make up` and of the test suite.
- `moto` (PyPI) keeps objects in memory, takes any signature, and needs nothing but the dev
  dependencies: a fallback (COMFYFLEET_TEST_S3_BACKEND=moto) and a second opinion in the
  S3 contract tests.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from minio import Minio

from comfyfleet.devstack.errors import INSTALL_SCRIPT, DevStackError, find_program
from comfyfleet.devstack.paths import PACKAGE_DIR, node_dir
from comfyfleet.devstack.process import Server

S3Backend = Literal["s3rver", "moto"]
S3_BACKENDS: tuple[S3Backend, ...] = ("s3rver", "moto")


@dataclass(frozen=True)
class S3Credentials:
    """Fixed development credentials; the region is explicit so the SDK never looks it up."""

    access_key: str = "comfyfleet"
    secret_key: str = "comfyfleet-dev-secret"
    region: str = "us-east-1"


class S3Server(Server):
    """An S3 API on http://127.0.0.1:port."""

    name = "s3"
    persistent: bool = False

    def __init__(
        self,
        *,
        data_dir: Path,
        log_dir: Path | None = None,
        port: int | None = None,
        credentials: S3Credentials | None = None,
    ) -> None:
        super().__init__(data_dir=data_dir, log_dir=log_dir, port=port)
        self.credentials = credentials or S3Credentials()

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}"

    def client(self) -> Minio:
        """A `minio` client for this server."""
        return Minio(
            self.address,
            access_key=self.credentials.access_key,
            secret_key=self.credentials.secret_key,
            region=self.credentials.region,
            secure=False,
        )

    def ensure_bucket(self, bucket: str) -> None:
        client = self.client()
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)

    def _is_ready(self) -> bool:
        """Any HTTP answer, an S3 error included, means the server is up."""
        try:
            with urllib.request.urlopen(f"{self.endpoint}/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False


class S3rverServer(S3Server):
    """s3rver under Node.js; objects live in `data_dir` and survive restarts."""

    persistent = True

    def __init__(
        self,
        *,
        data_dir: Path,
        log_dir: Path | None = None,
        port: int | None = None,
        credentials: S3Credentials | None = None,
    ) -> None:
        super().__init__(data_dir=data_dir, log_dir=log_dir, port=port, credentials=credentials)
        self.node = find_program("node", "nodejs", env_var="COMFYFLEET_NODE")
        self.node_modules = node_dir() / "node_modules"
        if not (self.node_modules / "s3rver" / "package.json").is_file():
            raise DevStackError(
                f"the s3rver npm package is not installed in {self.node_modules}: "
                f"run {INSTALL_SCRIPT}"
            )

    def _argv(self) -> list[str]:
        return [str(self.node), str(PACKAGE_DIR / "s3rver" / "server.js")]

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "NODE_PATH": str(self.node_modules),
            "S3RVER_ADDRESS": self.host,
            "S3RVER_PORT": str(self.port),
            "S3RVER_DIRECTORY": str(self.data_dir),
            "S3RVER_ACCESS_KEY": self.credentials.access_key,
            "S3RVER_SECRET_KEY": self.credentials.secret_key,
        }


class MotoS3Server(S3Server):
    """moto's server: in memory, fast to start, gone when stopped.

    Note for tests: moto parses a body sent as application/x-www-form-urlencoded (urllib's
    default for `data=`) as a form and stores nothing; upload with an explicit Content-Type.
    """

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]


def make_s3_server(
    backend: S3Backend,
    *,
    data_dir: Path,
    log_dir: Path | None = None,
    port: int | None = None,
    credentials: S3Credentials | None = None,
) -> S3Server:
    """The S3 server of the named backend."""
    kinds: dict[str, type[S3Server]] = {"s3rver": S3rverServer, "moto": MotoS3Server}
    if backend not in kinds:
        raise DevStackError(f"unknown S3 backend {backend!r}; choose one of {S3_BACKENDS}")
    return kinds[backend](data_dir=data_dir, log_dir=log_dir, port=port, credentials=credentials)
