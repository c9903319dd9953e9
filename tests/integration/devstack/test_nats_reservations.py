"""Many 1 GiB streams at once, as a whole test suite makes them, fit the test NATS server."""

from __future__ import annotations

import contextlib

import nats
from nats.js.api import StorageType, StreamConfig

from tests.support.infra import NatsInfo
from tests.support.names import unique_stream_name

# More than 75% of this machine's free disk in reservations, the server's default limit.
STREAMS = 80


async def test_stream_reservations_do_not_depend_on_free_disk(nats_server: NatsInfo) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    names = [unique_stream_name(f"reserve{i}") for i in range(STREAMS)]
    try:
        for i, name in enumerate(names):
            await js.add_stream(
                StreamConfig(
                    name=name,
                    subjects=[f"reserve.{i}.>"],
                    storage=StorageType.FILE,
                    max_bytes=1 << 30,
                )
            )
    finally:
        for name in names:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
        await nc.close()
