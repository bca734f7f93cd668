"""Race-free LLM budgets on a real apiaryd, embedded (SQLite) and on PostgreSQL (issue 15.2).

50 concurrent reservations — as 50 gateways on many nodes would send them — against a budget
that has room for 10 calls let exactly 10 through, per scope: the Cell's, the Hive's, the
session's, and a budget in USD priced by the Cell's own price table. Then settling what the calls
used shows per cell, hive and session the tokens and estimated cost."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.daemon_proc import Apiaryd, start
from services import fresh_postgres_url

Obj = dict[str, Any]
CALL = (10, 5)  # prompt, completion tokens of every call here


@pytest.fixture(params=["sqlite", "postgres"])
async def apiaryd(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Apiaryd]:
    if request.param == "sqlite":
        daemon = start(tmp_path)
        try:
            yield daemon
        finally:
            daemon.terminate()
        return
    async with fresh_postgres_url() as url:
        daemon = start(tmp_path, "--store", url)
        try:
            yield daemon
        finally:
            daemon.terminate()


def hive(cell: str, name: str, **spec: Any) -> Obj:
    return {"apiVersion": "apiary.io/v1", "kind": "Hive",
            "metadata": {"name": name, "namespace": cell},
            "spec": {"pattern": "pipeline", "stages": [{"name": "a", "agentRef": "x"}],
                     **spec}}  # fmt: skip


async def burst(http: httpx.AsyncClient, cell: str, asks: list[Obj]) -> list[Obj]:
    async def one(ask: Obj) -> Obj:
        r = await http.post(f"/api/v1/cells/{cell}/llmbudget/reserve", json=ask)
        assert r.status_code == 200, r.text
        return dict(r.json())

    return list(await asyncio.gather(*(one(a) for a in asks)))


def ask(hive_name: str, session: str, model: str = "fake-small") -> Obj:
    return {"hive": hive_name, "session": session, "model": model, "prompt": CALL[0],
            "completion": CALL[1], "minCompletion": 1}  # fmt: skip


async def test_50_concurrent_calls_against_a_budget_for_10_let_10_through_per_scope(
    apiaryd: Apiaryd,
) -> None:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=apiaryd.url, headers=apiaryd.headers, limits=limits,
                                 timeout=30) as http:  # fmt: skip
        run = uuid.uuid4().hex[:6]
        cells = {
            "cell": {"budget": {"tokens": 150}},
            "hive": {},
            "session": {},
            "usd": {
                "budget": {"usd": 0.15},
                "prices": {"fake-small": {"input": 1000, "output": 1000}},
            },
        }
        for scope, spec in cells.items():
            name = f"b{scope}-{run}"
            r = await http.post("/api/v1/cells", json={
                "apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": name},
                "spec": spec})  # fmt: skip
            assert r.status_code == 201, r.text
            budget = {
                "hive": {"budget": {"tokens": 150}},
                "session": {"budget": {"perSession": {"tokens": 150}}},
            }.get(scope, {})
            r = await http.post(f"/api/v1/cells/{name}/hives", json=hive(name, "h", **budget))
            assert r.status_code == 201, r.text
        # Cell: 50 calls of 50 sessions; Hive: idem; session: 50 calls of one session.
        plans = {
            "cell": [ask("h", f"s{i}") for i in range(50)],
            "hive": [ask("h", f"s{i}") for i in range(50)],
            "session": [ask("h", "s") for _ in range(50)],
            "usd": [ask("h", f"s{i}") for i in range(50)],  # 15 tokens at $0.001 = $0.015
        }
        granted: dict[str, list[Obj]] = {}
        for scope, asks in plans.items():
            answers = await burst(http, f"b{scope}-{run}", asks)
            granted[scope] = [a for a in answers if a.get("hold")]
            refused = [a for a in answers if a.get("refused")]
            assert len(granted[scope]) == 10, (scope, answers[:3])
            assert len(refused) == 40 and {a["completion"] for a in granted[scope]} == {5}
            assert {a["scope"] for a in refused} == {
                "cell": {"cell"}, "hive": {"hive/h"}, "session": {"session/s"},
                "usd": {"cell"}}[scope]  # fmt: skip
        (one,) = [a for a in answers if a.get("refused")][:1]
        assert one["refused"].startswith("cell has $0.000000 of its $0.15 left")
        # Another session of the session-bounded hive has a budget of its own.
        other = await burst(http, f"bsession-{run}", [ask("h", "t") for _ in range(12)])
        assert sum(1 for a in other if a.get("hold")) == 10
        # Settling what the calls used (less than held: 2 completion tokens of 5) frees the
        # rest: 30 tokens, room for two more calls, not three.
        cell = f"bhive-{run}"
        for a in granted["hive"]:
            r = await http.post(f"/api/v1/cells/{cell}/llmbudget/settle", json={
                "hold": a["hold"], "hive": "h", "session": "s", "model": "fake-small",
                "prompt": CALL[0], "completion": 2})  # fmt: skip
            assert r.status_code == 200, r.text
        again = await burst(http, cell, [ask("h", "s")] * 3)
        assert sorted(a.get("completion") or 0 for a in again) == [0, 5, 5]
        usage = (await http.get(f"/api/v1/cells/{cell}/llmbudget")).json()
        assert usage["cell"]["tokens"] == 120 and usage["hives"]["h"]["tokens"] == 120
        assert usage["sessions"]["s"]["tokens"] == 120
        assert usage["hives"]["h"]["heldTokens"] == 30
        # A call that asks for no limit gets the rest, capped: its max_tokens to send.
        (capped,) = await burst(http, cell, [{**ask("h", "s"), "completion": None}])
        assert capped["refused"].startswith("hive h has 0 of its 150 tokens left")
        # In USD: the Cell's own price table ($1000 per 1M in and out) prices what was settled.
        cell = f"busd-{run}"
        for a in granted["usd"][:2]:
            await http.post(f"/api/v1/cells/{cell}/llmbudget/settle", json={
                "hold": a["hold"], "hive": "h", "session": "s0", "model": "fake-small",
                "prompt": 10, "completion": 5})  # fmt: skip
        usage = (await http.get(f"/api/v1/cells/{cell}/llmbudget")).json()
        assert usage["cell"]["usd"] == pytest.approx(0.03)
        assert usage["sessions"]["s0"] == {"tokens": 30, "usd": pytest.approx(0.03),
                                           "heldTokens": 0, "heldUsd": 0}  # fmt: skip
        assert usage["cell"]["heldUsd"] == pytest.approx(8 * 0.015)  # 8 calls still hold
