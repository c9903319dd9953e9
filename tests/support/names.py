"""Unique names, so tests sharing one server never see each other's data."""

from __future__ import annotations

import re
import uuid


def _slug(text: str, limit: int) -> str:
    return re.sub("[^a-z0-9]+", "_", text.lower()).strip("_")[:limit].strip("_")


def _unique(hint: str, limit: int, sep: str) -> str:
    parts = ["t", _slug(hint, limit).replace("_", sep), uuid.uuid4().hex[:12]]
    return sep.join(part for part in parts if part)


def unique_database_name(hint: str = "") -> str:
    """A PostgreSQL database name: lowercase letters, digits and underscores, at most 63."""
    return _unique(hint, 40, "_")


def unique_bucket_name(hint: str = "") -> str:
    """An S3 bucket name: lowercase letters, digits and hyphens, 3 to 63 characters."""
    return _unique(hint, 40, "-")


def unique_stream_name(hint: str = "") -> str:
    """A JetStream stream name (no dots, wildcards or spaces), upper case by convention."""
    return _unique(hint, 40, "_").upper()


def unique_subject_prefix(hint: str = "") -> str:
    """A subject prefix that no other test publishes under, e.g. `t.jobs.3f2a9c1b0d4e`."""
    return _unique(hint, 40, ".")
