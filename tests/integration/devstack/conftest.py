from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.devstack.stack import StackConfig
from tests.support.infra import session_dir


@pytest.fixture(scope="module")
def stack_dir() -> Iterator[Path]:
    """A base dir for the module's stacks (one initdb), reachable by the postgres OS user.

    Tests start and stop their stacks one after another in it; what they store must not
    clash (distinct tables, streams and keys).
    """
    with session_dir() as path:
        yield path


@pytest.fixture(scope="module")
def stack_config(stack_dir: Path) -> StackConfig:
    """A DevStack on free ports with the persistent S3 backend; fsync off for speed."""
    return StackConfig(base_dir=stack_dir, s3_backend="s3rver", durable=False)
