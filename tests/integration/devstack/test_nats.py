from __future__ import annotations

import nats
from nats.js.api import StreamConfig

from tests.support import NatsInfo, NatsNames


async def test_jetstream_publish_and_consume(nats_server: NatsInfo, nats_names: NatsNames) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=nats_names.stream, subjects=[nats_names.wildcard]))
        for i in range(3):
            ack = await js.publish(
                nats_names.subject("events"), f"event-{i}".encode(), headers={"Nats-Msg-Id": str(i)}
            )
            assert ack.stream == nats_names.stream
        duplicate = await js.publish(
            nats_names.subject("events"), b"event-0", headers={"Nats-Msg-Id": "0"}
        )
        assert duplicate.duplicate

        sub = await js.pull_subscribe(nats_names.subject("events"), durable="reader")
        messages = await sub.fetch(3, timeout=5)
        for msg in messages:
            await msg.ack()
        assert [m.data for m in messages] == [b"event-0", b"event-1", b"event-2"]
        info = await js.stream_info(nats_names.stream)
        assert info.state.messages == 3
    finally:
        await nc.close()


async def test_names_are_valid_jetstream_names(nats_names: NatsNames) -> None:
    assert nats_names.subject_prefix.startswith("t.")
    assert nats_names.subject("a", "b") == f"{nats_names.subject_prefix}.a.b"
    assert "." not in nats_names.stream
