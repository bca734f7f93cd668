"""How fast a drone starts: apply a Hive → its Drone reports Ready (DESIGN §8: < 300 ms p50 cold
for a Python agent; Rustic 1-2 s, Ray ≈ 1 s, the Kubernetes pod SLO 5 s).

Against a real ``apiaryd --data-dir D --port 0`` (API + Queen + embedded node agent), each run
creates a fresh Hive through the API and follows one Drone watch — no polling — until the Drone's
status says ``ready``. Scenarios:

* ``python-echo``   — examples/agents/echo.py (stdin, waggle format), 1 replica per Hive;
* ``python-echo-x10`` — the same with 10 replicas at once (time until all ten are Ready);
* ``seed03-sh``     — seed 03's ``while read; do echo; done`` shell loop, 1 replica.

Every Drone's time is broken down by when the watch saw each step: ``created`` (the Queen reacted
to the Hive and made the Drone), ``scheduled`` (``spec.nodeName`` set), ``started`` (the node
reported the process's pid) and ``ready`` (``status.ready`` true). The status timestamps themselves
have one-second resolution, so the watch's arrival times are the finer clock.

The ``cpu ms`` column is apiaryd's own CPU time per drone life cycle (create, place, start, report
Ready, delete, stop): on a shared machine it moves far less than the latencies do, so it is the
figure to compare two versions by.

Floors measured in the same run: a bare ``python -c pass`` spawn, ``python -I -S -c pass`` (the
interpreter's own minimum), and the *first answer* of echo.py and of the seed-03 loop when spawned
directly (spawn → one message → its answer: what the agent itself costs, without Apiary).
The keeper relay through one echo agent reuses ``bench/keeper_relay.py``.

Prints a table and writes ``bench/results/drone_start.json``.

    .venv/bin/python bench/drone_start.py [--quick] [--runs N] [--x10-runs N] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT / "src"), str(BENCH)]

import keeper_relay  # noqa: E402
from _common import (  # noqa: E402
    latency_summary,
    machine_info,
    start_apiaryd,
    temp_dir,
    write_result,
)

from apiary.client import AsyncApiClient  # noqa: E402

ECHO = str(ROOT / "examples" / "agents" / "echo.py")
SEED_03_LOOP = keeper_relay.SEED_03_LOOP
CELL = "default"
STEPS = ("created", "scheduled", "started", "ready")
WAGGLE_LINE = b'{"id":"m1","version":"1.0","type":"task","payload":"hi","metadata":{}}\n'

Obj = dict[str, Any]


# ------------------------------------------------------------------------------- the objects


def agentspec(name: str, command: list[str], fmt: str) -> Obj:
    """A small agent: requests low enough that 10 replicas fit on a 2-core node."""
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "AgentSpec",
        "metadata": {"name": name, "namespace": CELL},
        "spec": {
            "runtime": {"command": command, "workingDir": str(ROOT)},
            "interface": {"type": "stdin", "format": fmt},
            "resources": {"requests": {"cpu": 10, "memory": 16_000_000}},
        },
    }


def hive(name: str, agent: str, replicas: int) -> Obj:
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "Hive",
        "metadata": {"name": name, "namespace": CELL},
        "spec": {
            "pattern": "pipeline",
            "stages": [{"name": "s", "agentRef": agent, "replicas": replicas}],
        },
    }


# ------------------------------------------------------------------------------ the watch


@dataclass
class DroneSteps:
    """When the watch first saw each step of one Drone (perf_counter seconds)."""

    seen: dict[str, float] = field(default_factory=dict)
    deleted: bool = False

    def observe(self, kind: str, drone: Obj, now: float) -> None:
        if kind == "DELETED":
            self.deleted = True
            return
        status = drone.get("status") or {}
        marks = {
            "created": True,
            "scheduled": bool((drone.get("spec") or {}).get("nodeName")),
            "started": status.get("pid") is not None,
            "ready": status.get("ready") is True,
        }
        for step in STEPS:
            if marks[step]:
                self.seen.setdefault(step, now)


class DroneWatch:
    """One watch on every Drone of the cell for the whole benchmark; runs look up their Hive's
    drones here and wait on ``changed`` instead of polling."""

    def __init__(self, client: AsyncApiClient) -> None:
        self.client = client
        self.by_hive: dict[str, dict[str, DroneSteps]] = {}
        self.changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listing = await self.client.list("Drone", CELL)
        rv = (listing.get("metadata") or {}).get("resourceVersion")
        self._task = asyncio.create_task(self._follow(rv))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, rv: str | None) -> None:
        async for kind, drone in self.client.watch("Drone", CELL, resource_version=rv):
            now = time.perf_counter()
            meta = drone.get("metadata") or {}
            hive_name = (meta.get("labels") or {}).get("apiary.io/hive")
            if not hive_name:
                continue
            drones = self.by_hive.setdefault(hive_name, {})
            drones.setdefault(meta.get("uid", ""), DroneSteps()).observe(kind, drone, now)
            async with self.changed:
                self.changed.notify_all()

    async def until(self, hive_name: str, done: Any, timeout: float) -> dict[str, DroneSteps]:
        """Wait until ``done(drones of hive_name)`` is true."""
        async with asyncio.timeout(timeout), self.changed:
            while True:
                drones = self.by_hive.get(hive_name, {})
                if done(drones):
                    return drones
                await self.changed.wait()


# ------------------------------------------------------------------------------ scenarios


async def drone_start(
    client: AsyncApiClient, watch: DroneWatch, agent: str, name: str, replicas: int
) -> Obj:
    """Create one Hive; return its time to all-Ready and each drone's step times (ms)."""
    t0 = time.perf_counter()
    await client.create(hive(name, agent, replicas))
    accepted = time.perf_counter() - t0

    def all_ready(drones: dict[str, DroneSteps]) -> bool:
        ready = [d for d in drones.values() if "ready" in d.seen and not d.deleted]
        return len(ready) >= replicas

    drones = await watch.until(name, all_ready, timeout=60)
    steps = [{k: (v - t0) * 1000 for k, v in d.seen.items()} for d in drones.values()]
    total = max(s["ready"] for s in steps)
    await client.delete("Hive", name, CELL)
    await watch.until(name, lambda ds: all(d.deleted for d in ds.values()), timeout=60)
    return {"total_ms": total, "accepted_ms": accepted * 1000, "drones": steps}


def summarize_runs(name: str, runs: list[Obj]) -> Obj:
    totals = [r["total_ms"] / 1000 for r in runs]
    out: Obj = {"scenario": name, "first_run_ms": round(runs[0]["total_ms"], 2)}
    out.update(latency_summary(totals, 1.0))
    del out["ops_per_s"]
    # per-step breakdown: the time each step took after the previous one, p50 over all drones
    breakdown: Obj = {}
    prev = "apply"
    for step in STEPS:
        deltas = []
        for r in runs:
            for d in r["drones"]:
                before = 0.0 if prev == "apply" else d.get(prev)
                if step in d and before is not None:
                    deltas.append((d[step] - before) / 1000)
        breakdown[f"{prev}->{step}"] = latency_summary(deltas, 1.0)["p50_ms"]
        prev = step
    accepted = [r["accepted_ms"] / 1000 for r in runs]
    out["accepted_p50_ms"] = latency_summary(accepted, 1.0)["p50_ms"]
    out["breakdown_p50_ms"] = breakdown
    return out


async def spawn_floor(argv: list[str], runs: int, line: bytes | None) -> list[float]:
    """Seconds from spawn to exit (``line`` None) or to the first answer to ``line``."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if line else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if line else asyncio.subprocess.DEVNULL,
            cwd=ROOT,
        )
        if line is None:
            await proc.wait()
            times.append(time.perf_counter() - t0)
            continue
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(line)
        await proc.stdin.drain()
        answer = await proc.stdout.readline()
        times.append(time.perf_counter() - t0)
        if not answer:
            raise RuntimeError(f"{argv!r} gave no answer")
        await keeper_relay.reap(proc)
    return times


async def floors(runs: int) -> list[Obj]:
    py = sys.executable
    cases = [
        ("python -c pass", [py, "-c", "pass"], None),
        ("python -I -S -c pass", [py, "-I", "-S", "-c", "pass"], None),
        ("echo.py first answer", [py, ECHO], WAGGLE_LINE),
        ("seed03-sh first answer", ["/bin/sh", "-c", SEED_03_LOOP], b"hi\n"),
    ]
    out = []
    for name, argv, line in cases:
        await spawn_floor(argv, 2, line)  # warm the page cache
        summary = latency_summary(await spawn_floor(argv, runs, line), 1.0)
        del summary["ops_per_s"]
        out.append({"scenario": name, **summary})
    return out


@contextlib.asynccontextmanager
async def cluster(data_dir: Path) -> AsyncIterator[tuple[AsyncApiClient, DroneWatch, int]]:
    """A real apiaryd (API, Queen, embedded node), a client, the Drone watch and its pid."""
    server = start_apiaryd(data_dir)
    try:
        async with AsyncApiClient(server.url, server.token, CELL) as client:
            await wait_for_node(client)
            watch = DroneWatch(client)
            await watch.start()
            try:
                yield client, watch, server.pid
            finally:
                await watch.stop()
    finally:
        server.stop()


def cpu_seconds(pid: int) -> float:
    """CPU time apiaryd itself has used (all threads; not its agents)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def wait_for_node(client: AsyncApiClient, timeout: float = 30) -> None:
    """The embedded node registers itself shortly after the API is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await client.list("Node")).get("items"):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the embedded node never registered")


async def drone_scenarios(data_dir: Path, runs: int, runs_x10: int) -> list[Obj]:
    async with cluster(data_dir) as (client, watch, pid):
        await client.create(agentspec("py-echo", [sys.executable, ECHO], "waggle"))
        await client.create(agentspec("sh-echo", ["/bin/sh", "-c", SEED_03_LOOP], "text"))
        plans = [
            ("python-echo", "py-echo", 1, runs),
            ("python-echo-x10", "py-echo", 10, runs_x10),
            ("seed03-sh", "sh-echo", 1, runs),
        ]
        out = []
        for scenario, agent, replicas, n in plans:
            results = []
            cpu0 = cpu_seconds(pid)
            for i in range(n):
                name = f"{scenario}-{i}"
                results.append(await drone_start(client, watch, agent, name, replicas))
            # CPU per drone life cycle (create, place, start, report, delete, stop): unlike the
            # latencies, barely moved by whatever else the machine's cores are doing.
            cpu_ms = (cpu_seconds(pid) - cpu0) * 1000 / (n * replicas)
            summary = summarize_runs(scenario, results)
            out.append(
                {"replicas": replicas, **summary, "apiaryd_cpu_ms_per_drone": round(cpu_ms, 2)}
            )
        return out


async def relay(messages: int) -> list[Obj]:
    echo = [sys.executable, ECHO]
    rows = []
    for conc in (1, keeper_relay.PIPELINE):
        n = messages if conc > 1 else max(200, messages // 4)
        rows.append(await keeper_relay.keeper_case("sdk-echo", echo, "waggle", conc, n))
    return rows


def table(drones: list[Obj], floor: list[Obj], relay_rows: list[Obj]) -> str:
    head = (
        f"{'scenario':<24} {'runs':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'cpu ms':>7}"
        "  breakdown p50 (ms after the previous step)"
    )
    lines = [head, "-" * len(head)]
    for r in drones:
        steps = " ".join(f"{k.split('->')[1]}+{v:.0f}" for k, v in r["breakdown_p50_ms"].items())
        lines.append(
            f"{r['scenario']:<24} {r['requests']:>4} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f}"
            f" {r['max_ms']:>8.1f} {r['apiaryd_cpu_ms_per_drone']:>7.1f}"
            f"  {steps} (POST {r['accepted_p50_ms']:.0f})"
        )
    for r in floor:
        lines.append(
            f"{r['scenario']:<24} {r['requests']:>4} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f}"
            f" {r['max_ms']:>8.1f} {'':>7}  (no Apiary)"
        )
    lines.append("")
    lines.append(keeper_relay.table(relay_rows))
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> Obj:
    runs = args.runs or (5 if args.quick else 30)
    runs_x10 = args.x10_runs or max(1, runs // 5)
    info = machine_info()
    floor = await floors(runs)
    with temp_dir("apiary-drone-start-") as data_dir:
        drones = await drone_scenarios(data_dir, runs, runs_x10)
    relay_rows = await relay(1000 if args.quick else 20000)
    print(table(drones, floor, relay_rows))
    return {
        "machine": info,
        "runs": runs,
        "runs_x10": runs_x10,
        "target_p50_ms": 300,
        "drone_start": drones,
        "floors": floor,
        "keeper_relay": relay_rows,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 runs, short relay (smoke test)")
    parser.add_argument("--runs", type=int, default=0, help="runs per scenario (default 30)")
    parser.add_argument(
        "--x10-runs", type=int, default=0, help="runs of the 10-replica case (default runs/5)"
    )
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON")
    args = parser.parse_args()
    if args.runs < 0 or args.x10_runs < 0:
        parser.error("--runs and --x10-runs must be >= 0")
    report = asyncio.run(main(args))
    path = write_result("drone_start", report, args.out)
    print(f"\nwrote {path}")
