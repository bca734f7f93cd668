"""Session creation latency against a real ``apiaryd`` (DESIGN §8: < 10 ms p95).

One ``apiaryd`` per store (SQLite in a temp dir; PostgreSQL in a fresh database) runs a pipeline
Hive of one stage backed by a real agent process (a shell echo loop, seed 01's shape). The load
generator — this process, httpx on one keep-alive connection per client — POSTs Sessions to
``/api/v1/cells/bench/sessions``:

* ``bare``   ``{"spec": {"hiveRef": "echo"}}``: the object is admitted, quota-checked and stored;
* ``input``  the same with ``spec.input``: also checks the hive and sends the first message (journal
  write + bus publish) before answering 201 — the agent answers it afterwards.

Each case is closed loop (clients send back to back: saturation, latency = clients ÷ throughput)
or paced (each client every 1/rate s from a random phase, latency counted from when a request was
due, so a server that falls behind is charged for the queue). Every request must answer 201.
Prints a table and writes ``bench/results/session_create.json``.

    .venv/bin/python bench/session_create.py [--stores sqlite,postgresql] [--seconds 3]
                                             [--cases 1:0,50:0,50:2] [--out F]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RESULTS,
    Apiaryd,
    fresh_postgres_database,
    latency_summary,
    machine_busy_cpu,
    machine_info,
    postgres_base_url,
    start_apiaryd,
    temp_dir,
    write_result,
)

CELL = "bench"
VARIANTS = ("bare", "input")


def seed(server: Apiaryd) -> None:
    """The cell, an echo AgentSpec and a one-stage Hive; wait until its drone is Running."""
    headers = {"Authorization": f"Bearer {server.token}"}
    agent = {
        "kind": "AgentSpec",
        "metadata": {"name": "echo"},
        "spec": {
            "runtime": {
                "command": ["/bin/sh", "-c", 'while IFS= read -r l; do echo "Echo: $l"; done']
            },
            "interface": {"type": "stdin", "format": "text"},
        },
    }
    hive = {
        "kind": "Hive",
        "metadata": {"name": "echo"},
        "spec": {"pattern": "pipeline", "stages": [{"name": "echo", "agentRef": "echo"}]},
    }
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        c.post(
            "/api/v1/cells", json={"kind": "Cell", "metadata": {"name": CELL}}
        ).raise_for_status()
        c.post(f"/api/v1/cells/{CELL}/agentspecs", json=agent).raise_for_status()
        c.post(f"/api/v1/cells/{CELL}/hives", json=hive).raise_for_status()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            drones = c.get(f"/api/v1/cells/{CELL}/drones").json()["items"]
            if any((d.get("status") or {}).get("phase") == "Running" for d in drones):
                return
            time.sleep(0.1)
    raise RuntimeError("the echo hive's drone did not start within 30 s")


def body(variant: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"hiveRef": "echo"}
    if variant == "input":
        spec["input"] = "hello"
    return {"kind": "Session", "metadata": {"generateName": "s-"}, "spec": spec}


async def run_case(
    server: Apiaryd, variant: str, clients: int, rate: float, warmup: float, seconds: float
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.token}"}
    url = f"/api/v1/cells/{CELL}/sessions"
    payload = body(variant)
    latencies: list[float] = []
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    # Clients are built before the clock starts: an httpx client loads an SSL context (~15 ms
    # of CPU), and 50 of them at once would be charged to the server's first requests.
    pool = [
        httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) for _ in range(clients)
    ]
    start = loop.time() + 0.2
    measure_from, end = start + warmup, start + warmup + seconds

    async def client(c: httpx.AsyncClient) -> None:
        async with c:
            due = start + (random.random() / rate if rate else 0.0)
            await asyncio.sleep(max(0.0, due - loop.time()))
            while True:
                now = loop.time()
                if now >= end:
                    return
                sent_at = due if rate else now
                r = await c.post(url, json=payload)
                done = loop.time()
                if r.status_code != 201:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                elif sent_at >= measure_from:
                    latencies.append(done - sent_at)
                if rate:
                    due += 1 / rate
                    await asyncio.sleep(max(0.0, due - loop.time()))

    proc = psutil.Process(server.pid)
    cpu0 = sum(proc.cpu_times()[:2])
    busy0 = machine_busy_cpu()
    t0 = time.monotonic()
    await asyncio.gather(*(client(c) for c in pool))
    wall = time.monotonic() - t0
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    busy = machine_busy_cpu() - busy0
    total = len(latencies)
    summary = latency_summary(latencies, seconds)
    requests = max(total * (warmup + seconds) / seconds, 1)
    return {
        "variant": variant,
        "clients": clients,
        "rate_per_client": rate,
        **summary,
        "server_cpu": round(cpu / wall, 3),
        "server_ms_cpu_per_op": round(cpu * 1000 / requests, 3),
        "machine_busy_cores": round(busy / wall, 2),
        "errors": len(errors),
        "error_samples": errors[:5],
    }


def print_row(store: str, row: dict[str, Any]) -> None:
    rate = "max" if not row["rate_per_client"] else f"{row['rate_per_client']:g}/s"
    ok = "PASS" if row["p95_ms"] < 10 else "FAIL"
    print(
        f"{store:<11} {row['variant']:<6} {row['clients']:>3} {rate:>5} {row['ops_per_s']:>8.0f}"
        f" {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} {row['p99_ms']:>8.2f}"
        f" {row['server_ms_cpu_per_op']:>6.2f} {row['machine_busy_cores']:>5.2f}"
        f" {row['errors']:>4}  {ok}",
        flush=True,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--stores", default="sqlite,postgresql")
    p.add_argument("--cases", default="1:0,50:0,50:2", help="clients:rate (0 = closed loop)")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--out", type=Path, default=RESULTS / "session_create.json")
    a = p.parse_args()
    cases = [(int(c), float(r)) for c, r in (x.split(":") for x in a.cases.split(","))]
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    print(
        "store       what   cl  rate    ops/s      p50      p95      p99  ms/op  busy  err"
        "  p95<10ms"
    )
    for store in a.stores.split(","):
        with temp_dir("apiary-session-bench-") as data:
            if store == "postgresql":
                try:
                    ctx = fresh_postgres_database(postgres_base_url())
                    url = ctx.__enter__()
                except Exception as exc:  # unreachable: say so, measure the rest
                    skipped.append(f"postgresql: {exc}")
                    continue
            else:
                ctx, url = None, None
            server = start_apiaryd(data, store_url=url)
            try:
                seed(server)
                for variant in VARIANTS:
                    for clients, rate in cases:
                        row = asyncio.run(
                            run_case(server, variant, clients, rate, a.warmup, a.seconds)
                        )
                        row["store"] = store
                        rows.append(row)
                        print_row(store, row)
            finally:
                server.stop()
                if ctx is not None:
                    ctx.__exit__(None, None, None)
    errors = sum(r["errors"] for r in rows)
    out = write_result(
        "session_create",
        {
            "machine": machine_info(),
            "settings": vars(a) | {"out": str(a.out)},
            "target": "p95 < 10 ms",
            "skipped": skipped,
            "errors": errors,
            "results": rows,
            "pid": os.getpid(),
        },
        a.out,
    )
    print(f"# wrote {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
