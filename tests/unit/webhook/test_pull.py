"""The continuous pull's bookkeeping: how much it asks for, and when."""

from __future__ import annotations

import json
from typing import Any

from nats.aio.msg import Msg

from services.webhook.pull import ContinuousPull


class FakeSubscription:
    async def unsubscribe(self) -> None:
        return None


class FakeNats:
    """Records pull requests; the test plays the server."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: Any) -> FakeSubscription:
        return FakeSubscription()

    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        assert subject == "$JS.API.CONSUMER.MSG.NEXT.EVENTS.webhook" and reply == "_INBOX.test"
        self.requests.append(json.loads(payload))


def _pull(nc: FakeNats, delivered: list[Msg]) -> ContinuousPull:
    return ContinuousPull(
        nc,  # type: ignore[arg-type]
        "EVENTS",
        "webhook",
        batch=8,
        expires_s=5.0,
        deliver=delivered.append,
    )


def _status(code: str, pending: int | None = None) -> Msg:
    headers = {"Status": code}
    if pending is not None:
        headers["Nats-Pending-Messages"] = str(pending)
    return Msg(_client=None, subject="_INBOX.test", headers=headers)  # type: ignore[arg-type]


def _event(n: int) -> Msg:
    return Msg(_client=None, subject="_INBOX.test", data=b"%d" % n)  # type: ignore[arg-type]


async def _started() -> tuple[FakeNats, ContinuousPull, list[Msg]]:
    nc = FakeNats()
    delivered: list[Msg] = []
    pull = _pull(nc, delivered)
    await pull._top_up()
    return nc, pull, delivered


async def test_asks_for_a_batch_then_tops_up_at_half() -> None:
    nc, pull, delivered = await _started()
    assert nc.requests == [{"batch": 8, "expires": 5_000_000_000}]
    for n in range(3):
        await pull._on_message(_event(n))
    assert len(nc.requests) == 1  # 5 still coming: more than half
    await pull._on_message(_event(3))
    assert [r["batch"] for r in nc.requests] == [8, 4]
    assert [m.data for m in delivered] == [b"0", b"1", b"2", b"3"]


async def test_an_expired_request_is_replaced_by_what_it_did_not_bring() -> None:
    nc, pull, _ = await _started()
    await pull._on_message(_event(0))
    await pull._on_message(_status("408", pending=7))
    assert [r["batch"] for r in nc.requests] == [8, 8]


async def test_heartbeats_change_nothing() -> None:
    nc, pull, _ = await _started()
    await pull._on_message(_status("100"))
    assert len(nc.requests) == 1


async def test_a_refusal_waits_for_the_watchdog_instead_of_asking_at_once() -> None:
    nc, pull, delivered = await _started()
    await pull._on_message(_status("409"))
    assert len(nc.requests) == 1 and not delivered
    assert pull._outstanding == 0
