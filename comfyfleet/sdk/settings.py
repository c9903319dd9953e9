"""Where the platform is and which key to use: flags, then environment, then ``make up``'s files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from comfyfleet.sdk.retry import RetryPolicy

DEFAULT_ADDRESS = "127.0.0.1:50051"
# Input files larger than this go by presigned PUT (CreateInputUpload) rather than inline.
DEFAULT_UPLOAD_THRESHOLD_BYTES = 8 << 20
STATE_DIR = ".comfyfleet"
ADMIN_KEY_FILE = "admin.key"


def _state_dirs() -> list[Path]:
    """``.comfyfleet/`` in the working directory and its parents, then beside this checkout."""
    here = Path.cwd().resolve()
    found = [p / STATE_DIR for p in (here, *here.parents)]
    found.append(Path(__file__).resolve().parents[2] / STATE_DIR)
    return found


def local_api_key() -> str | None:
    """The admin key ``make up`` wrote, if this machine runs a local platform."""
    for directory in _state_dirs():
        key_file = directory / ADMIN_KEY_FILE
        if key_file.is_file():
            return key_file.read_text().strip()
    return None


@dataclass(frozen=True)
class Settings:
    address: str
    api_key: str | None
    # Input files (paths or bytes) larger than this are uploaded to a presigned URL and
    # named by their upload, so large files never travel inside a gRPC message.
    upload_threshold_bytes: int = DEFAULT_UPLOAD_THRESHOLD_BYTES
    # Which failed calls are made again, and after how long (UNAVAILABLE, bounded).
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def discover(
        cls,
        address: str | None = None,
        api_key: str | None = None,
        upload_threshold_bytes: int | None = None,
        max_attempts: int | None = None,
    ) -> Settings:
        """``max_attempts`` (else ``$COMFYFLEET_MAX_ATTEMPTS``) bounds the tries of a call
        answered UNAVAILABLE; 1 makes none again."""
        threshold = upload_threshold_bytes
        if threshold is None:
            threshold = _env_int(
                "COMFYFLEET_UPLOAD_THRESHOLD_BYTES", DEFAULT_UPLOAD_THRESHOLD_BYTES
            )
        attempts = max_attempts
        if attempts is None:
            attempts = _env_int("COMFYFLEET_MAX_ATTEMPTS", RetryPolicy.max_attempts, "tries")
        return cls(
            address=address or os.environ.get("COMFYFLEET_ADDR") or DEFAULT_ADDRESS,
            api_key=api_key or os.environ.get("COMFYFLEET_API_KEY") or local_api_key(),
            upload_threshold_bytes=threshold,
            retry=RetryPolicy(max_attempts=attempts),
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()


def _env_int(name: str, default: int, unit: str = "bytes") -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"${name} must be a whole number of {unit}, got {raw!r}") from None
