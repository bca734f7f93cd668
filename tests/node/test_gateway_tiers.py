"""The gateway applies the drone's task tier (``spec.resolvedTier``, written by the controllers):
its model for every chat completion, its token cap, and refuses other tiers' aliases. A real keeper
HTTP server and the fake provider on loopback, as in test_gateway.py (its ``env`` fixture)."""

from __future__ import annotations

from typing import Any

import pytest
from test_gateway import Env, env  # noqa: F401  (env: the fixture)

from apiary.gateway.budget import GatewayRefusal
from apiary.gateway.tiers import apply_tier

SIMPLE = {"name": "simple", "priority": "low", "model": "tier-mini", "maxTokens": 50}


def tiered(on: Env, tier: dict[str, Any] | None) -> None:
    if tier is None:
        on.drone.spec.pop("resolvedTier", None)
    else:
        on.drone.spec["resolvedTier"] = tier


@pytest.mark.parametrize("asked", [None, "tier:simple", "simple", "gpt-4.5-preview"])
async def test_every_chat_completion_goes_to_the_tiers_model(
    env: Env,  # noqa: F811
    asked: str | None,
) -> None:
    tiered(env, SIMPLE)
    env.drone.meter.begin("m1")
    answer = await env.chat("hi", **({"model": asked} if asked else {}))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-apiary-tier"] == "simple"
    (call,) = env.fake.chat_calls()
    assert call.body["model"] == "tier-mini"  # not spec.llm.model (fake-small), not the agent's
    assert call.body["max_tokens"] == 50  # named none: the cap is set


async def test_max_tokens_are_capped_and_streams_are_tiered_too(env: Env) -> None:  # noqa: F811
    tiered(env, SIMPLE)
    env.drone.meter.begin("m1")
    await env.chat("a", max_tokens=20)
    await env.chat("b", max_tokens=5000)
    await env.chat("c", max_completion_tokens=999)
    bodies = [c.body for c in env.fake.chat_calls()]
    assert [b.get("max_tokens") for b in bodies] == [20, 50, None]
    assert bodies[2]["max_completion_tokens"] == 50
    body = {"messages": [{"role": "user", "content": "x"}], "stream": True, "model": "other"}
    async with env.http.stream(
        "POST", env.base + "/chat/completions", json=body, headers=env.headers
    ) as resp:
        assert resp.headers["x-apiary-tier"] == "simple"
        assert [line async for line in resp.aiter_lines() if line][-1] == "data: [DONE]"
    assert env.fake.chat_calls()[-1].body["model"] == "tier-mini"


async def test_a_tier_without_a_model_keeps_the_agentspecs_and_the_agents_choice(
    env: Env,  # noqa: F811
) -> None:
    tiered(env, {"name": "standard", "priority": "normal"})
    env.drone.meter.begin("m1")
    for asked in (None, "tier:standard", "fake-large"):
        answer = await env.chat("hi", **({"model": asked} if asked else {}))
        assert answer.status_code == 200, answer.text
    assert [c.body["model"] for c in env.fake.chat_calls()] == [
        "fake-small", "fake-small", "fake-large",
    ]  # fmt: skip
    assert all("max_tokens" not in c.body for c in env.fake.chat_calls())


async def test_another_tiers_alias_is_refused_and_embeddings_keep_their_model(
    env: Env,  # noqa: F811
) -> None:
    tiered(env, SIMPLE)
    env.drone.meter.begin("m1")
    up = await env.chat("hi", model="tier:complex")
    assert up.status_code == 403 and up.json()["error"]["type"] == "permission_error"
    assert "tier 'complex'" in up.json()["error"]["message"]
    assert (await env.chat("hi", model="complex")).status_code == 403
    assert env.fake.chat_calls() == []  # nothing reached the provider
    vectors = await env.http.post(
        env.base + "/embeddings", json={"input": ["a"], "model": "tier:simple"},
        headers=env.headers,
    )  # fmt: skip
    assert vectors.status_code == 200, vectors.text
    assert "x-apiary-tier" not in vectors.headers
    assert env.fake.requests[-1].body["model"] == "fake-small"  # spec.llm.model, not tier-mini
    tiered(env, None)
    untiered = await env.chat("hi", model="tier:simple")
    assert untiered.status_code == 400 and "no spec.taskTier" in untiered.json()["error"]["message"]
    assert (await env.chat("hi")).headers.get("x-apiary-tier") is None


def test_an_alias_of_a_tier_without_a_model_and_no_default_is_a_400() -> None:
    spec = {"resolvedTier": {"name": "simple", "priority": "low"}}
    with pytest.raises(GatewayRefusal) as refused:
        apply_tier({"model": "tier:simple"}, spec, None, chat=True)
    assert refused.value.status == 400
    assert "alias of tier 'simple', which names no model" in refused.value.message
    body: dict[str, Any] = {"model": "explicit"}
    assert apply_tier(body, spec, None, chat=True) == "simple" and body == {"model": "explicit"}
