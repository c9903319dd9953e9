"""The service's settings from COMFYFLEET_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyfleet.common.config import ConfigError
from services.models.config import GIB, MIB, Config


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRPC_ADDR", "MODELS_MAX_BYTES", "MODELS_SPOOL_DIR", "MODELS_PART_SIZE"):
        monkeypatch.delenv(f"COMFYFLEET_{name}", raising=False)
    cfg = Config.from_env()
    assert cfg.grpc_addr == "127.0.0.1:50053"
    assert cfg.max_model_bytes == 64 * GIB
    assert cfg.part_size == 64 * MIB
    assert cfg.spool_dir is None


def test_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_GRPC_ADDR", "0.0.0.0:7000")
    monkeypatch.setenv("COMFYFLEET_DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("COMFYFLEET_S3_BUCKET", "weights")
    monkeypatch.setenv("COMFYFLEET_MODELS_MAX_BYTES", "1000")
    monkeypatch.setenv("COMFYFLEET_MODELS_PRESIGN_TTL_S", "120")
    monkeypatch.setenv("COMFYFLEET_MODELS_SPOOL_DIR", "/var/spool/models")
    cfg = Config.from_env()
    assert (cfg.grpc_addr, cfg.database.url, cfg.s3.bucket) == (
        "0.0.0.0:7000",
        "postgresql://db/x",
        "weights",
    )
    assert (cfg.max_model_bytes, cfg.presign_ttl_s) == (1000, 120.0)
    assert cfg.spool_dir == Path("/var/spool/models")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MODELS_MAX_BYTES", "0"),
        ("MODELS_MAX_BYTES", "lots"),
        ("MODELS_PRESIGN_TTL_S", "0"),
        ("MODELS_PRESIGN_TTL_S", "700000"),
        ("MODELS_PART_SIZE", "1024"),
    ],
)
def test_bad_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"COMFYFLEET_{name}", value)
    with pytest.raises(ConfigError, match=name):
        Config.from_env()


def test_multipart_upload_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_MODELS_UPLOAD_TTL_S", "7200")
    monkeypatch.setenv("COMFYFLEET_MODELS_UPLOAD_SWEEP_INTERVAL_S", "5")
    monkeypatch.setenv("COMFYFLEET_MODELS_UPLOAD_STUCK_AFTER_S", "600")
    monkeypatch.setenv("COMFYFLEET_MODELS_UPLOAD_RETENTION_S", "86400")
    cfg = Config.from_env()
    assert (
        cfg.upload_ttl_s,
        cfg.upload_sweep_interval_s,
        cfg.upload_stuck_after_s,
        cfg.upload_retention_s,
    ) == (7200.0, 5.0, 600.0, 86400.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MODELS_UPLOAD_TTL_S", "0"),
        # Presigned part URLs live at most 7 days.
        ("MODELS_UPLOAD_TTL_S", "604801"),
        ("MODELS_UPLOAD_SWEEP_INTERVAL_S", "0"),
        ("MODELS_UPLOAD_STUCK_AFTER_S", "-1"),
        ("MODELS_UPLOAD_RETENTION_S", "0"),
    ],
)
def test_bad_multipart_upload_settings(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"COMFYFLEET_{name}", value)
    with pytest.raises(ConfigError, match=name):
        Config.from_env()
