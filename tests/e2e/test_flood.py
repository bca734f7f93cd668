"""A flood against a real apiaryd: 200 clients hammer creates for 30 s while a node heartbeats.

Overload protection (apiary.api.fairness, docs/api.md "Overload") must keep the node's lease
renewed on time — its requests have a lane of their own — answer the excess with 429, never 5xx,
and hold apiaryd's memory flat: what is over a bound is refused at once, never queued.

* The flood: 200 coroutines in this process, each with its own ``httpx.AsyncClient`` (its own
  connection), on two developer tokens of one cell: 150 on a *greedy* one (more than the 64 one
  principal may have in flight) and 50 on a *polite* one (fewer), which must never see a 429:
  the bound is per principal. Each loops as fast as it is answered: create an AgentSpec, delete
  it once created (the store stays small, so the memory measured is the server's, not the
  data's); a 429 is retried at once, Retry-After ignored — a hostile client, the worst case.
* The node: a separate process running the node agent's own ``NodeAgent.register`` and
  ``heartbeat`` (GET the Node, PUT its status with the renewed lease) with a node token, every
  second as ``apiaryd node --heartbeat-seconds 1`` does, lease 10 s; it times each heartbeat.
* apiaryd's RSS is sampled every 0.25 s: the last third against the first (10 s each in 30 s).

``APIARY_FLOOD_SECONDS`` shortens the flood locally (CI runs the full 30 s). The figures are
printed (``pytest -s``) and written to ``<tmp>/flood.json``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from .cluster import Apiaryd, agentspec

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("APIARY_FLOOD_SECONDS", "30"))
CLIENTS = 200
GREEDY = 150
"""Clients on the greedy token; the other CLIENTS - GREEDY are on the polite one."""
LEASE = 10.0
HEARTBEAT = 1.0
RSS_GROWTH = 30 << 20

PROBE = r"""
import asyncio, json, sys, time
from apiary.client import AsyncApiClient
from apiary.node.agent import NodeAgent, NodeSettings

async def main(url, name, state, seconds, interval, lease):
    token = sys.stdin.readline().strip()
    client = AsyncApiClient(url, token)
    settings = NodeSettings(name=name, state_dir=state, heartbeat_seconds=interval,
                            lease_seconds=lease, cpu_millicores=1000, memory_bytes=1 << 30)
    agent = NodeAgent(client, settings)
    await agent.register()
    print(json.dumps({"registered": True}), flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        error = None
        try:
            await agent.heartbeat()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"at": started, "latency": time.monotonic() - started,
                          "error": error}), flush=True)
        await asyncio.sleep(interval)
    await client.aclose()

url, name, state, seconds, interval, lease = sys.argv[1:]
asyncio.run(main(url, name, state, float(seconds), float(interval), float(lease)))
"""


@dataclass
class Tally:
    created: int = 0
    deleted: int = 0
    refused: int = 0
    other: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)

    def answer(self, r: httpx.Response, wanted: int) -> bool:
        if r.status_code == wanted:
            return True
        if r.status_code == 429:
            self.refused += 1
            assert r.headers.get("retry-after") == "1", r.headers
            body = r.json()
            assert body["code"] == 429 and body["reason"] == "TooManyRequests", body
            assert body["details"][0]["field"] in ("inflight_per_principal", "inflight_total")
        elif r.status_code >= 500:
            self.server_errors.append(f"{r.status_code} {r.text[:200]}")
        else:
            self.other[r.status_code] = self.other.get(r.status_code, 0) + 1
        return False


def _post(server: Apiaryd, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(
        server.url + path, json=body, headers={"Authorization": f"Bearer {server.token}"}
    )
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _token(server: Apiaryd, name: str, **spec: str) -> str:
    made = _post(server, "/api/v1/tokens", {"metadata": {"name": name}, "spec": spec})
    token: str = made["status"]["token"]
    return token


def _client(url: str, token: str) -> httpx.AsyncClient:
    """One connection; plain HTTP, so no TLS context (loading the CA bundle costs 40 ms each)."""
    return httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=30,
        verify=False,
    )


async def _hammer(c: httpx.AsyncClient, cell: str, i: int, stop: float, tally: Tally) -> None:
    path = f"/api/v1/cells/{cell}/agentspecs"
    async with c:
        n = 0
        while time.monotonic() < stop:
            name = f"f{i}-{n}"
            try:
                r = await c.post(path, json=agentspec(cell, name))
                if not tally.answer(r, 201):
                    continue
                tally.created += 1
                n += 1
                while time.monotonic() < stop + 5:  # clean up even just past the end
                    r = await c.delete(f"{path}/{name}")
                    if tally.answer(r, 200):
                        tally.deleted += 1
                        break
            except httpx.HTTPError as exc:
                tally.transport_errors.append(f"{type(exc).__name__}: {exc}")


async def _sample_rss(pid: int, stop: float, out: list[tuple[float, int]]) -> None:
    proc = psutil.Process(pid)
    while time.monotonic() < stop:
        out.append((time.monotonic(), proc.memory_info().rss))
        await asyncio.sleep(0.25)


async def _flood(
    url: str, tokens: dict[str, str], cell: str, pid: int, tallies: dict[str, Tally]
) -> tuple[float, float, list[tuple[float, int]]]:
    """Run the clients until the flood's end; (its start, its end, the RSS samples)."""
    who = ["greedy" if i < GREEDY else "polite" for i in range(CLIENTS)]
    clients = [_client(url, tokens[w]) for w in who]
    rss: list[tuple[float, int]] = []
    start = time.monotonic()
    stop = start + SECONDS
    flood = [_hammer(c, cell, i, stop, tallies[who[i]]) for i, c in enumerate(clients)]
    await asyncio.gather(_sample_rss(pid, stop, rss), *flood)
    return start, stop, rss


def test_a_flood_of_creates_neither_starves_heartbeats_nor_5xx_nor_grows_memory(
    embedded: Apiaryd, tmp_path: Path
) -> None:
    server = embedded
    assert server.proc is not None
    cell = "flood"
    _post(server, "/api/v1/cells", {"apiVersion": "apiary.io/v1", "kind": "Cell",
                                    "metadata": {"name": cell}, "spec": {}})  # fmt: skip
    tokens = {w: _token(server, w, role="developer", cell=cell) for w in ("greedy", "polite")}
    node_token = _token(server, "flood-node", role="node", node="flood-node")

    probe_log = tmp_path / "probe.log"
    with probe_log.open("wb") as log_out:
        probe = subprocess.Popen(
            [sys.executable, "-c", PROBE, server.url, "flood-node", str(tmp_path / "node"),
             str(SECONDS + 2), str(HEARTBEAT), str(LEASE)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_out, text=True,
        )  # fmt: skip
    assert probe.stdin is not None and probe.stdout is not None
    probe.stdin.write(node_token + "\n")
    probe.stdin.close()
    first = probe.stdout.readline()
    assert first and json.loads(first) == {"registered": True}, probe_log.read_text()

    tallies = {"greedy": Tally(), "polite": Tally()}
    cpu = psutil.Process(server.proc.pid).cpu_times(), psutil.Process().cpu_times()
    start, stop, rss = asyncio.run(_flood(server.url, tokens, cell, server.proc.pid, tallies))
    greedy, polite = tallies["greedy"], tallies["polite"]
    tally = Tally(
        greedy.created + polite.created,
        greedy.deleted + polite.deleted,
        greedy.refused + polite.refused,
        {
            k: greedy.other.get(k, 0) + polite.other.get(k, 0)
            for k in {*greedy.other, *polite.other}
        },
        greedy.server_errors + polite.server_errors,
        greedy.transport_errors + polite.transport_errors,
    )
    cpu_after = psutil.Process(server.proc.pid).cpu_times(), psutil.Process().cpu_times()
    out = probe.stdout.read()
    probe.wait(30)
    beats = [json.loads(line) for line in out.splitlines() if line.strip()]

    latencies = [b["latency"] for b in beats]
    during = [b for b in beats if b["at"] < stop]
    gaps = [b2["at"] + b2["latency"] - b1["at"] for b1, b2 in itertools.pairwise(beats)]
    third = SECONDS / 3
    early = [v for t, v in rss if t < start + third]
    late = [v for t, v in rss if t >= stop - third]
    figures = {
        "seconds": SECONDS,
        "clients": CLIENTS,
        "clients_greedy_polite": [GREEDY, CLIENTS - GREEDY],
        "created_greedy_polite": [greedy.created, polite.created],
        "deleted": tally.deleted,
        "refused_429_greedy_polite": [greedy.refused, polite.refused],
        "server_errors_5xx": len(tally.server_errors),
        "other_statuses": tally.other,
        "transport_errors": len(tally.transport_errors),
        "heartbeats": len(beats),
        "heartbeats_during_flood": len(during),
        "heartbeat_latency_max_s": round(max(latencies), 3),
        "heartbeat_latency_p50_s": round(sorted(latencies)[len(latencies) // 2], 3),
        "heartbeat_renewal_gap_max_s": round(max(gaps), 3),
        "heartbeat_errors": [b["error"] for b in beats if b["error"]],
        "cpu_s_apiaryd": round(sum(cpu_after[0][:2]) - sum(cpu[0][:2]), 1),
        "cpu_s_clients": round(sum(cpu_after[1][:2]) - sum(cpu[1][:2]), 1),
        "rss_first_third_max_mb": round(max(early) / 2**20, 1),
        "rss_last_third_max_mb": round(max(late) / 2**20, 1),
    }
    (tmp_path / "flood.json").write_text(json.dumps(figures, indent=2))
    print("\nflood:", json.dumps(figures))

    assert not tally.server_errors, tally.server_errors[:5]
    assert not tally.transport_errors, tally.transport_errors[:5]
    assert not tally.other, tally.other
    assert tally.created > CLIENTS and greedy.refused > 0, figures  # it was a flood, and bounded
    assert polite.refused == 0 and polite.created > CLIENTS - GREEDY, figures  # fair to others
    assert probe.returncode == 0, probe_log.read_text()[-2000:]
    assert len(during) >= SECONDS / HEARTBEAT * 0.5, figures  # the node kept its pace
    assert not figures["heartbeat_errors"], figures
    assert max(latencies) < LEASE and max(gaps) < LEASE, figures  # no heartbeat late past lease
    assert max(late) - max(early) < RSS_GROWTH, figures

    node = httpx.get(
        f"{server.url}/api/v1/nodes/flood-node",
        headers={"Authorization": f"Bearer {server.token}"},
    ).json()
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True", node["status"]
    log = server.log.read_text(errors="replace")
    assert "unhandled error" not in log, log[-3000:]
