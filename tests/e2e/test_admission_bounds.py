"""Issue 10's first list, against a real apiaryd process: the requests that took the control plane
down (a stage with 10^18 replicas, 20,000 stages, a billion-laughs YAML body, overflowing
parameters) are refused at once with a 4xx naming what is wrong, and ``/healthz`` keeps answering
while they are."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .cluster import Apiaryd, retire


def laughs(levels: int = 9, width: int = 9) -> str:
    row = ",".join(["x"] * width)
    lines = [f"a0: &a0 [{row}]"]
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apiaryd]:
    data: Path = tmp_path_factory.mktemp("bounds") / "data"
    running = Apiaryd(data, ["--no-local-node"]).start()
    yield running
    retire(running)


def client(server: Apiaryd) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.token}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def hive(name: str, stages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "Hive",
        "metadata": {"name": name},
        "spec": {"pattern": "pipeline", "stages": stages},
    }


def test_huge_replicas_and_huge_stage_counts_are_422(server: Apiaryd) -> None:
    with client(server) as c:
        hives = "/api/v1/cells/default/hives"
        r = c.post(hives, json=hive("huge", [{"name": "s", "agentRef": "a", "replicas": 10**18}]))
        assert r.status_code == 422, r.text
        assert r.json()["details"][0]["field"] == "spec.stages[0].replicas"
        assert "more than 1000" in r.json()["details"][0]["message"]
        stages = [{"name": f"s{i}", "agentRef": "a"} for i in range(20_000)]
        r = c.post(hives, json=hive("wide", stages))
        assert r.status_code == 422, r.text
        assert r.json()["details"][0]["field"] == "spec.stages"
        assert (c.post(hives, json=hive("h", [{"name": "s", "agentRef": "a"}]))).status_code == 201
        r = c.put(f"{hives}/h/scale", json={"replicas": 1_000_000_000})
        assert r.status_code == 422 and r.json()["details"][0]["field"] == "replicas"
        assert c.get("/healthz").status_code == 200


def test_overflowing_parameters_are_400(server: Apiaryd) -> None:
    with client(server) as c:
        hives = "/api/v1/cells/default/hives"
        for params, name in (
            ({"limit": "99999999999999999999999"}, "limit"),
            ({"watch": "true", "resourceVersion": "12345678901234567890123456"}, "resourceVersion"),
            ({"watch": "true", "resourceVersion": "abc"}, "resourceVersion"),
            ({"continue": "WyJkZWZhdWx0IiwiaCJd"}, "continue"),
        ):
            r = c.get(hives, params=params)
            assert r.status_code == 400, (params, r.text)
            assert r.json()["details"][0]["field"] == name
        r = c.get("/api/v1/cells/x' OR '1'='1/hives")
        assert r.status_code == 400 and r.json()["details"][0]["field"] == "cell"


async def test_the_alias_bomb_is_refused_fast_while_healthz_answers(server: Apiaryd) -> None:
    bomb = laughs()
    assert len(bomb) < 400
    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/yaml"}
    latencies: list[float] = []
    done = asyncio.Event()

    async def probe(c: httpx.AsyncClient) -> None:
        while not done.is_set():
            started = time.perf_counter()
            r = await c.get("/healthz")
            latencies.append(time.perf_counter() - started)
            assert r.status_code == 200

    async with (
        httpx.AsyncClient(base_url=server.url, timeout=30) as health,
        httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as api,
    ):
        await health.get("/healthz")  # connections open before anything is timed
        await api.get("/api/v1/cells/default/hives")
        prober = asyncio.create_task(probe(health))
        await asyncio.sleep(0.05)
        took = []
        for text in (bomb, laughs(levels=12, width=12)):
            for _ in range(3):
                started = time.perf_counter()
                r = await api.post("/api/v1/cells/default/hives", content=text)
                took.append(time.perf_counter() - started)
                assert r.status_code == 400, r.text
                assert "YAML body refused: aliases expand" in r.json()["message"]
        await asyncio.sleep(0.05)
        done.set()
        await prober
    assert max(took) < 0.1, took
    assert len(latencies) >= 5 and max(latencies) < 0.05, latencies
