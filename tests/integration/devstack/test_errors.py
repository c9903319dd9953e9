from __future__ import annotations

from pathlib import Path

import pytest

from comfyfleet.devstack.errors import DevStackError, MissingBinaryError, find_program
from comfyfleet.devstack.nats import NatsServer
from comfyfleet.devstack.process import ManagedProcess, StartupError, wait_until


def test_a_missing_program_names_its_apt_package(tmp_path: Path) -> None:
    with pytest.raises(MissingBinaryError) as missing:
        find_program(
            "no-such-server", "no-such-package", env_var="COMFYFLEET_UNSET", extra_dirs=[tmp_path]
        )
    assert "apt-get install no-such-package" in str(missing.value)
    assert "scripts/install-system-deps.sh" in str(missing.value)


def test_a_bad_override_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_NATS_SERVER", str(tmp_path / "nats-server"))
    with pytest.raises(DevStackError, match=r"COMFYFLEET_NATS_SERVER=.* is not an executable"):
        NatsServer(data_dir=tmp_path)


def test_a_server_dying_at_start_fails_fast_with_its_log(tmp_path: Path) -> None:
    process = ManagedProcess(
        "broken", ["sh", "-c", "echo 'bad config line 3' >&2; exit 7"], log_path=tmp_path / "b.log"
    )
    process.start()
    with pytest.raises(StartupError, match=r"(?s)exited with code 7 .*bad config line 3"):
        wait_until(lambda: False, process=process, timeout_s=30, what="ready")


def test_a_server_never_ready_times_out_with_its_log(tmp_path: Path) -> None:
    process = ManagedProcess(
        "slow", ["sh", "-c", "echo still warming up; exec sleep 60"], log_path=tmp_path / "s.log"
    )
    process.start()
    try:
        with pytest.raises(StartupError, match=r"(?s)within 0s.*still warming up"):
            wait_until(lambda: False, process=process, timeout_s=0.3, what="ready")
    finally:
        assert process.stop(grace_s=5) == -15
