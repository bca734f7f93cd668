"""Pause, don't kill (issue 15.3): a session whose budget is used up waits, its call held in the
gateway, until ``apiaryctl budget raise`` makes room; then the held call — and only it — goes to
the provider and the session finishes as if nothing happened."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from test_gateway_openai_sdk import sdk_world

from apiary.waggle import Message
from stack import agentspec, apiaryctl, hive, is_ready, session

LLM_AGENT = [sys.executable, str(Path(__file__).parents[2] / "examples/agents/llm_agent.py")]


async def phase_of(stack: object, name: str) -> str:
    got = await stack.store.get("Session", stack.cell, name)  # type: ignore[attr-defined]
    return str((got.get("status") or {}).get("phase") or "")


async def test_a_session_out_of_budget_waits_and_goes_on_when_raised(
    tmp_path: Path, cell: str
) -> None:
    async with sdk_world(tmp_path, cell) as (stack, provider):
        agent = agentspec(cell, "writer", LLM_AGENT, fmt="waggle")
        agent["spec"]["llm"] = {"provider": {"secretRef": {"name": "provider"}},
                                "model": "fake-small"}  # fmt: skip
        agent["spec"]["runtime"]["env"] = [{"name": "CALLS", "value": "2"}]
        await stack.apply(agent)
        # Room for one call of 15 tokens, not two; exhausted means pause.
        budget = {"perSession": {"tokens": 20}, "onExhausted": "pause"}
        await stack.apply(hive(cell, "h", [("write", "writer", 1)], budget=budget))
        await stack.wait(lambda ds: len(ds) == 1 and all(map(is_ready, ds)), 20, "drone ready")
        assert stack.router is not None and stack.journal is not None
        await stack.store.create(session(cell, "s", "h"))
        await stack.router.submit(cell, "s", Message("alpha"))
        for _ in range(200):
            if await phase_of(stack, "s") == "WaitingForBudget":
                break
            await asyncio.sleep(0.05)
        status = (await stack.store.get("Session", cell, "s"))["status"]
        assert status["phase"] == "WaitingForBudget", status
        assert "session s has 5 of its 20 tokens left" in status["waitingForBudget"]
        await asyncio.sleep(1.0)  # held, not failed, not retried
        assert len(provider.chat_calls()) == 1
        assert await stack.journal.read(f"{cell}/s", kinds={"final", "error"}) == []
        out = await apiaryctl(stack, "budget", "raise", "session/s", "--tokens", "20")
        assert out.strip() == "session/s raised by 20 tokens (resumed: s)"
        for _ in range(200):
            done = await stack.journal.read(f"{cell}/s", kinds={"final", "error"})
            if done:
                break
            await asyncio.sleep(0.05)
        assert done[-1].kind == "final", done[-1].message
        assert done[-1].message["payload"] == {"response": "echo: alpha", "confidence": 0.9}
        # Nothing was sent twice: the first call once, the held call once.
        assert len(provider.chat_calls()) == 2
        assert await phase_of(stack, "s") != "WaitingForBudget"
        ledger = (await stack.client.request("GET", f"/api/v1/cells/{cell}/llmbudget")).body
        assert ledger["sessions"]["s"]["tokens"] == 30
        assert ledger["sessions"]["s"]["raisedTokens"] == 20 and ledger["waiting"] == {}
