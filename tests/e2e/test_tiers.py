"""Task tiers end to end: a real apiaryd (embedded node), a Cell whose tier map names two models,
two AgentSpecs of tiers ``simple`` and ``standard`` running examples/agents/llm_agent.py, and the
fake OpenAI-compatible provider on loopback (in a thread of its own, since the test drives
apiaryd with the blocking client). Each agent's calls reach the model of its tier, capped at its
tier's ``maxTokens``, whatever ``spec.llm.model`` says; the drones show what the tier resolved to.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apiary.client import ApiClient
from fakes.openai_server import FakeOpenAI, running_fake_openai

from .cluster import REPO, Apiaryd, agentspec, hive, is_ready, new_cell, run_session, wait_drones

LLM_AGENT = [sys.executable, str(REPO / "examples/agents/llm_agent.py")]
TIERS = {
    "simple": {"model": "fake-small", "maxTokens": 64, "priority": "low"},
    "standard": {"model": "fake-large", "maxTokens": 512},
}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """The fake provider, served from its own event loop in a thread."""
    found: list[FakeOpenAI] = []
    started, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        async with running_fake_openai() as provider:
            found.append(provider)
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10), "the fake provider did not start"
    yield found[0]
    stop.set()
    thread.join(10)


def run(c: ApiClient, cell: str, hive_name: str, payload: str) -> Any:
    """One input (no type: the server's default) to a new session; its final payload."""
    return run_session(c, cell, hive_name, payload, type=None)


def test_each_tier_reaches_the_model_its_cells_tier_map_names(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    server = Apiaryd(tmp_path / "data").start()
    try:
        cell = new_cell()
        c = server.client(cell)
        c.apply({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": cell},
                 "spec": {"tiers": TIERS}})  # fmt: skip
        c.apply({"apiVersion": "apiary.io/v1", "kind": "Secret",
                 "metadata": {"name": "provider", "namespace": cell},
                 "stringData": {"baseUrl": fake.url, "apiKey": fake.api_key}})  # fmt: skip
        for name, tier in (("cheap", "simple"), ("main", "standard")):
            agent = agentspec(cell, name, LLM_AGENT)
            agent["spec"]["interface"]["format"] = "waggle"
            agent["spec"]["taskTier"] = tier
            # the tier's model wins over the AgentSpec's own default
            agent["spec"]["llm"] = {"provider": {"secretRef": {"name": "provider"}},
                                    "model": "fake-default"}  # fmt: skip
            c.apply(agent)
            c.apply(hive(cell, f"h-{name}", name, 1))
        ready = wait_drones(
            c, cell, lambda ds: len(ds) == 2 and all(map(is_ready, ds)), 30, "two ready drones"
        )
        resolved = {d["spec"]["agentSpec"]: d["spec"]["resolvedTier"] for d in ready}
        assert resolved == {
            "cheap": {"name": "simple", **TIERS["simple"]},
            "main": {"name": "standard", "priority": "normal", **TIERS["standard"]},
        }

        assert run(c, cell, "h-cheap", "from cheap")["response"] == "echo: from cheap"
        assert run(c, cell, "h-main", "from main")["response"] == "echo: from main"
        calls = {call.body["messages"][-1]["content"]: call.body for call in fake.chat_calls()}
        assert calls["from cheap"]["model"] == "fake-small"
        assert calls["from cheap"]["max_tokens"] == 64
        assert calls["from main"]["model"] == "fake-large"
        assert calls["from main"]["max_tokens"] == 512
        described = subprocess.run(
            [sys.executable, "-m", "apiary.ctl.main", "describe", "agentspec", "cheap",
             "-s", server.url, "--token", server.token, "-n", cell],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert described.returncode == 0, described.stderr
        assert "simple → model fake-small, maxTokens 64, priority low" in described.stdout
    finally:
        server.stop()
