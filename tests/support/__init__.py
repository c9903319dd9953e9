"""Test support: real servers started once per session, unique names, `eventually`."""

from tests.support.eventually import eventually, eventually_sync
from tests.support.infra import NatsInfo, NatsNames, PostgresInfo, S3Info
from tests.support.names import (
    unique_bucket_name,
    unique_database_name,
    unique_stream_name,
    unique_subject_prefix,
)

__all__ = [
    "NatsInfo",
    "NatsNames",
    "PostgresInfo",
    "S3Info",
    "eventually",
    "eventually_sync",
    "unique_bucket_name",
    "unique_database_name",
    "unique_stream_name",
    "unique_subject_prefix",
]
