"""What tracing costs on the message path: ``bench/throughput.py --tracing`` runs here.

One embedded Apiary (bench/throughput.py's stack: SQLite store and journal, the in-process bus,
real ``cat`` agents) is deployed once; then the closed loop of throughput.py runs through a
1-stage hive (``cat-r1``) and a 3-stage pipeline (``cat-3x2``) with tracing **off**, **on**,
off, on ... (``--rounds`` pairs), switching in the same process so the drones, the journal and
the machine's load are the same for both. "On" is the production setup: the SDK's
BatchSpanProcessor and OTLP/HTTP exporter (protobuf) to a receiver in a separate process on
loopback (so the figure includes serialising and sending them; the receiver does not decode
them, to take little of the machine).

Reports msgs/s and p50 per case and mode, the on/off ratio, the spread between the off rounds
(the noise floor to judge the ratio by), sampled spans per message and what the receiver got
(posts, bytes).

    .venv/bin/python bench/throughput.py --tracing [--seconds N] [--in-flight N] [--rounds N]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

import throughput as tp
from _common import machine_info, temp_dir, write_result
from opentelemetry.sdk.trace import SpanProcessor

from apiary.telemetry import tracing

CASES = ("cat-r1", "cat-3x2")
SINK = r"""
import http.server
count = {"posts": 0, "bytes": 0}
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # what a collector gets; not decoded, so the sink costs the machine little
        body = self.rfile.read(int(self.headers["content-length"]))
        count["posts"] += 1; count["bytes"] += len(body)
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def do_GET(self):
        out = repr(count).replace("'", '"').encode()
        self.send_response(200); self.send_header("content-length", str(len(out)))
        self.end_headers(); self.wfile.write(out)
    def log_message(self, *a): pass
server = http.server.HTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _counts(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url, timeout=10) as answer:  # the sink on loopback
        counted: dict[str, int] = json.loads(answer.read())
        return counted


MODES = ("off", "on", "sampled")
"""``sampled``: on, with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` at :data:`RATIO`."""
RATIO = "0.1"


class _Counted(SpanProcessor):
    """Counts the spans that end (sampled ones: the others never do)."""

    spans = 0

    def on_end(self, span: Any) -> None:
        _Counted.spans += 1


def _switch(mode: str, endpoint: str) -> None:
    tracing.shutdown_tracing()  # flushes what the last round left
    for name in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        os.environ.pop(name, None)
    if mode == "off":
        return
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "bench"}
    if mode == "sampled":  # the SDK reads the sampler from the process environment
        env |= {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": RATIO}
    os.environ.update(env)
    assert tracing.init_tracing("apiaryd", env)
    assert tracing._PROVIDER is not None
    tracing._PROVIDER.add_span_processor(_Counted())


def run(args: Any) -> dict[str, Any]:
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        endpoint = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
        return asyncio.run(_measure(args, endpoint))
    finally:
        tracing.shutdown_tracing()
        sink.terminate()
        sink.wait(10)


async def _measure(args: Any, endpoint: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    try:
        await _rounds(args, endpoint, rows)
    except TimeoutError:  # the stack's teardown on a loaded machine: the figures are all in
        if len(rows) < args.rounds * len(MODES) * len(CASES):
            raise
        print("  (the stack was slow to stop; every figure was taken)", file=sys.stderr)
    posted = _counts(endpoint)
    return {"machine": machine_info(), "seconds_per_figure": args.seconds,
            "in_flight": args.in_flight, "exported": posted, "rounds": rows,
            "summary": summary(rows)}  # fmt: skip


async def _rounds(args: Any, endpoint: str, rows: list[dict[str, Any]]) -> None:
    with temp_dir("apiary-tc-") as tmp:
        async with tp.apiary_stack(tmp, "memory://", f"sqlite:///{tmp}/journal.db") as ap:
            await tp.deploy(ap)
            for r in range(args.rounds):
                for mode in MODES:
                    _switch(mode, endpoint)
                    for case in CASES:
                        before = _Counted.spans
                        row = await tp.closed_loop(ap, case, args.seconds, args.in_flight)
                        tracing.force_flush(30_000)
                        spans = _Counted.spans - before
                        # closed_loop warms up for min(1, seconds/2) s first: its spans count too
                        warm = min(1.0, args.seconds / 2)
                        sent = row["messages"] * (1 + warm / args.seconds)
                        row.update(round=r, tracing=mode, spans=spans,
                                   spans_per_message=round(spans / max(sent, 1), 2))  # fmt: skip
                        rows.append(row)
                        print(f"  round {r} tracing {row['tracing']:3} {case}: "
                              f"{row['msgs_per_s']} msgs/s, p50 {row['p50_ms']} ms, "
                              f"{row['spans_per_message']} spans/msg", file=sys.stderr)  # fmt: skip
            _switch("off", endpoint)


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per hive and mode: mean msgs/s and p50, the ratio to off, spans per message; for off
    also the spread between its rounds (max - min over the mean): the noise floor."""
    out = []
    for case in CASES:
        off = statistics.fmean(r["msgs_per_s"] for r in rows if r["hive"] == case
                               and r["tracing"] == "off")  # fmt: skip
        for mode in MODES:
            mine = [r for r in rows if r["hive"] == case and r["tracing"] == mode]
            rates = [r["msgs_per_s"] for r in mine]
            spans = statistics.fmean(r["spans_per_message"] for r in mine)
            out.append({
                "hive": case, "tracing": mode, "msgs_per_s": round(statistics.fmean(rates), 1),
                "over_off": round(statistics.fmean(rates) / off, 3),
                "spread": round((max(rates) - min(rates)) / statistics.fmean(rates), 3),
                "p50_ms": round(statistics.fmean(r["p50_ms"] for r in mine), 3),
                "spans_per_message": round(spans, 2),
            })  # fmt: skip
    return out


def table(report: dict[str, Any]) -> str:
    lines = ["hive      tracing    msgs/s  x off  spread   p50 ms  spans/msg"]
    for s in report["summary"]:
        lines.append(
            f"{s['hive']:9} {s['tracing']:8} {s['msgs_per_s']:8} {s['over_off']:6} "
            f"{s['spread']:6} {s['p50_ms']:8} {s['spans_per_message']:9}"
        )
    return "\n".join(lines)


def main(args: Any) -> None:
    started = time.time()
    report = run(args)
    report["wall_seconds"] = round(time.time() - started, 1)
    print(table(report))
    out = write_result("tracing_cost", report, args.out)
    print(f"\nwrote {out}")
