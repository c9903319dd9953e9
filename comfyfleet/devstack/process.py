"""Child processes that die with their parent, and the server base class built on them.

Every infrastructure server and every platform service that the devstack starts is a
`ManagedProcess`: it runs in its own process group (so a Ctrl-C in the terminal reaches only
the launcher, which then stops things in order), writes stdout and stderr to a log file, and
asks the kernel to signal it when its parent dies (so a killed test run or launcher leaves no
orphans holding ports).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from comfyfleet.devstack.errors import DevStackError, StartupError, find_program

_LOG_TAIL_LINES = 40


def free_port(host: str = "127.0.0.1") -> int:
    """Returns a TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Tells whether something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last lines of a log file, or a note that there is none yet."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(log {path} is empty)"


def _die_with_parent(argv: Sequence[str], sig: int) -> list[str]:
    """Wraps argv so the kernel sends `sig` to the child when its parent exits.

    util-linux's setpriv sets the death signal and execs the program in the same process.
    It runs after Popen's uid switch, which matters: a uid change clears the death signal.
    Doing it with a preexec_fn instead would run Python in a forked child of a threaded
    process (gRPC, asyncio), which can deadlock.
    """
    setpriv = find_program("setpriv", "util-linux", env_var="COMFYFLEET_SETPRIV")
    return [str(setpriv), "--pdeathsig", signal.Signals(sig).name, "--", *argv]


class ManagedProcess:
    """One child process in its own process group, logging to a file.

    Start it from a thread that lives as long as the process should: the kernel's "parent
    died" signal fires when the *thread* that started the child exits (so not from a
    short-lived worker thread; the main thread or an event loop's thread is right).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        if self.running():
            raise DevStackError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%F %T')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                _die_with_parent(self.argv, self.stop_signal),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                user=self.user,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def stop(self, grace_s: float = 10.0) -> int | None:
        """Sends the stop signal to the whole group, then SIGKILL after `grace_s`."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._signal_group(self.stop_signal)
            try:
                self._popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._popen.wait(timeout=10)
        # Stragglers in the group (a server's worker children) must not outlive it.
        self._signal_group(signal.SIGKILL)
        return self._popen.returncode

    def _signal_group(self, sig: int) -> None:
        assert self._popen is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)


def wait_until(
    ready: Callable[[], bool],
    *,
    process: ManagedProcess,
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
) -> None:
    """Polls `ready` until it holds; fails fast, with the log tail, if the process exits."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        code = process.returncode()
        if code is not None:
            raise StartupError(
                f"{process.name} exited with code {code} before {what}; "
                f"log {process.log_path}:\n{process.tail()}"
            )
        if time.monotonic() >= deadline:
            raise StartupError(
                f"{process.name} did not get {what} within {timeout_s:.0f}s; "
                f"log {process.log_path}:\n{process.tail()}"
            )
        time.sleep(interval_s)


def _looks_like_port_clash(text: str) -> bool:
    lowered = text.lower()
    return "address already in use" in lowered or "eaddrinuse" in lowered


class Server(ABC):
    """A local server process: start(), stop(), a context manager, and its address.

    A server whose port was picked here (port=None) retries on a fresh port when another
    process grabbed the port between the pick and the bind.
    """

    name: str = "server"
    host: str = "127.0.0.1"
    start_timeout_s: float = 30.0
    stop_grace_s: float = 15.0
    _bind_attempts = 3

    def __init__(self, *, data_dir: Path, log_dir: Path | None = None, port: int | None) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir or data_dir
        self._fixed_port = port
        self.port = port if port is not None else free_port(self.host)
        self._process: ManagedProcess | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def address(self) -> str:
        """host:port the server listens on."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def start(self) -> Self:
        if self._fixed_port is not None:
            self._check_port_free()  # before _prepare: an initdb for nothing takes seconds
        self._prepare()
        for attempt in range(1, self._bind_attempts + 1):
            try:
                self._launch()
                break
            except StartupError as exc:
                if self._fixed_port is not None or attempt == self._bind_attempts:
                    raise
                if not _looks_like_port_clash(str(exc)):
                    raise
                self.port = free_port(self.host)
        return self

    def _check_port_free(self) -> None:
        if port_in_use(self.port, self.host):
            raise StartupError(
                f"{self.name}: port {self.port} on {self.host} is already in use "
                "(address already in use): is another devstack running? "
                "Stop it or choose another port."
            )

    def _launch(self) -> None:
        self._check_port_free()
        process = self._make_process()
        self._process = process
        process.start()
        try:
            wait_until(
                self._is_ready,
                process=process,
                timeout_s=self.start_timeout_s,
                what=f"ready on {self.address}",
            )
        except StartupError:
            process.stop(grace_s=2)
            raise

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(grace_s=self.stop_grace_s)
            self._process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _make_process(self) -> ManagedProcess:
        return ManagedProcess(
            self.name,
            self._argv(),
            log_path=self.log_path,
            env=self._env(),
            cwd=self.data_dir,
            user=self._user(),
            stop_signal=self._stop_signal(),
        )

    def _prepare(self) -> None:
        """Work before the first launch: the dirs here, initdb and the like in subclasses."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def _env(self) -> dict[str, str] | None:
        return None

    def _user(self) -> str | None:
        return None

    def _stop_signal(self) -> int:
        return signal.SIGTERM

    @abstractmethod
    def _argv(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    @abstractmethod
    def _is_ready(self) -> bool:
        """True once the server serves requests."""
