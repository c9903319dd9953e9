"""A PUT to a presigned URL: the ETag back, and storage refusals as errors a person can act on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.rpc import code_pb2

from comfyfleet.devstack.process import free_port
from comfyfleet.sdk import presigned
from comfyfleet.sdk.errors import ApiError


class _Storage(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(body)
        status = int(self.path.strip("/"))
        self.send_response(status)
        if status == 200:
            self.send_header("ETag", '"abc"')
        self.send_header("Content-Length", "7")
        self.end_headers()
        self.wfile.write(b"refused")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def storage() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Storage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_put_returns_the_etag(storage: str) -> None:
    etag = presigned.put(
        f"{storage}/200", b"data", {"Content-Length": "4"}, timeout_s=5, what="the input"
    )
    assert etag == '"abc"' and _Storage.received[-1] == b"data"


@pytest.mark.parametrize(
    ("status", "code"), [(403, code_pb2.FAILED_PRECONDITION), (503, code_pb2.UNAVAILABLE)]
)
def test_storage_refusals_say_what_and_whether_to_retry(
    storage: str, status: int, code: int
) -> None:
    with pytest.raises(ApiError) as caught:
        presigned.put(f"{storage}/{status}", b"x", {}, timeout_s=5, what="a part of the model")
    assert caught.value.status.code == code
    assert caught.value.status.message == (
        f"uploading a part of the model failed: HTTP {status} from the storage: refused"
    )


def test_an_unreachable_storage_is_unavailable() -> None:
    with pytest.raises(ApiError) as caught:
        presigned.put(f"http://127.0.0.1:{free_port()}/", b"x", {}, timeout_s=5, what="the input")
    assert caught.value.status.code == code_pb2.UNAVAILABLE
    assert caught.value.status.message.startswith("uploading the input failed: ")
