"""The session view shows what each hop's LLM calls used and cost, in a real headless Chromium
against a real apiaryd: a two-stage hive whose agents (real processes, the unmodified ``openai``
SDK) call their node's LLM gateway, which forwards to a fake OpenAI-compatible provider on
loopback. The Cell prices the fake model (``spec.prices``), so every figure is exact: per hop
the tokens, the model and the cost, the session's total cost, the sessions list's cost column —
each the number the API gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails under APIARY_REQUIRE_SERVICES=1)
    expect = None  # type: ignore[assignment]

from e2e.cluster import Apiaryd, is_ready, wait_drones
from e2e.cluster import wait_for as until
from fakes.openai_server import FakeOpenAI, running_fake_openai

pytestmark = pytest.mark.slow
Obj = dict[str, Any]
CELL = "console-llm"
PRICES = {"fake-small": {"input": 1000, "output": 2000}}  # USD per 1M tokens
HOP_USD = 10 * 0.001 + 5 * 0.002  # the fake provider's 10 prompt + 5 completion tokens: $0.02
CHAT_AGENT = [sys.executable, "-c", """
import os, openai
from apiary.agent import agent

@agent
def answer(msg, ctx):
    client = openai.OpenAI(base_url=os.environ["APIARY_KEEPER_URL"] + "/v1",
                           api_key=os.environ["APIARY_KEEPER_TOKEN"])
    got = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": str(msg.payload)}])
    return got.choices[0].message.content

answer.run()
"""]  # fmt: skip


@contextlib.contextmanager
def fake_provider() -> Iterator[FakeOpenAI]:
    """The fake OpenAI-compatible provider, served from a thread of its own (these tests are
    synchronous: Playwright's sync API)."""
    started = threading.Event()
    held: dict[str, Any] = {}

    async def serve() -> None:
        held["stop"] = asyncio.Event()
        async with running_fake_openai() as fake:
            held["fake"] = fake
            started.set()
            await held["stop"].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10), "the fake provider did not start"
    try:
        yield held["fake"]
    finally:
        loop.call_soon_threadsafe(held["stop"].set)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Apiaryd, FakeOpenAI]]:
    with fake_provider() as provider:
        daemon = Apiaryd(tmp_path_factory.mktemp("console-llm") / "data").start()
        try:
            with daemon.client(CELL) as c:
                c.create({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": CELL},
                          "spec": {"prices": PRICES}})  # fmt: skip
                c.create({"apiVersion": "apiary.io/v1", "kind": "Secret",
                          "metadata": {"name": "provider", "namespace": CELL},
                          "stringData": {"baseUrl": provider.url,
                                         "apiKey": provider.api_key}})  # fmt: skip
                c.create({"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
                          "metadata": {"name": "chat", "namespace": CELL},
                          "spec": {"runtime": {"command": CHAT_AGENT},
                                   "interface": {"type": "stdin", "format": "waggle"},
                                   "llm": {"provider": {"secretRef": {"name": "provider"}},
                                           "model": "fake-small"},
                                   "resources": {"requests": {"cpu": 10,
                                                              "memory": 8_000_000}}}})  # fmt: skip
                stages = [{"name": "draft", "agentRef": "chat"},
                          {"name": "polish", "agentRef": "chat"}]  # fmt: skip
                c.create({"apiVersion": "apiary.io/v1", "kind": "Hive",
                          "metadata": {"name": "ask", "namespace": CELL},
                          "spec": {"pattern": "pipeline", "stages": stages}})  # fmt: skip
                wait_drones(c, CELL, lambda ds: len(ds) == 2 and all(map(is_ready, ds)), 30,
                            "the LLM cell's drones Ready")  # fmt: skip
            time.sleep(0.2)  # a Ready drone's worker subscribes right after its status is written
            yield daemon, provider
        finally:
            daemon.stop()


def usd(value: float) -> str:
    """As the console writes a cost (static/dom.js ``usd``)."""
    return "$" + f"{value:.6f}".rstrip("0").rstrip(".")


def test_the_session_view_shows_each_hops_tokens_and_cost_and_the_total(
    browser: Any, server: tuple[Apiaryd, FakeOpenAI], shots: Path
) -> None:
    daemon, provider = server
    http = httpx.Client(base_url=daemon.url, timeout=10,
                        headers={"Authorization": f"Bearer {daemon.token}"})  # fmt: skip
    base = f"/api/v1/cells/{CELL}/sessions"
    body = {"metadata": {"name": "priced"}, "spec": {"hiveRef": "ask", "input": "hi"}}
    assert http.post(base, json=body).status_code == 201

    def finished() -> Obj | None:
        t = http.get(f"{base}/priced/transcript").json()
        return t if any(e["kind"] == "final" for e in t["items"]) else None

    transcript = until(finished, 30, "the session's final answer")
    outputs = [e for e in transcript["items"] if e["kind"] == "output"]
    assert [e["stage"] for e in outputs] == ["draft", "polish"]
    for e in outputs:  # what the API says; the page must say the same
        assert e["usage"] == {"promptTokens": 10, "completionTokens": 5}
        assert e["usageByModel"] == {"fake-small": {"promptTokens": 10, "completionTokens": 5}}
        assert e["costUsd"] == pytest.approx(HOP_USD)
    total = transcript["usage"]["costUsd"]
    assert total == pytest.approx(2 * HOP_USD)
    assert len([r for r in provider.requests if r.method == "POST"]) == 2

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(
        "if (location.protocol === 'http:') "
        f"sessionStorage.setItem('apiary.token', {json.dumps(daemon.token)});"
    )
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{daemon.url}/ui/#/session/{CELL}/priced")
        page.wait_for_selector("main[data-ready='true']", timeout=10_000)
        hops = page.locator("#timeline .entry[data-kind='output']")
        expect(hops).to_have_count(2)
        for i, e in enumerate(outputs):
            hop = hops.nth(i)
            expect(hop.locator(".tokens")).to_have_text("15 tokens (10 + 5)")
            expect(hop.locator(".tokens")).to_have_attribute(
                "title", "fake-small: 10 prompt + 5 completion"
            )
            expect(hop.locator(".models")).to_have_text("fake-small")
            expect(hop.locator(".cost")).to_have_text(usd(e["costUsd"]))
        assert page.locator("#timeline .entry[data-kind='dispatch'] .cost").count() == 0
        expect(page.locator("#tokens")).to_have_text("20 prompt + 10 completion")
        expect(page.locator("#cost")).to_have_text(f"{usd(total)} (estimated)")
        page.screenshot(path=str(shots / "session-costs.png"), full_page=True)

        until(lambda: (http.get(f"{base}/priced").json().get("status") or {}).get("usage", {})
              .get("costUsd"), 20, "the Session's status.usage.costUsd")  # fmt: skip
        status = http.get(f"{base}/priced").json()["status"]["usage"]
        assert status["costUsd"] == total
        page.goto(f"{daemon.url}/ui/#/sessions/{CELL}")
        page.wait_for_selector("main[data-ready='true']", timeout=10_000)
        row = page.locator("#session-list tr[data-session='priced']")
        expect(row.locator("td.cost")).to_have_text(usd(status["costUsd"]))
    finally:
        context.close()
        http.close()
    assert errors == []
