"""A hop's LLM usage by model and its estimated cost, from the gateway's count on the Outcome to
the transcript, the long-poll items, the typed stream and the Session's ``status.usage`` — priced
with the Cell's ``spec.prices`` over the server's table (as the budget ledger prices them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from apiary.api import api_state
from apiary.api.budget_ledger import prices_for
from apiary.bus import Delivery
from apiary.router.costs import CellPrices
from apiary.telemetry.prices import Prices
from apiary.waggle.envelope import Dispatch, Outcome, outcome_subject

from . import test_sessions
from .test_sessions import CELL, Env, FakeDrone, environment

PRICES = {"fake-big": {"input": 1000, "output": 2000}, "fake-small": {"input": 1, "output": 2}}
"""USD per 1M tokens: fake-big costs $0.001 per prompt token, $0.002 per completion token."""
SPLIT = (("fake-big", 10, 4), ("fake-small", 100, 50))
COST = 10 * 0.001 + 4 * 0.002 + 100 * 1e-6 + 50 * 2e-6  # 0.0182


class GatewayDrone(FakeDrone):
    """Answers as a drone whose agent called the LLM gateway: the outputs carry no usage, the
    Outcome the gateway's count — in total and by model (``"plain"``: no LLM call at all;
    ``"unpriced"``: a model no table knows; ``"crash"``: the agent died after its calls)."""

    async def handle(self, delivery: Delivery) -> None:
        d = Dispatch.decode(delivery.data)
        payload = d.message.get("payload")
        models: tuple[tuple[str, int, int], ...] = SPLIT
        text = str(payload)  # the second stage gets the first one's answer: "plain!"
        if text.startswith("plain"):
            models = ()
        elif text.startswith("unpriced"):
            models = (("nobody-knows-me", 7, 3),)
        usage = (sum(m[1] for m in models), sum(m[2] for m in models))
        error = ("AgentCrashed", "exit 1") if text.startswith("crash") else None
        out = Outcome(d.dispatch, d.session, d.hive, d.stage, "drone-x",
                      [{"type": "result", "payload": f"{payload}!"}], 2.0, error=error,
                      usage=usage, models=models)  # fmt: skip
        cell = d.session.partition("/")[0]
        await self.bus.publish(outcome_subject(cell, d.hive), out.encode(), msg_id=out.msg_id)
        await delivery.ack()


@pytest.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    monkeypatch.setattr(test_sessions, "FakeDrone", GatewayDrone)
    async with environment() as e:
        store = api_state(e.app).store
        e.router.prices = CellPrices(store, lambda cell: prices_for(Prices(), cell), ttl=0)
        cell = {"metadata": {"name": "default"}, "spec": {"prices": PRICES}}
        r = await e.client.post("/api/v1/cells", json=cell)
        assert r.status_code == 201, r.text
        await e.hive("two", ("a", "b"))
        yield e


async def _usage(env: Env, name: str, want: dict[str, Any]) -> None:
    for _ in range(100):
        r = await env.client.get(f"{CELL}/sessions/{name}")
        if (r.json().get("status") or {}).get("usage") == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"status.usage of {name}: {r.json().get('status')}, wanted {want}")


async def test_every_hop_shows_its_models_and_cost_and_the_totals_sum_them(env: Env) -> None:
    await env.session("t", hive="two")
    await env.send("t", "hi")
    await env.until("t", {"final"})
    r = await env.client.get(f"{CELL}/sessions/t/transcript")
    body = r.json()
    outputs = [e for e in body["items"] if e["kind"] == "output"]
    assert len(outputs) == 2
    for e in outputs:
        assert e["usage"] == {"promptTokens": 110, "completionTokens": 54}
        assert e["usageByModel"] == {
            "fake-big": {"promptTokens": 10, "completionTokens": 4},
            "fake-small": {"promptTokens": 100, "completionTokens": 50},
        }
        assert e["costUsd"] == round(COST, 9)
    others = [e for e in body["items"] if e["kind"] != "output"]
    assert not any("costUsd" in e or "usageByModel" in e for e in others)  # omitted, not zero
    assert body["usage"] == {"promptTokens": 220, "completionTokens": 108,
                             "costUsd": round(2 * COST, 9)}  # fmt: skip
    await _usage(env, "t", {"promptTokens": 220, "completionTokens": 108, "totalTokens": 328,
                            "costUsd": round(2 * COST, 9)})  # fmt: skip
    r = await env.client.get(f"{CELL}/sessions/t/messages", params={"after": 0})
    assert [e.get("costUsd") for e in r.json()["items"] if e["kind"] == "output"] == [
        round(COST, 9)
    ] * 2  # the long-poll items are the same entries


async def test_no_llm_call_or_no_price_means_no_cost_field(env: Env) -> None:
    await env.session("p", hive="two")
    await env.send("p", "plain")
    await env.until("p", {"final"})
    body = (await env.client.get(f"{CELL}/sessions/p/transcript")).json()
    assert body["usage"] == {"promptTokens": 0, "completionTokens": 0}
    assert not any("costUsd" in e or "usageByModel" in e for e in body["items"])

    await env.session("u", hive="two")
    await env.send("u", "unpriced")
    await env.until("u", {"final"})
    body = (await env.client.get(f"{CELL}/sessions/u/transcript")).json()
    [out, _] = [e for e in body["items"] if e["kind"] == "output"]
    assert out["usageByModel"] == {"nobody-knows-me": {"promptTokens": 7, "completionTokens": 3}}
    assert "costUsd" not in out and "costUsd" not in body["usage"]
    await _usage(env, "u", {"promptTokens": 14, "completionTokens": 6, "totalTokens": 20})


async def test_the_typed_stream_tells_the_cost_of_each_hop_and_the_running_total(
    env: Env,
) -> None:
    await env.session("s", hive="two")
    await env.send("s", "hi")
    await env.until("s", {"final"})
    from apiary.api.session_events import Typer

    typer = await Typer.resuming(env.journal, "default/s", 0)
    budget = [
        data
        for e in await env.journal.read("default/s")
        for event in typer.events(e)
        if (data := event.data)["type"] == "budget.updated"
    ]
    assert [b["usage"]["costUsd"] for b in budget] == [round(COST, 9)] * 2
    assert [b["total"]["costUsd"] for b in budget] == [round(COST, 9), round(2 * COST, 9)]


async def test_a_failed_attempt_shows_what_its_calls_cost(env: Env) -> None:
    await env.hive("fragile", routing={"retryPolicy": {"maxRetries": 0}})
    await env.session("f", hive="fragile")
    await env.send("f", "crash")
    await env.until("f", {"event"})
    body = (await env.client.get(f"{CELL}/sessions/f/transcript")).json()
    [failed] = [e for e in body["items"] if e.get("usageByModel")]
    assert failed["kind"] in ("event", "error") and failed["costUsd"] == round(COST, 9)
    assert body["usage"]["costUsd"] == round(COST, 9)
