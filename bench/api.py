"""API CRUD latency against a real ``apiaryd`` (DESIGN §8: p95 < 10 ms at 50 concurrent clients).

For each store (embedded SQLite, PostgreSQL) one ``apiaryd`` subprocess is started; for each
concurrency level the load generator — a SEPARATE process (or two, when one would be the
bottleneck) running httpx.AsyncClient with keep-alive, one client and connection per task, closed
loop — measures four operations one after the other, each after a warm-up:

* ``create``  POST an AgentSpec (seed 03's shape) under a fresh name;
* ``get``     GET one of the 100 AgentSpecs of the list cell;
* ``list``    GET the list cell's AgentSpecs with ``limit=50`` (100 exist: a page + continue);
* ``update``  PUT the client's own AgentSpec (full object, a label changed) with the
  ``resourceVersion`` it last saw. A label, not the spec: a spec change makes the server's
  reference resolver write ``status.conditions[].observedGeneration`` moments later, which bumps
  the resourceVersion, so a client re-using the version from its own PUT would race it (409).

Every request must succeed: any error is counted and fails the run (exit 1). The load generator
and ``apiaryd`` share this machine's cores; both CPU uses are reported so a reader can tell who
was the bottleneck. Prints a table and writes ``bench/results/api.json``.

    .venv/bin/python bench/api.py [--quick] [--stores sqlite,postgresql] [--clients 1,50]
                                  [--seconds N] [--warmup N] [--client-procs auto|1|2] [--out F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RESULTS,
    Apiaryd,
    cpu_delta,
    fresh_postgres_database,
    latency_summary,
    machine_busy_cpu,
    machine_info,
    postgres_base_url,
    postgres_cpu,
    start_apiaryd,
    temp_dir,
    write_result,
)

OPS = ("create", "get", "list", "update")
STORES = ("sqlite", "postgresql")
TARGET_P95_MS = 10.0
TARGET_CLIENTS = 50
LIST_CELL, CREATE_CELL, UPDATE_CELL = "bench-list", "bench-create", "bench-update"
LIST_SIZE, PAGE = 100, 50
CLIENT_BOUND = 0.85  # a load-generator process above this share of one core is the bottleneck
SHARED_CORES_NOTE = (
    "the load generator runs in separate processes on the same machine as apiaryd, sharing its "
    "{cores} cores (and PostgreSQL's, for that store): figures include that contention"
)


def agentspec(name: str) -> dict[str, Any]:
    """An AgentSpec shaped like seed 03 (labels, env, resources, scaling, guardrails).

    ``minReplicas: 0``: this benchmark measures the API, so its thousands of objects must not each
    start an agent process (the controllers would); ``bench/drone_start.py`` measures that.
    """
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "AgentSpec",
        "metadata": {"name": name, "labels": {"app": "echo", "tier": "simple"}},
        "spec": {
            "runtime": {
                "command": ["/bin/sh", "-c", 'while IFS= read -r l; do echo "Echo: $l"; done'],
                "env": [{"name": "ENV_VAR", "value": "example"}],
            },
            "interface": {"type": "stdin"},
            "resources": {
                "requests": {"cpu": 100, "memory": 128000000},
                "limits": {"cpu": 500, "memory": 256000000},
            },
            "taskTier": "simple",
            "scaling": {"minReplicas": 0, "maxReplicas": 10, "targetLatencyMs": 100},
            "guardrails": {"responseTimeoutSeconds": 30, "rateLimitPerMinute": 60},
        },
    }


# ------------------------------------------------------------------ load generator (worker)


@dataclass
class WorkerJob:
    url: str
    token: str
    op: str
    clients: int
    warmup: float
    seconds: float
    rate: float  # requests/s per client; 0 = closed loop (as fast as answers come)
    tag: str  # unique per worker process, so created names never collide


def _labels(obj: dict[str, Any]) -> dict[str, Any]:
    """An object's labels but the one the update benchmark keeps changing."""
    labels = obj["metadata"].get("labels") or {}
    return {k: v for k, v in labels.items() if k != "bench/round"}


class Load:
    """One worker process's closed-loop clients for one operation."""

    def __init__(self, job: WorkerJob) -> None:
        self.job = job
        self.clients: list[httpx.AsyncClient] = []
        self.own: list[dict[str, Any]] = []  # update: each client's object as last seen
        self.counter = 0
        self.errors = 0
        self.conflicts = 0
        self.samples: list[str] = []

    async def open(self) -> None:
        headers = {"Authorization": f"Bearer {self.job.token}", "Content-Type": "application/json"}
        for _ in range(self.job.clients):
            self.clients.append(
                httpx.AsyncClient(
                    base_url=self.job.url,
                    headers=headers,
                    timeout=60.0,
                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                )
            )
        if self.job.op == "update":  # each client updates its own object: no 409 by design
            for k, client in enumerate(self.clients):
                body = orjson.dumps(agentspec(f"u-{self.job.tag}-{k}"))
                r = await client.post(f"/api/v1/cells/{UPDATE_CELL}/agentspecs", content=body)
                if r.status_code != 201:
                    raise RuntimeError(f"update setup: POST → {r.status_code} {r.text[:300]}")
            self.own = list(
                await asyncio.gather(*(self._settled(c, k) for k, c in enumerate(self.clients)))
            )
        else:  # open each keep-alive connection outside the measured window
            await asyncio.gather(*(c.get("/api/v1/whoami") for c in self.clients))

    async def _settled(self, client: httpx.AsyncClient, k: int) -> dict[str, Any]:
        """The object once the controllers have written its status and left it alone.

        The reference resolver and the Queen each write ``status`` shortly after a create; such a
        write landing between two of our PUTs would make the version we hold stale (409). So
        wait until the status has conditions and the resourceVersion stayed put for 0.3 s.
        """
        url = f"/api/v1/cells/{UPDATE_CELL}/agentspecs/u-{self.job.tag}-{k}"
        deadline = time.monotonic() + 30
        seen, since = "", time.monotonic()
        while time.monotonic() < deadline:
            r = await client.get(url)
            r.raise_for_status()
            obj: dict[str, Any] = orjson.loads(r.content)
            rv = obj["metadata"]["resourceVersion"]
            if rv != seen:
                seen, since = rv, time.monotonic()
            elif (obj.get("status") or {}).get("conditions") and time.monotonic() - since > 0.3:
                return obj
            await asyncio.sleep(0.05)
        raise RuntimeError(f"update setup: {url} did not settle within 30 s")

    async def close(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients))

    def _fail(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(what[:300])

    async def one(self, k: int, client: httpx.AsyncClient) -> bool:
        self.counter += 1
        i = self.counter
        op = self.job.op
        if op == "create":
            body = orjson.dumps(agentspec(f"c-{self.job.tag}-{k}-{i}"))
            r = await client.post(f"/api/v1/cells/{CREATE_CELL}/agentspecs", content=body)
            want = 201
        elif op == "get":
            r = await client.get(f"/api/v1/cells/{LIST_CELL}/agentspecs/spec-{i % LIST_SIZE:03d}")
            want = 200
        elif op == "list":
            r = await client.get(f"/api/v1/cells/{LIST_CELL}/agentspecs", params={"limit": PAGE})
            want = 200
        else:
            obj = self.own[k]
            obj["metadata"]["labels"]["bench/round"] = str(i)
            url = f"/api/v1/cells/{UPDATE_CELL}/agentspecs/{obj['metadata']['name']}"
            r = await client.put(url, content=orjson.dumps(obj))
            want = 200
            if r.status_code == want:
                self.own[k] = orjson.loads(r.content)
            elif r.status_code == 409:
                return await self._conflict(k, client, url)
        if r.status_code != want:
            self._fail(f"{op}: HTTP {r.status_code} {r.text}")
            return False
        return True

    async def _conflict(self, k: int, client: httpx.AsyncClient, url: str) -> bool:
        """A 409 on our own object: fine only if a controller wrote just its ``status``.

        The controllers write status whenever they get to an object — under this load that can
        be seconds after it was created — and that bumps the resourceVersion, so a 409 is the
        API working as specified. Anything else that changed (spec, labels) would be a server
        bug: that is an error. Either way re-read, and do not count the attempt's latency.
        """
        r = await client.get(url)
        if r.status_code != 200:
            self._fail(f"update: re-read after 409 → HTTP {r.status_code} {r.text}")
            return False
        fresh: dict[str, Any] = orjson.loads(r.content)
        mine = self.own[k]
        if fresh.get("spec") != mine.get("spec") or _labels(fresh) != _labels(mine):
            self._fail(f"update: 409 and {url} changed beyond its status: {r.text}")
            return False
        self.conflicts += 1
        self.own[k] = fresh
        return False

    async def phase(self, seconds: float, record: list[float] | None) -> None:
        """Every client loops (send, wait for the answer, repeat) until the deadline.

        Closed loop (``rate`` 0): the next request goes as soon as the answer is in — this finds
        the saturation point, where latency is simply clients / throughput. Paced (``rate`` > 0
        per client): requests are due every 1/rate s from a random phase, and latency counts from
        when a request was DUE, so a server that falls behind is charged for the queueing too
        (no coordinated omission).
        """
        clock = time.perf_counter
        deadline = clock() + seconds
        interval = 1.0 / self.job.rate if self.job.rate > 0 else 0.0

        async def loop(k: int, client: httpx.AsyncClient) -> None:
            due = clock() + random.random() * interval
            while clock() < deadline:
                if interval:
                    if (wait := due - clock()) > 0:
                        await asyncio.sleep(wait)
                    if clock() >= deadline:
                        break
                    t0, due = due, due + interval
                else:
                    t0 = clock()
                try:
                    ok = await self.one(k, client)
                except httpx.HTTPError as exc:
                    self._fail(f"{self.job.op}: {type(exc).__name__}: {exc}")
                    ok = False
                if ok and record is not None:
                    record.append(clock() - t0)

        await asyncio.gather(*(loop(k, c) for k, c in enumerate(self.clients)))


async def worker_main(job: WorkerJob) -> dict[str, Any]:
    """Set up, say READY, wait for GO (so several processes start together), warm up, measure."""
    load = Load(job)
    try:
        await load.open()
        print("READY", flush=True)
        if (await asyncio.to_thread(sys.stdin.readline)).strip() != "GO":
            raise RuntimeError("the orchestrator went away before GO")
        await load.phase(job.warmup, None)
        warm_errors = load.errors
        latencies: list[float] = []
        cpu0, t0 = time.process_time(), time.perf_counter()
        await load.phase(job.seconds, latencies)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await load.close()
    return {
        "latencies": latencies,
        "wall_s": wall,
        "cpu_s": cpu,
        "errors": load.errors,
        "conflicts": load.conflicts,
        "sent": load.counter,  # warm-up + measured requests: the server-CPU window's work
        "warmup_errors": warm_errors,
        "error_samples": load.samples,
    }


def run_worker(raw: str) -> None:
    job = WorkerJob(**json.loads(raw))
    try:
        import uvloop  # the client is cheaper on uvloop: less of the shared CPU goes to it

        result = uvloop.run(worker_main(job))
    except ImportError:
        result = asyncio.run(worker_main(job))
    sys.stdout.write(json.dumps(result) + "\n")


# ------------------------------------------------------------------------------ orchestrator


def _spawn_workers(case: Case, procs: int, s: Settings) -> list[Any]:
    clients = case.clients
    share = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = []
    for i, n in enumerate(share):
        job = WorkerJob(
            case.server.url,
            case.server.token,
            case.op,
            n,
            s.warmup,
            s.seconds,
            case.rate,
            f"{s.run_id}{i}",
        )
        s.run_id += 1
        workers.append(
            subprocess.Popen(
                [sys.executable, __file__, "--worker", json.dumps(asdict(job))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    return workers


@dataclass
class Case:
    server: Apiaryd
    op: str
    clients: int
    rate: float


def measure(case: Case, procs: int, s: Settings) -> dict[str, Any]:
    """One (op, clients, rate) window with ``procs`` load-generator processes; figures merged."""
    server, op = case.server, case.op
    pg = postgres_cpu if server.store_url else dict
    workers = _spawn_workers(case, procs, s)
    try:
        for w in workers:
            assert w.stdout is not None
            line = w.stdout.readline().strip()
            if line != "READY":
                raise RuntimeError(f"load generator for {op} failed during setup (said {line!r})")
        srv = psutil.Process(server.pid)
        c0, m0, p0, t0 = srv.cpu_times(), machine_busy_cpu(), pg(), time.perf_counter()
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("GO\n")
            w.stdin.flush()
        outs = []
        for w in workers:
            out, _ = w.communicate(timeout=s.warmup + s.seconds + 120)
            if w.returncode != 0:
                raise RuntimeError(f"load generator for {op} exited with {w.returncode}")
            outs.append(json.loads(out.strip().splitlines()[-1]))
        c1, m1, p1, wall = srv.cpu_times(), machine_busy_cpu(), pg(), time.perf_counter() - t0
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    latencies = [x for o in outs for x in o["latencies"]]
    seconds = max(o["wall_s"] for o in outs)
    row = latency_summary(latencies, seconds)
    row["ops_per_s"] = round(sum(len(o["latencies"]) / o["wall_s"] for o in outs), 1)
    server_cpu = (c1.user + c1.system) - (c0.user + c0.system)
    sent = sum(o["sent"] for o in outs)
    client_cpu = sum(o["cpu_s"] / o["wall_s"] for o in outs)
    machine = (m1 - m0) / wall
    postgres = cpu_delta(p0, p1) / wall
    row.update(
        {
            "client_procs": procs,
            "client_cpu_per_proc": [round(o["cpu_s"] / o["wall_s"], 3) for o in outs],
            "server_cpu": round(server_cpu / wall, 3),
            # CPU per request barely depends on what else runs on the machine: the figure to
            # optimise (1000 / it = requests/s one core could serve).
            "server_cpu_ms_per_op": round(server_cpu * 1000 / max(1, sent), 3),
            "postgres_cpu": round(postgres, 3),
            "machine_cpu": round(machine, 3),
            "others_cpu": round(max(0.0, machine - server_cpu / wall - client_cpu - postgres), 3),
            "errors": sum(o["errors"] for o in outs),
            "conflicts_from_status_writes": sum(o["conflicts"] for o in outs),
            "error_samples": [e for o in outs for e in o["error_samples"]][:5],
        }
    )
    return row


def run_case(case: Case, s: Settings) -> dict[str, Any]:
    """Measure with one client process; if it was CPU-bound, measure again with two."""
    procs = 1 if s.client_procs == "auto" else int(s.client_procs)
    row = measure(case, procs, s)
    bound = max(row["client_cpu_per_proc"]) > CLIENT_BOUND
    if s.client_procs == "auto" and case.clients > 1 and bound:
        first = row
        row = measure(case, 2, s)
        row["rerun_because_client_bound"] = {
            "client_cpu": first["client_cpu_per_proc"],
            "p95_ms": first["p95_ms"],
            "ops_per_s": first["ops_per_s"],
        }
    row["target_p95_ms"] = TARGET_P95_MS
    row["meets_target"] = row["requests"] > 0 and row["p95_ms"] < TARGET_P95_MS
    return row


def seed(server: Apiaryd) -> None:
    """Three cells; the list cell gets 100 AgentSpecs; check a page really is 50 + continue."""
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        for cell in (LIST_CELL, CREATE_CELL, UPDATE_CELL):
            body = {"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": cell}}
            c.post("/api/v1/cells", json=body).raise_for_status()
        for n in range(LIST_SIZE):
            url = f"/api/v1/cells/{LIST_CELL}/agentspecs"
            c.post(url, json=agentspec(f"spec-{n:03d}")).raise_for_status()
        page = c.get(f"/api/v1/cells/{LIST_CELL}/agentspecs", params={"limit": PAGE}).json()
        if len(page["items"]) != PAGE or not page["metadata"].get("continue"):
            raise RuntimeError(f"list page is not {PAGE} items + continue: {page['metadata']}")


@dataclass
class Settings:
    stores: list[str]
    clients: list[int]
    rates: list[float]
    seconds: float
    warmup: float
    client_procs: str
    out: Path
    run_id: int = 0


def bench_store(store: str, s: Settings) -> list[dict[str, Any]]:
    with temp_dir(f"apiary-bench-{store}-") as data_dir:
        if store == "sqlite":
            return _bench_server(store, data_dir, None, s)
        with fresh_postgres_database() as url:
            return _bench_server(store, data_dir, url, s)


def _bench_server(store: str, data_dir: Path, url: str | None, s: Settings) -> list[dict[str, Any]]:
    server = start_apiaryd(data_dir, store_url=url)
    print(f"# {store}: apiaryd pid {server.pid} at {server.url}", file=sys.stderr, flush=True)
    rows: list[dict[str, Any]] = []
    try:
        seed(server)
        for clients in s.clients:
            for rate in s.rates:
                if rate > 0 and clients == 1:
                    continue  # one paced client is just the unloaded latency again
                for op in OPS:
                    row: dict[str, Any] = {
                        "store": store,
                        "clients": clients,
                        "rate_per_client": rate,
                        "op": op,
                    }
                    row.update(run_case(Case(server, op, clients, rate), s))
                    print(format_row(row), flush=True)
                    rows.append(row)
        if server.proc.poll() is not None:
            raise RuntimeError(f"apiaryd died during the run:\n{server.log_tail()}")
    finally:
        code = server.stop()
    if code != 0:
        print(f"# warning: apiaryd exited with {code}:\n{server.log_tail()}", file=sys.stderr)
    return rows


HEADER = (
    f"{'store':<10} {'cl':>3} {'rate':>5} {'op':<6} {'procs':>5} {'reqs':>7} {'ops/s':>8} "
    f"{'p50':>7} {'p95':>7} {'p99':>7} {'mean':>7} {'cli cpu':>8} {'srv cpu':>7} "
    f"{'ms/op':>5} {'pg':>5} {'others':>6} {'err':>4}  p95<10ms"
)


def format_row(r: dict[str, Any]) -> str:
    cli = "+".join(f"{c:.0%}" for c in r["client_cpu_per_proc"])
    rate = f"{r['rate_per_client']:g}/s" if r["rate_per_client"] else "max"
    return (
        f"{r['store']:<10} {r['clients']:>3} {rate:>5} {r['op']:<6} {r['client_procs']:>5} "
        f"{r['requests']:>7} {r['ops_per_s']:>8.0f} {r['p50_ms']:>7.2f} {r['p95_ms']:>7.2f} "
        f"{r['p99_ms']:>7.2f} {r['mean_ms']:>7.2f} {cli:>8} {r['server_cpu']:>7.0%} "
        f"{r['server_cpu_ms_per_op']:>5.2f} {r['postgres_cpu']:>5.0%} {r['others_cpu']:>6.0%} "
        f"{r['errors']:>4}  {'PASS' if r['meets_target'] else 'FAIL'}"
    )


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 s windows, 0.2 s warm-up")
    p.add_argument("--stores", default=",".join(STORES), help="comma list of sqlite,postgresql")
    p.add_argument("--clients", default="1,50", help="comma list of concurrency levels")
    p.add_argument("--seconds", type=float, help="measured seconds per case (default 5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per case (default 1)")
    p.add_argument(
        "--rates",
        default="0,2",
        help="per-client request rates, comma list; 0 = closed loop (saturation); "
        "rates > 0 run only at concurrency > 1 (default 0,2)",
    )
    p.add_argument("--client-procs", default="auto", choices=("auto", "1", "2"))
    p.add_argument("--out", type=Path, default=RESULTS / "api.json", help="result JSON path")
    a = p.parse_args(argv)
    stores = [x.strip() for x in a.stores.split(",") if x.strip()]
    bad = [x for x in stores if x not in STORES]
    if bad or not stores:
        p.error(f"--stores: unknown store(s) {bad or stores}; use {', '.join(STORES)}")
    try:
        clients = [int(x) for x in a.clients.split(",") if x.strip()]
    except ValueError:
        p.error(f"--clients: {a.clients!r} is not a comma list of integers")
    if not clients or min(clients) < 1:
        p.error("--clients: every level must be at least 1")
    try:
        rates = [float(x) for x in a.rates.split(",") if x.strip()]
    except ValueError:
        p.error(f"--rates: {a.rates!r} is not a comma list of numbers")
    if not rates or min(rates) < 0:
        p.error("--rates: give at least one rate, each >= 0")
    seconds = a.seconds if a.seconds is not None else (1.0 if a.quick else 5.0)
    warmup = a.warmup if a.warmup is not None else (0.2 if a.quick else 1.0)
    if seconds <= 0 or warmup < 0:
        p.error("--seconds must be > 0 and --warmup >= 0")
    return Settings(stores, clients, rates, seconds, warmup, a.client_procs, a.out)


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    machine = machine_info()
    note = SHARED_CORES_NOTE.format(cores=machine["cores"])
    print(f"# {note}", flush=True)
    print(HEADER, flush=True)
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for store in s.stores:
        try:
            rows += bench_store(store, s)
        except (OSError, TimeoutError) as exc:
            if store != "postgresql":
                raise
            skipped[store] = f"PostgreSQL not reachable at {postgres_base_url()}: {exc}"
            print(f"# skipped {store}: {skipped[store]}", flush=True)
    errors = sum(r["errors"] for r in rows)
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report = {
        "machine": machine,
        "settings": {
            "stores": s.stores,
            "clients": s.clients,
            "rates_per_client": s.rates,
            "seconds": s.seconds,
            "warmup_s": s.warmup,
            "client_procs": s.client_procs,
            "list": f"{LIST_SIZE} AgentSpecs in one cell, limit={PAGE}",
            "client": "httpx.AsyncClient per client task, keep-alive, uvloop; rate 0 = closed "
            "loop, rate r = paced r req/s per client, latency counted from when a request was due",
            "note": note,
        },
        "target": {"p95_ms_below": TARGET_P95_MS, "at_clients": TARGET_CLIENTS},
        "skipped": skipped,
        "errors": errors,
        "results": rows,
    }
    out = write_result("api", report, s.out)
    passed = [r for r in rows if r["clients"] == TARGET_CLIENTS]
    if passed:
        ok = sum(r["meets_target"] for r in passed)
        print(f"# target p95 < {TARGET_P95_MS} ms at {TARGET_CLIENTS} clients: {ok}/{len(passed)}")
    print(f"# wrote {out}")
    if errors:
        print(f"# FAILED: {errors} request(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        run_worker(sys.argv[2])
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        raise SystemExit(main())
