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

Warm pools (issue 14, DESIGN §8: < 10 ms from a warm pool), in the same apiaryd:

* ``warm-claim-x3`` — a stage at 1 replica with ``poolMode: warm``, ``warmPoolSize: 3``, all
  Ready; ``PUT …/scale`` to 4: the time until the three warm drones are seen serving and Ready
  (the claim: one relabel per drone, no process start), and until the three drones refilling the
  pool are Ready (the refill, started in the background);
* ``cold-scale-x3`` — the same stage without a pool, scaled 1 → 4: three drones started cold;
* ``first-answer-warm`` / ``first-answer-cold`` — a stage at 0 replicas (warm pool of 1, or
  none) scaled to 1 and sent a message at once: the time until its answer is back (the answer
  needs the drone on the stage's queue, not only Ready); then back to 0 for the next run.

Prints a table and writes ``bench/results/drone_start.json``.

    .venv/bin/python bench/drone_start.py [--quick] [--runs N] [--x10-runs N] [--warm-runs N]
                                          [--out PATH]
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


def hive(name: str, agent: str, replicas: int, pool: int = 0) -> Obj:
    spec: Obj = {
        "pattern": "pipeline",
        "stages": [{"name": "s", "agentRef": agent, "replicas": replicas}],
    }
    if pool:
        spec.update(poolMode="warm", warmPoolSize=pool)
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "Hive",
        "metadata": {"name": name, "namespace": CELL},
        "spec": spec,
    }


# ------------------------------------------------------------------------------ the watch


@dataclass
class DroneSteps:
    """When the watch first saw each step of one Drone (perf_counter seconds)."""

    seen: dict[str, float] = field(default_factory=dict)
    deleted: bool = False
    warm: bool = False
    """In its stage's warm pool right now (``spec.warm``)."""
    ready: bool = False

    def observe(self, kind: str, drone: Obj, now: float) -> None:
        if kind == "DELETED":
            self.deleted = True
            return
        status = drone.get("status") or {}
        self.warm = (drone.get("spec") or {}).get("warm") is True
        self.ready = status.get("ready") is True
        marks = {
            "created": True,
            "scheduled": bool((drone.get("spec") or {}).get("nodeName")),
            "started": status.get("pid") is not None,
            "ready": self.ready,
        }
        for step in STEPS:
            if marks[step]:
                self.seen.setdefault(step, now)
        if self.ready:  # when it was first seen Ready in the pool, and first seen serving
            self.seen.setdefault("warm" if self.warm else "serving", now)


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


# ------------------------------------------------------------------------------ warm pools


def _serving(drones: dict[str, DroneSteps]) -> list[str]:
    return [u for u, d in drones.items() if not d.deleted and d.ready and not d.warm]


def _pooled(drones: dict[str, DroneSteps]) -> list[str]:
    return [u for u, d in drones.items() if not d.deleted and d.ready and d.warm]


async def _gone(client: AsyncApiClient, watch: DroneWatch, name: str) -> None:
    await client.delete("Hive", name, CELL)
    await watch.until(name, lambda ds: all(d.deleted for d in ds.values()), timeout=60)


async def scale_up(
    client: AsyncApiClient, watch: DroneWatch, agent: str, name: str, pool: int
) -> Obj:
    """A stage at 1 replica (with a Ready pool of ``pool``, or none) scaled to 4: ms until the
    three new serving drones are Ready, per drone, and (pool) until the pool is Ready again."""
    await client.create(hive(name, agent, 1, pool))
    await watch.until(
        name, lambda ds: len(_serving(ds)) == 1 and len(_pooled(ds)) == pool, timeout=60
    )
    before = set(watch.by_hive[name])
    serving_before = set(_serving(watch.by_hive[name]))
    t0 = time.perf_counter()
    await client.scale("Hive", name, 4, CELL, stage="s")
    put = time.perf_counter()
    drones = await watch.until(name, lambda ds: len(_serving(ds)) == 4, timeout=60)
    new = [u for u in _serving(drones) if u not in serving_before]
    times = sorted((drones[u].seen["serving"] - t0) * 1000 for u in new)
    out: Obj = {"total_ms": times[-1], "drones_ms": times, "put_ms": (put - t0) * 1000}
    if pool and not set(new) <= before:
        raise RuntimeError(f"{name}: the scale-up started drones instead of claiming the pool")
    if pool:

        def refilled(ds: dict[str, DroneSteps]) -> bool:
            return len([u for u in _pooled(ds) if u not in before]) == pool

        drones = await watch.until(name, refilled, timeout=60)
        out["refill_ms"] = max(
            (drones[u].seen["warm"] - t0) * 1000 for u in _pooled(drones) if u not in before
        )
    await _gone(client, watch, name)
    return out


async def first_answer(client: AsyncApiClient, watch: DroneWatch, name: str, pool: int) -> float:
    """``name``'s stage at 0 replicas (with a Ready pool of ``pool``, or none), scaled to 1 and
    sent one message at once: ms until its answer is back; then scaled to 0 again, and back to
    where it was (the pool refilled)."""

    def at_zero(ds: dict[str, DroneSteps]) -> bool:
        alive = [d for d in ds.values() if not d.deleted]
        return not _serving(ds) and len(_pooled(ds)) == pool == len(alive)

    await watch.until(name, at_zero, timeout=60)
    session = await client.create(
        {"apiVersion": "apiary.io/v1", "kind": "Session",
         "metadata": {"generateName": f"{name}-", "namespace": CELL},
         "spec": {"hiveRef": name}}
    )  # fmt: skip
    base = f"/api/v1/cells/{CELL}/sessions/{session['metadata']['name']}/messages"
    t0 = time.perf_counter()
    await client.scale("Hive", name, 1, CELL, stage="s")
    sent = await client.request("POST", base, json_body={"payload": "hi", "type": "task"})
    input_id = sent.body["id"]
    after = 0
    while True:
        got = await client.request("GET", base, params={"after": str(after), "wait": "10"})
        for entry in got.body["items"]:
            after = max(after, entry["seq"])
            if entry["kind"] in ("final", "error") and entry.get("parent") == input_id:
                if entry["kind"] != "final":
                    raise RuntimeError(f"{name}: {entry}")
                elapsed = (time.perf_counter() - t0) * 1000
                await client.scale("Hive", name, 0, CELL, stage="s")
                await watch.until(name, at_zero, timeout=60)
                return elapsed


def _summary(scenario: str, values_ms: list[float]) -> Obj:
    summary = latency_summary([v / 1000 for v in values_ms], 1.0)
    del summary["ops_per_s"]
    return {"scenario": scenario, **summary}


async def warm_scenarios(client: AsyncApiClient, watch: DroneWatch, runs: int) -> list[Obj]:
    """Claim against cold start, first answer from zero warm and cold — interleaved run by run,
    so a slow moment of the machine hits both sides alike."""
    claim: list[Obj] = []
    cold: list[Obj] = []
    answers: dict[str, list[float]] = {"first-answer-warm": [], "first-answer-cold": []}
    # one Hive each for the first answers, scaled 0 → 1 → 0 run after run; a first round is not
    # counted: a Hive's very first message costs the router more (about 40 ms here) either way
    zero = {"first-answer-warm": ("first-warm", 1), "first-answer-cold": ("first-cold", 0)}
    for name, pool in zero.values():
        await client.create(hive(name, "py-echo", 0, pool))
        await first_answer(client, watch, name, pool)
    for i in range(runs):
        claim.append(await scale_up(client, watch, "py-echo", f"warm-claim-{i}", 3))
        cold.append(await scale_up(client, watch, "py-echo", f"cold-scale-{i}", 0))
        for key, (name, pool) in zero.items():
            answers[key].append(await first_answer(client, watch, name, pool))
    for name, _ in zero.values():
        await _gone(client, watch, name)
    per_claim = [ms for r in claim for ms in r["drones_ms"]]

    # The Queen's part: from the Hive's change on. Negative when the watch saw the drones
    # serving before the PUT's answer was read (the claim beat the response).
    def after_put(runs: list[Obj]) -> float:
        return float(_summary("", [r["total_ms"] - r["put_ms"] for r in runs])["p50_ms"])

    rows = [
        {**_summary("warm-claim-x3", [r["total_ms"] for r in claim]),
         "per_drone_p50_ms": _summary("", per_claim)["p50_ms"],
         "after_put_p50_ms": after_put(claim),
         "put_p50_ms": _summary("", [r["put_ms"] for r in claim])["p50_ms"],
         "refill": _summary("refill", [r["refill_ms"] for r in claim])},
        {**_summary("cold-scale-x3", [r["total_ms"] for r in cold]),
         "per_drone_p50_ms": _summary("", [ms for r in cold for ms in r["drones_ms"]])["p50_ms"],
         "after_put_p50_ms": after_put(cold)},
    ]  # fmt: skip
    rows += [_summary(name, values) for name, values in answers.items()]
    return rows


def warm_table(rows: list[Obj]) -> str:
    head = (
        f"{'warm pool':<24} {'runs':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
        "  per drone p50 / refill p50"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        extra = ""
        if "per_drone_p50_ms" in r:
            extra = (
                f"  {r['per_drone_p50_ms']:.1f} ms per drone,"
                f" {r['after_put_p50_ms']:.1f} ms after the PUT returned"
            )
        if "refill" in r:
            extra += f"; pool refilled (3 Ready) in {r['refill']['p50_ms']:.0f} ms"
        lines.append(
            f"{r['scenario']:<24} {r['requests']:>4} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f}"
            f" {r['max_ms']:>8.1f}{extra}"
        )
    return "\n".join(lines)


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


async def drone_scenarios(
    data_dir: Path, runs: int, runs_x10: int, warm_runs: int
) -> tuple[list[Obj], list[Obj]]:
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
        warm = await warm_scenarios(client, watch, warm_runs) if warm_runs else []
        return out, warm


async def relay(messages: int) -> list[Obj]:
    echo = [sys.executable, ECHO]
    rows = []
    for conc in (1, keeper_relay.PIPELINE):
        n = messages if conc > 1 else max(200, messages // 4)
        rows.append(await keeper_relay.keeper_case("sdk-echo", echo, "waggle", conc, n))
    return rows


def table(
    drones: list[Obj], floor: list[Obj], relay_rows: list[Obj], warm: list[Obj] | None = None
) -> str:
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
    if warm:
        lines += ["", warm_table(warm)]
    lines.append("")
    lines.append(keeper_relay.table(relay_rows))
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> Obj:
    runs = args.runs or (5 if args.quick else 30)
    runs_x10 = args.x10_runs or max(1, runs // 5)
    warm_runs = args.warm_runs or max(1, runs // 3)
    info = machine_info()
    floor = await floors(runs)
    with temp_dir("apiary-drone-start-") as data_dir:
        drones, warm = await drone_scenarios(data_dir, runs, runs_x10, warm_runs)
    relay_rows = await relay(1000 if args.quick else 20000)
    print(table(drones, floor, relay_rows, warm))
    return {
        "machine": info,
        "runs": runs,
        "runs_x10": runs_x10,
        "warm_runs": warm_runs,
        "target_p50_ms": 300,
        "warm_target_p50_ms": 10,
        "drone_start": drones,
        "warm_pool": warm,
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
    parser.add_argument(
        "--warm-runs", type=int, default=0, help="runs of each warm-pool case (default runs/3)"
    )
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON")
    args = parser.parse_args()
    if args.runs < 0 or args.x10_runs < 0 or args.warm_runs < 0:
        parser.error("--runs, --x10-runs and --warm-runs must be >= 0")
    report = asyncio.run(main(args))
    path = write_result("drone_start", report, args.out)
    print(f"\nwrote {path}")
