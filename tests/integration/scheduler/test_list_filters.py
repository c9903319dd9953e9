"""ListExecutions by labels, with paging; CreateExecution's own webhook event filter."""

from __future__ import annotations

import grpc
import pytest
from grpc_status import rpc_status

from comfyfleet.common.errors import error_info, field_violations
from comfyfleet.executions.v1 import executions_pb2
from services.scheduler.server import Scheduler
from tests.integration.scheduler.conftest import Clients
from tests.integration.scheduler.helpers import STATE, create, get, graph_json

TENANT = "acme"


async def list_all(clients: Clients, tenant: str, **filters: object) -> list[str]:
    """Every id the list returns, two per page, following the page tokens."""
    seen: list[str] = []
    token = ""
    while True:
        page = await clients.executions.ListExecutions(
            executions_pb2.ListExecutionsRequest(page_size=2, page_token=token, **filters),  # type: ignore[arg-type]
            metadata=clients.as_tenant(tenant),
        )
        assert len(page.executions) <= 2
        seen += [e.id for e in page.executions]
        token = page.next_page_token
        if not token:
            return seen


async def refused(clients: Clients, request: executions_pb2.ListExecutionsRequest) -> list[str]:
    """The fields an INVALID_ARGUMENT list call names."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clients.executions.ListExecutions(request, metadata=clients.as_tenant(TENANT))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    return [v.field for v in field_violations(status)]


async def test_a_label_filter_lists_only_executions_with_every_pair_page_by_page(
    clients: Clients, scheduler: Scheduler
) -> None:
    shapes = [
        {"env": "prod", "team": "a"},
        {"env": "dev", "team": "a"},
        {"env": "prod", "team": "b"},
        {"env": "prod"},
        {},
        {"env": "prod", "team": "a", "extra": "x"},
        {"env": "production", "team": "a"},
    ]
    made = [await create(clients, TENANT, labels=labels) for labels in shapes]
    await create(clients, "globex", labels={"env": "prod", "team": "a"})
    newest_first = list(reversed(range(len(made))))

    def ids(*wanted: int) -> list[str]:
        return [made[n].id for n in newest_first if n in wanted]

    assert await list_all(clients, TENANT, labels={"env": "prod"}) == ids(0, 2, 3, 5)
    assert await list_all(clients, TENANT, labels={"env": "prod", "team": "a"}) == ids(0, 5)
    assert await list_all(clients, TENANT, labels={"team": "a"}) == ids(0, 1, 5, 6)
    assert await list_all(clients, TENANT, labels={"env": "staging"}) == []
    assert await list_all(clients, TENANT) == ids(*range(len(made)))

    meta = clients.as_tenant(TENANT)
    await clients.executions.CancelExecution(
        executions_pb2.CancelExecutionRequest(id=made[2].id), metadata=meta
    )
    queued_prod = await list_all(
        clients, TENANT, labels={"env": "prod"}, state=STATE.EXECUTION_STATE_QUEUED
    )
    assert queued_prod == ids(0, 3, 5)


async def test_a_page_token_only_serves_the_label_filter_it_came_from(
    clients: Clients, scheduler: Scheduler
) -> None:
    for _ in range(3):
        await create(clients, TENANT, labels={"env": "prod", "team": "a"})
    first = await clients.executions.ListExecutions(
        executions_pb2.ListExecutionsRequest(page_size=1, labels={"env": "prod"}),
        metadata=clients.as_tenant(TENANT),
    )
    token = first.next_page_token
    assert token
    same = await clients.executions.ListExecutions(
        executions_pb2.ListExecutionsRequest(page_size=1, page_token=token, labels={"env": "prod"}),
        metadata=clients.as_tenant(TENANT),
    )
    assert len(same.executions) == 1 and same.executions[0].id != first.executions[0].id
    for other in ({}, {"env": "dev"}, {"env": "prod", "team": "a"}):
        request = executions_pb2.ListExecutionsRequest(page_token=token, labels=other)
        assert await refused(clients, request) == ["page_token"]
    unfiltered = await clients.executions.ListExecutions(
        executions_pb2.ListExecutionsRequest(page_size=1), metadata=clients.as_tenant(TENANT)
    )
    request = executions_pb2.ListExecutionsRequest(
        page_token=unfiltered.next_page_token, labels={"env": "prod"}
    )
    assert await refused(clients, request) == ["page_token"]


async def test_a_bad_label_filter_is_invalid_argument_naming_the_pair(
    clients: Clients, scheduler: Scheduler
) -> None:
    request = executions_pb2.ListExecutionsRequest(labels={"": "x", "ok": "v" * 257, "k" * 64: ""})
    assert sorted(await refused(clients, request)) == sorted(
        ['labels[""]', 'labels["ok"]', f'labels["{"k" * 64}"]']
    )
    many = executions_pb2.ListExecutionsRequest(labels={f"k{i}": "v" for i in range(65)})
    assert await refused(clients, many) == ["labels"]


async def test_the_webhook_event_filter_is_stored_shown_and_carried_by_every_event(
    clients: Clients, scheduler: Scheduler
) -> None:
    wanted = ["execution.succeeded", "execution.failed"]
    execution = await create(clients, TENANT, webhook_events=wanted)
    assert list(execution.webhook_events) == wanted
    assert list((await get(clients, TENANT, execution.id)).webhook_events) == wanted
    await clients.executions.CancelExecution(
        executions_pb2.CancelExecutionRequest(id=execution.id),
        metadata=clients.as_tenant(TENANT),
    )
    events = [
        e
        async for e in clients.executions.WatchExecution(
            executions_pb2.WatchExecutionRequest(id=execution.id),
            metadata=clients.as_tenant(TENANT),
        )
    ]
    assert [e.event_type for e in events] == ["execution.queued", "execution.cancelled"]
    assert all(list(e.webhook_events) == wanted for e in events)

    plain = await create(clients, TENANT)
    assert list(plain.webhook_events) == []


async def test_bad_webhook_event_patterns_are_refused_one_violation_each(
    clients: Clients, scheduler: Scheduler
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(
            clients,
            TENANT,
            webhook_events=[
                "execution.succeeded",
                "execution.exploded",
                "webhook.subscription_disabled",
                "*",
                "execution.succeeded",
            ],
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    assert [v.field for v in field_violations(status)] == [
        "webhook_events[1]",
        "webhook_events[2]",
        "webhook_events[3]",
        "webhook_events[4]",
    ]
    assert await list_all(clients, TENANT) == []


async def test_a_retry_must_repeat_the_webhook_event_filter(
    clients: Clients, scheduler: Scheduler
) -> None:
    first = await create(clients, TENANT, request_id="r1", webhook_events=["execution.*"])
    again = await create(clients, TENANT, request_id="r1", webhook_events=["execution.*"])
    assert again.id == first.id
    for changed in ([], ["execution.succeeded"]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create(clients, TENANT, request_id="r1", webhook_events=changed)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(caught.value)
        assert status is not None
        info = error_info(status)
        assert info is not None and info.reason == "REQUEST_ID_REUSED"
    plain = await create(clients, TENANT, request_id="r2")
    assert (await create(clients, TENANT, request_id="r2", webhook_events=[])).id == plain.id


async def test_a_page_of_large_workflows_stays_within_what_a_default_client_reads(
    clients: Clients, scheduler: Scheduler
) -> None:
    # Each execution carries its workflow: fifty of a megabyte would be a 50 MB answer, past
    # the 4 MiB a gRPC client takes by default (and slow to transcode for REST).
    big = graph_json(**{f"note{i}": "x" * 60_000 for i in range(16)})
    made = [(await create(clients, "bulky", workflow_json=big)).id for _ in range(8)]
    seen: list[str] = []
    token = ""
    while True:
        page = await clients.executions.ListExecutions(
            executions_pb2.ListExecutionsRequest(page_token=token),
            metadata=clients.as_tenant("bulky"),
        )
        assert page.executions and page.ByteSize() < 4 * 1024 * 1024
        seen += [e.id for e in page.executions]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(made))
