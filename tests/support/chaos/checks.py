"""What must hold after a chaos run, read from the platform's public API, its JetStream
stream and a webhook receiver; each check fails with what it found."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
import nats

from comfyfleet.common.events import decode_event
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.sdk import AsyncClient
from comfyfleet.sdk.client import TERMINAL
from tests.e2e.receiver import Receiver

TERMINAL_EVENTS = frozenset({"execution.succeeded", "execution.failed", "execution.cancelled"})
PNG = b"\x89PNG\r\n\x1a\n"
Execution = executions_pb2.Execution
Event = executions_pb2.WorkflowExecutionEvent


async def all_executions(client: AsyncClient) -> list[Execution]:
    """Every execution of the client's tenant, page by page."""
    found: list[Execution] = []
    token = ""
    while True:
        page = await client.list_executions(page_size=500, page_token=token)
        found.extend(page.executions)
        token = page.next_page_token
        if not token:
            return found


def check_one_each(executions: Iterable[Execution], accepted: Mapping[str, str]) -> None:
    """Each submitted request_id made exactly one execution, the one its client was told
    of, and nothing else was made."""
    by_request: dict[str, list[str]] = defaultdict(list)
    for e in executions:
        by_request[e.request_id].append(e.id)
    doubles = {r: ids for r, ids in by_request.items() if len(ids) > 1}
    assert not doubles, f"request_ids with more than one execution: {doubles}"
    made = {r: ids[0] for r, ids in by_request.items()}
    lost = {r: i for r, i in accepted.items() if made.get(r) != i}
    assert not lost, f"accepted but not listed as such (lost): {lost}"
    unknown = set(made) - set(accepted)
    assert not unknown, f"executions no client was told of: {sorted(unknown)}"


def check_terminal(executions: Iterable[Execution]) -> Counter[str]:
    states = Counter(executions_pb2.ExecutionState.Name(e.state) for e in executions)
    waiting = [e.id for e in executions if e.state not in TERMINAL]
    assert not waiting, f"not terminal: {waiting} ({dict(states)})"
    return states


async def stream_events(nats_url: str, stream: str) -> list[Event]:
    """Every event in the stream, in stream order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        return [
            decode_event((await js.get_msg(stream, seq)).data or b"")
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
    finally:
        await nc.close()


def check_events(events: Iterable[Event], executions: Iterable[Execution]) -> int:
    """Each event once; per execution one terminal event, and sequences 1..last without a
    gap, as the execution's ``last_sequence`` says. Returns how many events there are."""
    events = list(events)
    twice = [i for i, n in Counter(e.event_id for e in events).items() if n > 1]
    assert not twice, f"events published more than once: {twice[:20]}"
    sequences: dict[str, list[int]] = defaultdict(list)
    terminal: Counter[str] = Counter()
    for e in events:
        sequences[e.execution_id].append(e.sequence)
        terminal[e.execution_id] += e.event_type in TERMINAL_EVENTS
    problems = {}
    for execution in executions:
        seqs = sorted(sequences.get(execution.id, []))
        expected = list(range(1, execution.last_sequence + 1))
        if seqs != expected or terminal[execution.id] != 1:
            problems[execution.id] = (terminal[execution.id], seqs, execution.last_sequence)
    assert not problems, f"(terminal events, sequences, last_sequence) wrong: {problems}"
    return len(events)


@dataclass(frozen=True)
class Deliveries:
    total: int
    events: int

    @property
    def repeated(self) -> int:
        """Deliveries beyond the first of their event (at-least-once allows them)."""
        return self.total - self.events


def check_delivered(receiver: Receiver, events: Iterable[Event]) -> Deliveries:
    """Every event reached the webhook receiver at least once."""
    got = Counter(json.loads(r.body)["data"]["eventId"] for r in list(receiver.requests))
    missing = [e.event_id for e in events if got[e.event_id] == 0]
    assert not missing, f"{len(missing)} events never delivered, e.g. {missing[:10]}"
    return Deliveries(sum(got.values()), len(got))


async def check_outputs(client: AsyncClient, executions: Iterable[Execution]) -> int:
    """Every output of every SUCCEEDED execution downloads as a PNG through a fresh URL;
    returns how many were downloaded."""
    count = 0
    async with aiohttp.ClientSession() as http:
        for e in executions:
            if e.state != executions_pb2.EXECUTION_STATE_SUCCEEDED:
                continue
            fresh = await client.get(e.id)
            assert fresh.outputs, f"{e.id} SUCCEEDED without outputs"
            for output in fresh.outputs:
                async with http.get(output.url) as response:
                    body = await response.read()
                assert response.status == 200 and body.startswith(PNG), (e.id, response.status)
                count += 1
    return count
