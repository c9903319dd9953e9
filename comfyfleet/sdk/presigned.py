"""One HTTP PUT to a presigned object-storage URL, its failures as ApiErrors."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from google.rpc import code_pb2, status_pb2

from comfyfleet.sdk.errors import ApiError


def put(url: str, body: Any, headers: Mapping[str, str], *, timeout_s: float, what: str) -> str:
    """PUTs ``body`` (bytes or a readable file) to ``url``; returns the answer's ETag.

    A 4xx means the URL expired or the request was malformed, and trying again will not help
    (FAILED_PRECONDITION); a 5xx or a network error may pass (UNAVAILABLE). ``what`` names the
    upload in the error, as in "uploading <what> failed: ...".
    """
    request = urllib.request.Request(url, body, dict(headers), method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
            return str(response.headers.get("ETag", ""))
    except urllib.error.HTTPError as err:
        code = code_pb2.FAILED_PRECONDITION if err.code < 500 else code_pb2.UNAVAILABLE
        said = err.read(300).decode(errors="replace")
        raise _failed(code, what, f"HTTP {err.code} from the storage: {said}") from None
    except OSError as err:
        raise _failed(code_pb2.UNAVAILABLE, what, str(err)) from None


def _failed(code: int, what: str, why: str) -> ApiError:
    return ApiError(status_pb2.Status(code=code, message=f"uploading {what} failed: {why}"))
