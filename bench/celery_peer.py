"""The Celery side of ``bench/throughput.py``: the same no-op work as Apiary's echo stage, on Redis.

Three roles in one file, so the worker and the client agree on the app and the task names:

* the Celery app (``celery -A bench.celery_peer worker …`` imports this module);
* ``python bench/celery_peer.py drive …`` — a closed-loop client (``task.delay()`` + ``.get()``
  with a bounded window in flight, or a 3-task ``chain``) that prints its figures as JSON;
* :func:`run_peer` — what ``throughput.py`` calls: start a worker subprocess, drive it from a
  client subprocess, stop both, return the figures.

Each run gets its own queue name (``APIARY_BENCH_CELERY_QUEUE``), so two runs on one Redis never
take each other's tasks; results expire after a few minutes and the queue key is deleted at the
end. Celery is imported only here, never by Apiary.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery, chain

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("APIARY_BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/14")
QUEUE = os.environ.get("APIARY_BENCH_CELERY_QUEUE", "apiary-bench")

app = Celery("apiary_bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    result_expires=300,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="apiary_bench.noop")
def noop(payload: Any) -> Any:
    """The agent's work: none. Returns its input, as the echo agent does."""
    return payload


# ------------------------------------------------------------------------------------ client


def _drive(seconds: float, in_flight: int, hops: int) -> dict[str, Any]:
    """Keep ``in_flight`` tasks (or chains of ``hops`` tasks) outstanding for ``seconds``."""

    def send(i: int) -> Any:
        if hops == 1:
            return noop.delay(f"m{i}")
        return chain(noop.s(f"m{i}"), *(noop.s() for _ in range(hops - 1))).delay()

    send(-1).get(timeout=60)  # warm: connections, pubsub, the worker's first task
    window: collections.deque[tuple[float, Any]] = collections.deque()
    latencies: list[float] = []
    sent = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        now = time.perf_counter()
        while len(window) < in_flight and now < end:
            window.append((time.perf_counter(), send(sent)))
            sent += 1
        if not window:
            break
        started, result = window.popleft()
        got = result.get(timeout=60)
        if not isinstance(got, str) or not got.startswith("m"):
            raise RuntimeError(f"celery returned {got!r}")
        latencies.append(time.perf_counter() - started)
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "messages": len(latencies),
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 3),
    }


# ------------------------------------------------------------------------------ orchestration


def _start_worker(pool: str, concurrency: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = [
        str(Path(sys.executable).with_name("celery")), "-A", "bench.celery_peer", "worker",
        "--pool", pool, "--concurrency", str(concurrency), "-Q", env["APIARY_BENCH_CELERY_QUEUE"],
        "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> str:
    """Warm shutdown (SIGTERM to the worker), then SIGKILL the whole group if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # prefork children, should any survive their parent
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    return err[-2000:]


def _client(env: dict[str, str], seconds: float, in_flight: int, hops: int) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__)), "drive", "--seconds", str(seconds),
            "--in-flight", str(in_flight), "--hops", str(hops)]  # fmt: skip
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 120
    )
    if done.returncode != 0:
        raise RuntimeError(f"celery client failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_peer(
    seconds: float, in_flight: int = 256, redis_url: str = REDIS_URL
) -> list[dict[str, Any]]:
    """Celery rows: prefork x2 one task, prefork x2 a 3-task chain, solo one task.

    Raises ``OSError`` when Redis is not reachable (the caller reports the peer as skipped).
    """
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    client.ping()
    queue = f"apiary-bench-{secrets.token_hex(4)}"
    env = {**os.environ, "APIARY_BENCH_CELERY_REDIS": redis_url,
           "APIARY_BENCH_CELERY_QUEUE": queue, "PYTHONPATH": str(ROOT)}  # fmt: skip
    rows: list[dict[str, Any]] = []
    try:
        for pool, conc, hops in (("prefork", 2, 1), ("prefork", 2, 3), ("solo", 1, 1)):
            worker = _start_worker(pool, conc, env)
            try:
                row = _client(env, seconds, in_flight, hops)
            except Exception as exc:
                raise RuntimeError(f"{exc}\nworker stderr:\n{_stop(worker)}") from None
            _stop(worker)
            rows.append({"pool": pool, "concurrency": conc, "hops": hops,
                         "in_flight": in_flight, **row})  # fmt: skip
    finally:
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="Celery no-op throughput (delay + get).")
    sub = parser.add_subparsers(dest="cmd")
    drive = sub.add_parser("drive", help="client loop against a running worker; prints JSON")
    drive.add_argument("--seconds", type=float, default=5.0)
    drive.add_argument("--in-flight", type=int, default=256)
    drive.add_argument("--hops", type=int, default=1)
    run = sub.add_parser("run", help="start a worker and drive it (what throughput.py does)")
    run.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.cmd == "drive":
        print(json.dumps(_drive(args.seconds, args.in_flight, args.hops)))
    elif args.cmd == "run":
        print(json.dumps(run_peer(args.seconds), indent=2))
    else:  # `make bench` runs every bench/*.py: the figures come from throughput.py
        print("bench/celery_peer.py is the Celery side of bench/throughput.py (see --help)")


if __name__ == "__main__":
    main()
