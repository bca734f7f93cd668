"""Issue 15.2, the rest: ``status.usage`` on the Hive and the Cell shows the tokens and estimated
cost of their LLM calls — copied from apiaryd's budget ledger by the Queen, coalesced, not
written per call. Real agents (the unmodified ``openai`` SDK in a drone) call through the node's
gateway to the fake provider; ``apiaryctl describe`` shows the figures."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from test_gateway_openai_sdk import ask, sdk_hive, sdk_world

from apiary.controllers import QueenSettings
from apiary.controllers.settings import CellUsageSettings
from stack import Stack, apiaryctl

PRICES = {"fake-small": {"input": 1000, "output": 2000}}  # USD per 1M tokens
LLM_MIN_INTERVAL = 0.5
"""The ledger copy's coalescing window, shorter than apiaryd's 3 s: the test waits on it."""


async def usage_of(stack: Stack, kind: str, name: str) -> Any:
    cell = "" if kind == "Cell" else stack.cell
    return ((await stack.store.get(kind, cell, name)).get("status") or {}).get("usage")


async def wait_usage(stack: Stack, kind: str, name: str, want: dict[str, Any]) -> None:
    deadline = time.monotonic() + 20
    while (got := await usage_of(stack, kind, name)) != want:
        assert time.monotonic() < deadline, f"{kind} {name} status.usage: {got}, wanted {want}"
        await asyncio.sleep(0.1)


async def test_hive_and_cell_status_usage_show_tokens_and_cost_of_gateway_calls(
    tmp_path: Path, cell: str
) -> None:
    queen = QueenSettings(usage=CellUsageSettings(llm_min_interval=LLM_MIN_INTERVAL))
    async with sdk_world(tmp_path, cell, queen=queen) as (stack, provider):
        await stack.apply({"apiVersion": "apiary.io/v1", "kind": "Cell",
                           "metadata": {"name": cell}, "spec": {"prices": PRICES}})  # fmt: skip
        await sdk_hive(stack)
        assert await usage_of(stack, "Hive", "h") is None
        for i in range(3):
            done = await ask(stack, f"s{i}", {"op": "chat", "text": f"hello {i}"})
            assert done.kind == "final", done.message
        assert len(provider.chat_calls()) == 3
        # 3 calls of 10 prompt + 5 completion tokens at $1000 / $2000 per 1M tokens
        want = {"promptTokens": 30, "completionTokens": 15, "totalTokens": 45, "costUsd": 0.06}
        await wait_usage(stack, "Hive", "h", want)
        await wait_usage(stack, "Cell", cell, want)
        # Coalesced: one write for the three calls' burst, none while nothing changes.
        hive_rv = (await stack.store.get("Hive", cell, "h"))["metadata"]["resourceVersion"]
        cell_rv = (await stack.store.get("Cell", "", cell))["metadata"]["resourceVersion"]
        await asyncio.sleep(3 * LLM_MIN_INTERVAL)  # longer than the pass's min interval
        assert (await stack.store.get("Cell", "", cell))["metadata"]["resourceVersion"] == cell_rv
        assert (await stack.store.get("Hive", cell, "h"))["metadata"]["resourceVersion"] == hive_rv
        shown = await apiaryctl(stack, "describe", "hive", "h")
        assert "LLM usage:    45 tokens (30 prompt + 15 completion), $0.060000 estimated" in shown
        shown = await apiaryctl(stack, "describe", "cell", cell)
        assert "LLM usage:    45 tokens (30 prompt + 15 completion), $0.060000 estimated" in shown
        # One more call: the figures follow.
        done = await ask(stack, "s9", {"op": "chat", "text": "again"})
        assert done.kind == "final", done.message
        more = {"promptTokens": 40, "completionTokens": 20, "totalTokens": 60, "costUsd": 0.08}
        await wait_usage(stack, "Hive", "h", more)
        await wait_usage(stack, "Cell", cell, more)
