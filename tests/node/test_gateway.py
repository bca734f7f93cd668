"""The LLM gateway on a real keeper HTTP server, forwarding to a real fake provider on loopback.

The drone here is a real :class:`DroneMeter` with a spec, which is all the gateway reads of a
running drone; objects (AgentSpec, Secret) come from a table, as the API would answer them.
The whole path — node agent, worker, router, a real agent process — is in test_gateway_stack.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from apiary.agent import Llm, LlmError
from apiary.client import AsyncApiClient
from apiary.errors import NotFound
from apiary.gateway.budget import DroneMeter, until_exceeded
from apiary.gateway.service import LlmGateway
from apiary.node.keeperhttp import KeeperHttpServer
from apiary.telemetry.metrics import Recorder
from apiary.telemetry.taps import _tokens
from apiary.waggle.envelope import Outcome
from fakes import openai_server
from fakes.openai_server import FakeOpenAI, running_fake_openai

CELL, DRONE = "c1", "d1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Drone:
    spec: dict[str, Any]
    meter: DroneMeter


@dataclass
class Env:
    fake: FakeOpenAI
    http: httpx.AsyncClient
    drone: Drone
    objects: dict[tuple[str, str], dict[str, Any]]
    keeper: KeeperHttpServer
    base: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    async def chat(self, content: str = "hi", **body: Any) -> httpx.Response:
        payload = {"messages": [{"role": "user", "content": content}], **body}
        return await self.http.post(
            self.base + "/chat/completions", json=payload, headers=self.headers
        )


ANSWERED = "gpt-4o-mini-2024-07-18"
"""The model :class:`RenamingFake` says answered, whatever was asked for (a dated version, as
OpenAI answers ``gpt-4o-mini``; a router may answer with another model altogether)."""


@dataclass
class RenamingFake(FakeOpenAI):
    """The fake provider, answering chat completions (plain and streamed) as :data:`ANSWERED`."""

    answer_as: str = ANSWERED

    async def chat(self, request: Request) -> Response:
        answer = await super().chat(request)
        if isinstance(answer, StreamingResponse):
            asked = self.requests[-1].body["model"]
            before, after = f'"model": "{asked}"'.encode(), f'"model": "{self.answer_as}"'.encode()
            inner = answer.body_iterator

            async def renamed() -> AsyncIterator[bytes]:
                async for chunk in inner:
                    raw = chunk if isinstance(chunk, bytes) else str(chunk).encode()
                    yield raw.replace(before, after)

            answer.body_iterator = renamed()
            return answer
        if answer.status_code == 200 and isinstance(answer, JSONResponse):
            body = json.loads(bytes(answer.body))
            return JSONResponse({**body, "model": self.answer_as})
        return answer


@pytest.fixture
def renaming(monkeypatch: pytest.MonkeyPatch) -> None:
    """``running_fake_openai`` serves a :class:`RenamingFake` (the ``env`` fixture after it)."""
    monkeypatch.setattr(openai_server, "FakeOpenAI", RenamingFake)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(url: str, key: str) -> dict[str, Any]:
    return {"kind": "Secret", "data": {"baseUrl": b64(url), "apiKey": b64(key)}}


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with running_fake_openai() as fake:
        objects: dict[tuple[str, str], dict[str, Any]] = {
            ("Secret", "provider"): secret(fake.url, fake.api_key),
            ("AgentSpec", "writer"): {
                "spec": {"llm": {"provider": {"secretRef": {"name": "provider"}},
                                 "model": "fake-small"}},
            },
        }  # fmt: skip

        async def read(kind: str, cell: str, name: str) -> dict[str, Any]:
            assert cell == CELL
            if (kind, name) not in objects:
                raise NotFound(f"{kind} {name!r} not found")
            return objects[(kind, name)]

        drone = Drone({"agentSpec": "writer"}, DroneMeter(stop_grace=0.05))
        client = AsyncApiClient("http://127.0.0.1:9", "unused", CELL)
        keeper = KeeperHttpServer(client, allowed=lambda c, d: (c, d) == (CELL, DRONE))
        gateway = LlmGateway(
            keeper, lambda c, d: drone if (c, d) == (CELL, DRONE) else None, read,
            provider_ttl=0,
        )  # fmt: skip
        keeper.add_routes(gateway.routes())
        async with keeper, httpx.AsyncClient(timeout=10) as http:
            env = Env(fake, http, drone, objects, keeper)
            env.base = keeper.drone_env(CELL, DRONE)["APIARY_KEEPER_URL"] + "/v1"
            env.headers = {"Authorization": f"Bearer {keeper.token_for(CELL, DRONE)}"}
            yield env
        await gateway.aclose()
        await client.aclose()


async def test_chat_is_forwarded_with_the_provider_key_and_counted(env: Env) -> None:
    tally = env.drone.meter.begin("m1")
    answer = await env.chat("hello there")
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "echo: hello there"
    (call,) = env.fake.chat_calls()
    assert call.body["model"] == "fake-small"  # injected from spec.llm.model
    assert call.headers["authorization"] == f"Bearer {env.fake.api_key}"
    assert env.keeper.token_for(CELL, DRONE) not in str(call.headers)
    assert tally.usage == (10, 5)
    answer = await env.chat("again", model="fake-large")
    assert env.fake.chat_calls()[-1].body["model"] == "fake-large"  # the agent's choice wins
    assert tally.usage == (20, 10) and env.drone.meter.total == (20, 10)


async def test_streaming_passes_events_through_as_they_come_and_counts_the_usage_chunk(
    env: Env,
) -> None:
    tally = env.drone.meter.begin("m1")
    env.fake.stream_gate = asyncio.Event()
    body = {"messages": [{"role": "user", "content": "one two three"}], "stream": True}
    async with env.http.stream(
        "POST", env.base + "/chat/completions", json=body, headers=env.headers
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.aiter_lines()
        first = await asyncio.wait_for(anext(lines), 5)  # the provider still holds the rest
        assert first.startswith("data: ") and '"echo:"' in first
        assert tally.usage == (0, 0)
        env.fake.stream_gate.set()
        rest = [line async for line in lines if line]
    events = [first, *rest]
    assert events[-1] == "data: [DONE]"
    assert all('"usage"' not in e for e in events)  # the agent did not ask for the usage chunk
    assert env.fake.chat_calls()[0].body["stream_options"] == {"include_usage": True}
    assert tally.usage == (10, 5)


async def test_streaming_keeps_the_usage_chunk_when_the_agent_asked(env: Env) -> None:
    tally = env.drone.meter.begin("m1")
    body = {"messages": [{"role": "user", "content": "x"}], "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    async with env.http.stream(
        "POST", env.base + "/chat/completions", json=body, headers=env.headers
    ) as resp:
        events = [line async for line in resp.aiter_lines() if line]
    assert any('"usage"' in e for e in events)
    assert tally.usage == (10, 5)


async def test_embeddings_and_models(env: Env) -> None:
    tally = env.drone.meter.begin("m1")
    answer = await env.http.post(
        env.base + "/embeddings", json={"input": ["a", "b"]}, headers=env.headers
    )
    assert answer.status_code == 200, answer.text
    assert [d["index"] for d in answer.json()["data"]] == [0, 1]
    assert tally.usage == (4, 0)
    models = await env.http.get(env.base + "/models", headers=env.headers)
    assert [m["id"] for m in models.json()["data"]] == ["fake-small", "fake-large"]


async def test_callers_and_messages_are_checked(env: Env) -> None:
    wrong = await env.http.post(
        env.base + "/chat/completions", json={"messages": []},
        headers={"Authorization": "Bearer nope"},
    )  # fmt: skip
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    idle = await env.chat()
    assert idle.status_code == 409 and idle.json()["error"]["type"] == "message_not_in_flight"
    first, second = env.drone.meter.begin("m1"), env.drone.meter.begin("m2")
    both = await env.chat()
    assert both.status_code == 400 and "X-Apiary-Message-Id" in both.json()["error"]["message"]
    named = await env.http.post(
        env.base + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]},
        headers={**env.headers, "X-Apiary-Message-Id": "m2"},
    )  # fmt: skip
    assert named.status_code == 200 and second.usage == (10, 5) and first.usage == (0, 0)
    env.drone.meter.end("m2")
    gone = await env.http.post(
        env.base + "/chat/completions", json={"messages": []},
        headers={**env.headers, "X-Apiary-Message-Id": "m2"},
    )  # fmt: skip
    assert gone.status_code == 409
    bad = await env.http.post(env.base + "/chat/completions", content=b"{nope", headers=env.headers)
    assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]["message"]
    assert len(env.fake.chat_calls()) == 1


async def test_per_request_budget_stops_at_budget_plus_one_call(env: Env) -> None:
    env.drone.meter.per_request = 25  # each call costs 15
    tally = env.drone.meter.begin("m1")
    assert (await env.chat()).status_code == 200
    assert tally.exceeded is None
    assert (await env.chat()).status_code == 200  # crosses the budget: allowed, message marked
    assert tally.exceeded is not None and "per-request budget of 25" in tally.exceeded
    refused = await env.chat()
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "budget_exceeded"
    assert tally.used == 30 <= 25 + 15 and env.fake.tokens_billed() == 30


async def test_session_budget_from_the_dispatch(env: Env) -> None:
    tally = env.drone.meter.begin("m1", tokens_left=15)
    assert (await env.chat()).status_code == 200  # exactly the rest: no overshoot
    assert tally.exceeded is None
    refused = await env.chat()
    assert (
        refused.status_code == 429 and "session had 15 left" in refused.json()["error"]["message"]
    )
    assert tally.exceeded is not None and len(env.fake.chat_calls()) == 1


async def test_per_minute_budget_is_a_sliding_window(env: Env) -> None:
    clock = Clock()
    env.drone.meter = DroneMeter(per_minute=30, clock=clock, stop_grace=0.05)
    first = env.drone.meter.begin("m1")
    assert (await env.chat()).status_code == 200
    clock.now += 30
    assert (await env.chat()).status_code == 200  # 15 left: room for the prompt and more
    refused = await env.chat()
    assert refused.status_code == 429 and refused.headers["retry-after"] == "31"
    assert first.exceeded is not None and "per-minute budget is 30" in first.exceeded
    env.drone.meter.end("m1")
    env.drone.meter.begin("m2")
    clock.now += 30.5  # the first call left the window; the second is still in it
    assert (await env.chat()).status_code == 200
    assert env.drone.meter.minute_used() == 30


async def test_provider_errors_pass_through_and_cost_nothing(env: Env) -> None:
    tally = env.drone.meter.begin("m1")
    env.fake.fail_next.append((503, {"error": {"message": "overloaded", "type": "server_error"}}))
    answer = await env.chat()
    assert answer.status_code == 503 and answer.json()["error"]["message"] == "overloaded"
    assert tally.usage == (0, 0)
    env.objects[("Secret", "provider")] = secret(env.fake.url, "sk-wrong")
    assert (await env.chat()).status_code == 401  # the provider's own refusal
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    env.objects[("Secret", "provider")] = secret(closed, "k")
    down = await env.chat()
    assert down.status_code == 502 and down.json()["error"]["type"] == "provider_unreachable"
    assert closed in down.json()["error"]["message"]


async def test_misconfiguration_is_named(env: Env) -> None:
    env.drone.meter.begin("m1")
    del env.objects[("Secret", "provider")]
    missing = await env.chat()
    assert missing.status_code == 503
    assert missing.json()["error"]["message"] == (
        "spec.llm.provider.secretRef: Secret 'provider' not found in cell 'c1'"
    )
    env.objects[("AgentSpec", "writer")] = {"spec": {}}
    none = await env.chat()
    assert none.status_code == 404 and "has no spec.llm" in none.json()["error"]["message"]


async def test_a_runaway_delivery_is_given_up_after_the_grace() -> None:
    meter = DroneMeter(per_request=10, stop_grace=0.05)
    tally = meter.begin("m1")
    never = asyncio.get_running_loop().create_future()

    async def agent_never_answers() -> list[str]:
        return list(await never)

    async def runaway_calls() -> None:
        await asyncio.sleep(0.01)
        meter.charge(tally, 8, 4)  # over: marked, the stop timer starts

    caller = asyncio.create_task(runaway_calls())
    assert await asyncio.wait_for(until_exceeded(tally, agent_never_answers()), 2) == []
    await caller
    assert tally.exceeded is not None and never.cancelled()
    # An agent that answers after a refusal, within the grace, is heard.
    done = meter.begin("m2")
    meter.charge(done, 20, 0)
    assert await until_exceeded(done, asyncio.sleep(0, ["late answer"])) == ["late answer"]


async def test_the_sdk_helper_names_its_message_and_raises_on_refusals(env: Env) -> None:
    base = env.base.removesuffix("/v1")
    token = env.keeper.token_for(CELL, DRONE)
    env.drone.meter.per_request = 34  # exactly what the calls below use
    tally = env.drone.meter.begin("m1")
    env.drone.meter.begin("m2")  # two in flight: only the header tells them apart
    llm = Llm("m1", url=base, token=token)
    assert await asyncio.to_thread(llm.chat, "hi") == "echo: hi"
    pieces = await asyncio.to_thread(lambda: list(llm.stream("a b c")))
    assert "".join(pieces) == "echo: a b c" and len(pieces) == 4
    vectors = await asyncio.to_thread(llm.embed, ["x", "y"])
    assert len(vectors) == 2 and len(vectors[0]) == 8
    assert await asyncio.to_thread(llm.models) == ["fake-small", "fake-large"]
    assert tally.usage == (24, 10)
    with pytest.raises(LlmError) as refused:
        await asyncio.to_thread(llm.chat, "more")
    assert (refused.value.status, refused.value.type) == (429, "budget_exceeded")
    with pytest.raises(LlmError) as unknown:
        await asyncio.to_thread(Llm("m9", url=base, token=token).chat, "x")
    assert unknown.value.type == "message_not_in_flight"
    with pytest.raises(LlmError) as nowhere:
        Llm("m1", url="", token="").chat("x")
    assert nowhere.value.type == "no_keeper"


async def test_a_call_is_for_a_session_the_drone_holds(env: Env) -> None:
    """Message ids are scoped by session: two messages ``m1`` of sessions a and b may be in
    flight at once; the session header tells them apart, and a session not held is a 403."""
    in_a = env.drone.meter.begin("m1", session=f"{CELL}/a")
    in_b = env.drone.meter.begin("m1", session=f"{CELL}/b")

    async def call(**headers: str) -> httpx.Response:
        return await env.http.post(
            env.base + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]},
            headers={**env.headers, **headers},
        )  # fmt: skip

    ambiguous = await call(**{"X-Apiary-Message-Id": "m1"})
    assert ambiguous.status_code == 400 and "X-Apiary-Session-Id" in ambiguous.text
    r = await call(**{"X-Apiary-Message-Id": "m1", "X-Apiary-Session-Id": f"{CELL}/b"})
    assert r.status_code == 200 and in_b.usage == (10, 5) and in_a.usage == (0, 0)
    r = await call(**{"X-Apiary-Session-Id": "a"})  # the bare name; the only message of a
    assert r.status_code == 200 and in_a.usage == (10, 5)
    refused = await call(**{"X-Apiary-Message-Id": "m1", "X-Apiary-Session-Id": f"{CELL}/c"})
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["type"] == "permission_error"
    assert f"drone {CELL}/{DRONE} holds no message of session '{CELL}/c'" in error["message"]
    env.drone.meter.end("m1", session=f"{CELL}/a")
    after = await call(**{"X-Apiary-Session-Id": f"{CELL}/a"})  # its answer was taken
    assert after.status_code == 403
    assert len(env.fake.chat_calls()) == 2  # refused calls never reach the provider


async def test_the_sdk_names_the_session_of_its_message(env: Env) -> None:
    base = env.base.removesuffix("/v1")
    token = env.keeper.token_for(CELL, DRONE)
    mine = env.drone.meter.begin("m1", session=f"{CELL}/a")
    env.drone.meter.begin("m1", session=f"{CELL}/b")
    llm = Llm("m1", session=f"{CELL}/a", url=base, token=token)
    assert await asyncio.to_thread(llm.chat, "hi") == "echo: hi"
    assert mine.usage != (0, 0)
    with pytest.raises(LlmError) as refused:
        await asyncio.to_thread(Llm("m1", session=f"{CELL}/z", url=base, token=token).chat, "x")
    assert (refused.value.status, refused.value.type) == (403, "permission_error")


async def test_tokens_count_under_the_model_the_provider_answered_with(
    renaming: None, env: Env
) -> None:
    tally = env.drone.meter.begin("m1")
    plain = await env.chat("hello")
    assert plain.status_code == 200 and plain.json()["model"] == ANSWERED
    assert env.fake.chat_calls()[-1].body["model"] == "fake-small"  # what was asked for
    body = {"messages": [{"role": "user", "content": "x y"}], "stream": True}
    async with env.http.stream(
        "POST", env.base + "/chat/completions", json=body, headers=env.headers
    ) as resp:
        events = [line async for line in resp.aiter_lines() if line]
    assert ANSWERED in events[0]
    await env.http.post(env.base + "/embeddings", json={"input": "a"}, headers=env.headers)
    assert tally.usage == (24, 10)
    # the chats under ANSWERED; the fake's embeddings answer names the model asked for
    assert tally.models == {ANSWERED: (20, 10), "fake-small": (4, 0)}


async def test_the_answered_model_labels_the_token_metric_and_prices_its_cost(
    renaming: None, env: Env
) -> None:
    """Gateway → Outcome on the bus → the router's tap → the recorder, with the built-in price
    of gpt-4o-mini ($0.15 in, $0.60 out per 1M tokens) for the dated name the provider said."""
    tally = env.drone.meter.begin("m1", session="c1/s")
    assert (await env.chat("one")).status_code == 200
    assert (await env.chat("two", model="fake-large")).status_code == 200  # asked otherwise
    sent = Outcome("d1", "c1/s", "h", "write", DRONE, [], 1.0, None, 0, tally.usage,
                   models=tally.by_model())  # fmt: skip
    outcome = Outcome.decode(sent.encode())
    assert outcome.models == ((ANSWERED, 20, 10),)
    r = Recorder()
    for model, prompt, completion in _tokens(outcome):
        assert model is not None  # no AgentSpec lookup needed: the gateway named the model
        r.used_tokens("c1", "h", "write", prompt, completion, model)
    where = {"cell": "c1", "hive": "h", "stage": "write", "model": ANSWERED}
    value = r.registry.get_sample_value
    assert value("apiary_llm_tokens_total", {**where, "type": "prompt"}) == 20
    assert value("apiary_llm_tokens_total", {**where, "type": "completion"}) == 10
    assert (
        value("apiary_llm_tokens_total", {**where, "model": "fake-small", "type": "prompt"}) is None
    )
    cost = value("apiary_llm_cost_usd_total", where)
    assert cost == pytest.approx((20 * 0.15 + 10 * 0.60) / 1e6)


async def test_a_model_the_price_table_does_not_know_counts_tokens_and_no_cost(env: Env) -> None:
    tally = env.drone.meter.begin("m1")
    assert (await env.chat("one")).status_code == 200  # the plain fake: answers as fake-small
    assert tally.models == {"fake-small": (10, 5)}
    r = Recorder()
    outcome = Outcome("d1", "c1/s", "h", "write", DRONE, [], usage=tally.usage,
                      models=tally.by_model())  # fmt: skip
    ((model, prompt, completion),) = _tokens(outcome)
    r.used_tokens("c1", "h", "write", prompt, completion, model or "")
    where = {"cell": "c1", "hive": "h", "stage": "write", "model": "fake-small"}
    assert r.registry.get_sample_value("apiary_llm_tokens_total", {**where, "type": "prompt"}) == 10
    assert r.registry.get_sample_value("apiary_llm_cost_usd_total", where) is None


async def test_the_key_header_is_configurable_and_a_base_url_query_is_kept(env: Env) -> None:
    """Azure OpenAI: the key in ``api-key``, the base URL ending ``?api-version=…``."""
    env.drone.meter.begin("m1")
    env.fake.key_header = "api-key"
    env.objects[("Secret", "provider")] = secret(env.fake.url + "?api-version=2024-06-01", "k")
    env.fake.api_key = "k"
    spec = env.objects[("AgentSpec", "writer")]["spec"]
    assert (await env.chat()).status_code == 401  # still sent as a bearer token
    spec["llm"]["provider"]["apiKeyHeader"] = "api-key"
    answer = await env.chat("azure")
    assert answer.status_code == 200, answer.text
    call = env.fake.requests[-1]
    assert call.headers["api-key"] == "k" and "authorization" not in call.headers
    assert (call.path, call.query) == ("/v1/chat/completions", "api-version=2024-06-01")
    refused = await env.http.post(env.base + "/chat/completions", json={})
    assert refused.status_code == 401 and refused.headers["x-should-retry"] == "false"
    assert refused.json()["error"] == {
        "message": "send 'Authorization: Bearer $APIARY_KEEPER_TOKEN'",
        "type": "authentication_error", "param": None, "code": "authentication_error",
    }  # fmt: skip
