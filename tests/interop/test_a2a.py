"""Point 1 of issue 16: every exposed Hive an A2A agent, driven by the real ``a2a-sdk`` client
(v1.x, A2A protocol 1.0, JSON-RPC) — no Apiary code on the client side.

One apiaryd (embedded, with its node and real agent processes) for the module: hive ``writer``
(draft → review, exposed with its own description and skills), ``gated`` (review needs a human's
approval, exposed with a generated card) and ``hidden`` (not exposed).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import (
    A2ACardResolver,
    A2AClientError,
    AuthInterceptor,
    Client,
    ClientCallContext,
    ClientConfig,
    CredentialService,
    create_client,
)
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError, TaskNotCancelableError, UnsupportedOperationError

from e2e.cluster import Apiaryd, new_cell

from .kit import deploy, hive

pytestmark = pytest.mark.slow
EVENT_ID = "apiary.io/event-id"
SKILLS = [{"id": "write", "name": "write", "description": "drafts and reviews a text",
           "tags": ["writing"], "examples": ["a haiku about bees"]}]  # fmt: skip


class Cluster:
    def __init__(self, server: Apiaryd, cell: str) -> None:
        self.server, self.cell = server, cell

    def url(self, hive: str) -> str:
        return f"{self.server.url}/a2a/cells/{self.cell}/hives/{hive}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    server = Apiaryd(Path(tmp_path_factory.mktemp("a2a")) / "data").start()
    try:
        cell = new_cell()
        deploy(server, cell, [
            hive(cell, "writer", gated=False,
                 a2a={"expose": True, "description": "writes things", "skills": SKILLS}),
            hive(cell, "gated", gated=True, a2a={"expose": True}),
            hive(cell, "hidden", gated=False),
        ])  # fmt: skip
        yield Cluster(server, cell)
    finally:
        server.stop()


class Token(CredentialService):
    """The SDK's own way to answer the card's security scheme with a credential."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_credentials(self, security_scheme_name: str, context: Any) -> str | None:
        return self.token if security_scheme_name == "bearer" else None


async def client(c: Cluster, hive: str, streaming: bool = True) -> Client:
    auth = {"Authorization": f"Bearer {c.server.token}"}
    return await create_client(
        c.url(hive), ClientConfig(streaming=streaming, httpx_client=httpx.AsyncClient(timeout=30)),
        interceptors=[AuthInterceptor(Token(c.server.token))],
        resolver_http_kwargs={"headers": auth},
    )  # fmt: skip


def ask(text: str, task: str | None = None) -> SendMessageRequest:
    message = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)])
    if task:
        message.task_id = task
    return SendMessageRequest(message=message)


def state(r: StreamResponse) -> int:
    return r.task.status.state if r.HasField("task") else r.status_update.status.state


def event_id(r: StreamResponse) -> str:
    meta = r.task.metadata if r.HasField("task") else r.status_update.metadata
    return str(meta[EVENT_ID])


def text_of(r: StreamResponse) -> str:
    status = r.task.status if r.HasField("task") else r.status_update.status
    return " ".join(p.text for p in status.message.parts if p.text)


async def collect(events: AsyncIterator[StreamResponse]) -> list[StreamResponse]:
    return [e async for e in events]


async def test_the_card_is_discovered_and_the_directory_lists_exposed_hives(c: Cluster) -> None:
    auth = {"Authorization": f"Bearer {c.server.token}"}
    async with httpx.AsyncClient(headers=auth) as http:
        card = await A2ACardResolver(http, c.url("writer")).get_agent_card()
        assert card.name == "writer" and card.description == "writes things"
        assert card.capabilities.streaming
        assert [s.id for s in card.skills] == ["write"]
        assert card.skills[0].examples == ["a haiku about bees"]
        (iface,) = card.supported_interfaces
        assert iface.url == c.url("writer") and iface.protocol_binding == "JSONRPC"
        assert iface.protocol_version == "1.0"
        bearer = card.security_schemes["bearer"].http_auth_security_scheme
        assert bearer.scheme == "Bearer"
        generated = await A2ACardResolver(http, c.url("gated")).get_agent_card()
        assert [s.id for s in generated.skills] == ["draft", "review"]
        assert "approves" in generated.skills[1].description
        directory = (await http.get(f"{c.server.url}/a2a/cells/{c.cell}")).json()
        assert sorted(a["name"] for a in directory["agents"]) == ["gated", "writer"]
        hidden = await http.get(c.url("hidden") + "/.well-known/agent-card.json")
        assert hidden.status_code == 404 and "spec.a2a.expose" in hidden.json()["message"]
    async with httpx.AsyncClient() as http:
        anonymous = await http.get(c.url("writer") + "/.well-known/agent-card.json")
        assert anonymous.status_code == 401


async def test_send_message_runs_the_hive_and_get_task_reads_it(c: Cluster) -> None:
    a2a = await client(c, "writer", streaming=False)
    (answer,) = await collect(a2a.send_message(ask("hello world")))
    task = answer.task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert [p.text for p in task.artifacts[0].parts] == ["ok: draft: hello world"]
    again = await a2a.get_task(GetTaskRequest(id=task.id))
    assert again.status.state == TaskState.TASK_STATE_COMPLETED
    assert [m.role for m in again.history] == [Role.ROLE_USER, Role.ROLE_AGENT]
    assert again.history[0].parts[0].text == "hello world"
    with pytest.raises(UnsupportedOperationError):  # a finished task takes no more messages
        await collect(a2a.send_message(ask("more", task=task.id)))
    await a2a.close()


async def test_stream_disconnect_and_resubscribe_loses_no_event(c: Cluster) -> None:
    a2a = await client(c, "writer")
    seen: list[StreamResponse] = []
    async for event in a2a.send_message(ask("hello world")):
        seen.append(event)
        if len(seen) == 3:
            break  # the client goes away mid-stream
    assert seen[0].HasField("task")
    task = seen[0].task.id
    assert state(seen[-1]) == TaskState.TASK_STATE_WORKING
    resumed = await collect(a2a.subscribe(
        SubscribeToTaskRequest(id=task),
        context=ClientCallContext(service_parameters={"Last-Event-ID": event_id(seen[-1])}),
    ))  # fmt: skip
    assert state(resumed[-1]) == TaskState.TASK_STATE_COMPLETED
    assert text_of(resumed[-1]) == "ok: draft: hello world"
    everything = await collect(a2a.subscribe(
        SubscribeToTaskRequest(id=task),
        context=ClientCallContext(service_parameters={"Last-Event-ID": "0"}),
    ))  # fmt: skip
    ids = [event_id(e) for e in seen[1:] + resumed]
    assert ids == [event_id(e) for e in everything]  # nothing lost, nothing twice
    partial = [text_of(e) for e in everything if e.status_update.status.message.metadata
               and e.status_update.status.message.metadata["partial"]]  # fmt: skip
    assert partial == ["hello", " world"]  # the agent's partial lines, in order
    # without Last-Event-ID: the task as it stands, then (it ended) nothing more
    (now,) = await collect(a2a.subscribe(SubscribeToTaskRequest(id=task)))
    assert now.task.status.state == TaskState.TASK_STATE_COMPLETED
    await a2a.close()


async def test_an_approval_gate_is_input_required_and_the_next_message_answers_it(
    c: Cluster,
) -> None:
    a2a = await client(c, "gated")
    first = await collect(a2a.send_message(ask("ship it")))
    task = first[0].task.id
    assert state(first[-1]) == TaskState.TASK_STATE_INPUT_REQUIRED  # the stream pauses there
    assert "waits for approval" in text_of(first[-1])
    got = await a2a.get_task(GetTaskRequest(id=task))
    assert got.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    with pytest.raises(InvalidParamsError, match="approve"):
        await collect(a2a.send_message(ask("maybe", task=task)))
    rest = await collect(a2a.send_message(ask("approve", task=task)))
    assert state(rest[-1]) == TaskState.TASK_STATE_COMPLETED
    assert text_of(rest[-1]) == "ok: draft: ship it"

    other = (await collect(a2a.send_message(ask("drop tables"))))[0].task.id
    no = await collect(a2a.send_message(ask("reject: too risky", task=other)))
    assert state(no[-1]) == TaskState.TASK_STATE_REJECTED and "too risky" in text_of(no[-1])

    third = (await collect(a2a.send_message(ask("wait"))))[0].task.id
    cancelled = await a2a.cancel_task(CancelTaskRequest(id=third))
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    with pytest.raises(TaskNotCancelableError):
        await a2a.cancel_task(CancelTaskRequest(id=third))
    await a2a.close()


@pytest.fixture
def c(cluster: Cluster) -> Cluster:
    return cluster


async def test_tokens_and_roles_are_the_rest_apis(c: Cluster) -> None:
    """A viewer of the cell reads the card and a task, but may not start one; another cell's
    token sees nothing."""
    with c.server.client(c.cell) as api:
        made = api.request("POST", "/api/v1/tokens", json_body={
            "apiVersion": "apiary.io/v1", "kind": "Token", "metadata": {"name": "a2a-viewer"},
            "spec": {"role": "viewer", "cell": c.cell}}).body  # fmt: skip
    viewer = made["status"]["token"]
    writer = await client(c, "writer", streaming=False)
    (done,) = await collect(writer.send_message(ask("x")))
    await writer.close()
    seen = await create_client(
        c.url("writer"), ClientConfig(streaming=False, httpx_client=httpx.AsyncClient()),
        interceptors=[AuthInterceptor(Token(viewer))],
        resolver_http_kwargs={"headers": {"Authorization": f"Bearer {viewer}"}},
    )  # fmt: skip
    task = await seen.get_task(GetTaskRequest(id=done.task.id))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    with pytest.raises(A2AClientError, match="403"):
        await collect(seen.send_message(ask("y")))
    await seen.close()
