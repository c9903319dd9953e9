"""Page sizes and opaque page tokens (AIP-158) for keyset paging on ids.

Ids are time-ordered, so "after this id" pages stay stable while rows are added. A token is
bound to the list it came from (its ``scope``: the subscription, the filters), so a token
handed to a different list is refused rather than silently skipping rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from comfyfleet.common.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    """The page size to use: 0 takes the default, more than the maximum takes the maximum."""
    if requested < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            [FieldViolation("page_size", "must be 0 or more")],
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _fingerprint(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:12]


def encode_token(after: str, scope: str) -> str:
    raw = f"{_fingerprint(scope)}:{after}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str, scope: str) -> str | None:
    """The id a page starts after; None for the first page."""
    if not token:
        return None
    bad = InvalidArgument(
        "page_token is not one this list returned",
        [FieldViolation("page_token", "use the next_page_token of the same list")],
    )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise bad from err
    fingerprint, sep, after = raw.partition(":")
    if not sep or not after or fingerprint != _fingerprint(scope):
        raise bad
    return after


@dataclass(frozen=True)
class Page:
    """Where a page starts, how long it is, and which list it belongs to."""

    after: str | None
    size: int
    scope: str

    @classmethod
    def of(cls, requested_size: int, token: str, scope: str) -> Page:
        return cls(decode_token(token, scope), page_size(requested_size), scope)

    def next_token(self, ids: list[str]) -> str:
        """The token of the next page, given the ids on this one fetched with one extra."""
        if len(ids) <= self.size:
            return ""
        return encode_token(ids[self.size - 1], self.scope)
