"""What the metrics taps cost on the message path — which apiaryd cannot switch off.

apiaryd's Daemon always hands its router the taps of ``src/apiary/telemetry/taps.py``: a
``MeteredRouter`` (inputs, answers, hop/agent/queue times, tokens and cost, the log fields of
each message), a ``TimedBus`` and a timed journal. ``bench/throughput.py`` wires a plain Router,
bus and journal, so its figures (and those of ``--tracing``) are without them. Two measurements:

1. **Closed loop, taps on vs off.** throughput.py's embedded Apiary (SQLite store and journal,
   in-process bus, real ``cat`` agents), but wired as the Daemon wires it, deployed once; then
   throughput.py's closed loop through ``cat-r1`` (one stage) and ``cat-3x2`` (three stages, two
   replicas each) with the taps **on** (the production objects as they are) and **off** (the same
   objects with each tapped method replaced, on the instance, by the plain Router's, bus's,
   journal's and backlog's), alternating (off, on, on, off, …) ``--rounds`` times in one process
   so the drones and the machine's load are the same for both. Reports msgs/s, p50, this
   process's CPU per message and the on/off ratios, with the spread of each mode's rounds (the
   noise floor to judge the ratios by).
2. **The taps alone**: the calls the taps make for one one-hop message (the input's log fields
   and count, the dispatch count and hop timing, the answer's outcome/times, two timed commits,
   two timed publishes) in a tight loop, without anything they wrap: µs per message.

    .venv/bin/python bench/metrics_cost.py [--seconds N] [--in-flight N] [--rounds N] [--out FILE]

Writes ``bench/results/metrics_cost.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from types import MethodType
from typing import Any

import throughput as tp  # puts src/ and bench/ on sys.path
from _common import machine_info, temp_dir, write_result

from apiary.bus import Bus
from apiary.journal import Journal
from apiary.logging import reset_fields, set_fields
from apiary.router import Router, SessionDirectory
from apiary.router.policy import StageBacklog
from apiary.telemetry import taps
from apiary.telemetry.metrics import Recorder
from apiary.waggle.envelope import Outcome

CASES = ("cat-r1", "cat-3x2")
MODES = ("off", "on")


class Switch:
    """The Daemon's wiring around one router, with the taps switchable per instance."""

    def __init__(self) -> None:
        self.router: taps.MeteredRouter | None = None
        self.bus: taps.TimedBus | None = None
        self.journal: Any = None

    def make_router(
        self, journal: Journal, bus: Bus, sessions: SessionDirectory, cell: str
    ) -> Router:
        """throughput.make_router, as apiaryd's Daemon builds it (taps on)."""
        self.journal, self.bus = taps.timed_journal(journal), taps.TimedBus(bus)
        kwargs: dict[str, Any] = {"metrics": Recorder()}
        if tp.routes_one_cell():
            kwargs["outcomes"] = f"apiary.{cell}.*.out"
        self.router = taps.MeteredRouter(self.journal, self.bus, sessions, **kwargs)
        return self.router

    def answers_counted(self) -> float:
        """Answers the router's recorder counted so far (``apiary_stage_messages_total``)."""
        assert self.router is not None
        family = self.router.metrics.messages
        return sum(s.value for m in family.collect() for s in m.samples
                   if s.name.endswith("_total"))  # fmt: skip

    def set(self, on: bool) -> None:
        router, bus, journal = self.router, self.bus, self.journal
        assert router is not None and bus is not None and journal is not None
        backlog = router.timed_backlog
        if on:
            tapped: list[tuple[Any, tuple[str, ...]]] = [
                (router, ("submit", "handle_outcome")), (backlog, ("published", "handled")),
                (bus, ("publish", "publish_many")), (journal, ("commit",)),
            ]  # fmt: skip
            for obj, names in tapped:
                for name in names:
                    vars(obj).pop(name, None)
            return
        router.submit = MethodType(Router.submit, router)  # type: ignore[method-assign]
        router.handle_outcome = MethodType(Router.handle_outcome, router)  # type: ignore[method-assign]
        backlog.published = MethodType(StageBacklog.published, backlog)  # type: ignore[method-assign]
        backlog.handled = MethodType(StageBacklog.handled, backlog)  # type: ignore[method-assign]
        bus.publish = bus.inner.publish  # type: ignore[method-assign]
        bus.publish_many = bus.inner.publish_many  # type: ignore[method-assign]
        vars(journal)["commit"] = journal._inner.commit


async def closed_loops(args: argparse.Namespace) -> list[dict[str, Any]]:
    switch = Switch()
    tp.make_router = switch.make_router  # the stack is built as apiaryd builds it
    rows: list[dict[str, Any]] = []
    with temp_dir("apiary-mc-") as tmp:
        try:
            async with tp.apiary_stack(tmp, "memory://", f"sqlite:///{tmp}/journal.db") as ap:
                await tp.deploy(ap)
                for r in range(args.rounds):
                    # off, on, on, off, off, on …: a drift over the run (the journal grows, the
                    # load changes) does not always fall on the same mode
                    for mode in MODES if r % 2 == 0 else MODES[::-1]:
                        switch.set(mode == "on")
                        for case in CASES:
                            before = switch.answers_counted()
                            row = await tp.closed_loop(ap, case, args.seconds, args.in_flight)
                            # the check that "off" is off: no answer counted by the recorder
                            counted = switch.answers_counted() - before
                            row.update(round=r, taps=mode, answers_counted=counted)
                            rows.append(row)
                            print(f"  round {r} taps {mode:3} {case}: {row['msgs_per_s']} msgs/s,"
                                  f" p50 {row['p50_ms']} ms, {row['cpu_us_per_msg']} µs CPU/msg",
                                  file=sys.stderr)  # fmt: skip
                switch.set(True)
        except TimeoutError:  # the stack's teardown on a loaded machine: the figures are all in
            if len(rows) < args.rounds * len(MODES) * len(CASES):
                raise
            print("  (the stack was slow to stop; every figure was taken)", file=sys.stderr)
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for case in CASES:
        off = [r for r in rows if r["hive"] == case and r["taps"] == "off"]
        off_rate = statistics.fmean(r["msgs_per_s"] for r in off)
        off_cpu = statistics.fmean(r["cpu_us_per_msg"] for r in off)
        for mode in MODES:
            mine = [r for r in rows if r["hive"] == case and r["taps"] == mode]
            rates = [r["msgs_per_s"] for r in mine]
            cpu = statistics.fmean(r["cpu_us_per_msg"] for r in mine)
            out.append({
                "hive": case, "taps": mode, "msgs_per_s_rounds": rates,
                "msgs_per_s": round(statistics.fmean(rates), 1),
                "over_off": round(statistics.fmean(rates) / off_rate, 3),
                "spread": round((max(rates) - min(rates)) / statistics.fmean(rates), 3),
                "p50_ms": round(statistics.fmean(r["p50_ms"] for r in mine), 3),
                "cpu_us_per_msg": round(cpu, 1),
                "cpu_over_off": round(cpu / off_cpu, 3),
            })  # fmt: skip
    return out


def taps_alone(messages: int) -> dict[str, float]:
    """µs per one-hop message of the calls the taps make, none of what they wrap."""
    r = Recorder()
    backlog = taps.TimedBacklog(recorder=r)
    outcome = Outcome("d1", "c/s", "h", "s1", "h-s1-0", [{"type": "result", "payload": "x"}],
                      0.2)  # fmt: skip
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(messages):
        token = set_fields({"cell": "c", "session": "s"})  # MeteredRouter.submit
        reset_fields(token)
        r.session_input("c", "h")
        for _ in range(2):  # a commit for the input's step and one for the answer's
            started = time.perf_counter()
            r.committed(time.perf_counter() - started, "ok")
        for _ in range(2):  # the dispatch's publish and the final's notice/outbox publish
            started = time.perf_counter()
            r.published(time.perf_counter() - started, "ok")
        backlog.published("c", "h", "s1", "c/s", "d1", 0)
        backlog.handled("c", "h", "s1", "c/s", "d1", 0)
        hop = backlog.hops.pop(("c/s", "d1"), None)  # MeteredRouter.handle_outcome
        token = set_fields({"cell": "c", "hive": "h", "session": "s", "stage": "s1"})
        reset_fields(token)
        reason = taps._agent_error(outcome)
        agent = outcome.latency_ms / 1000.0
        r.answered("c", "h", "s1", "ok", reason=reason, hop_seconds=hop, agent_seconds=agent,
                   exemplar=taps._exemplar())  # fmt: skip
        for _ in taps._tokens(outcome):
            pass
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"messages": messages, "us_per_msg": round(wall / messages * 1e6, 2),
            "cpu_us_per_msg": round(cpu / messages * 1e6, 2)}  # fmt: skip


def table(report: dict[str, Any]) -> str:
    lines = ["hive      taps   msgs/s  x off  spread   p50 ms  CPU µs/msg  x off"]
    for s in report["summary"]:
        lines.append(
            f"{s['hive']:9} {s['taps']:4} {s['msgs_per_s']:8} {s['over_off']:6} "
            f"{s['spread']:6} {s['p50_ms']:8} {s['cpu_us_per_msg']:11} {s['cpu_over_off']:6}"
        )
    alone = report["taps_alone"]
    lines.append(f"\ntaps alone: {alone['us_per_msg']} µs per one-hop message "
                 f"({alone['cpu_us_per_msg']} µs CPU), {alone['messages']} messages")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per figure")
    parser.add_argument("--in-flight", type=int, default=128, help="sessions in flight")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs")
    parser.add_argument("--alone", type=int, default=50_000, help="messages of the taps alone")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/…)")
    args = parser.parse_args()
    started = time.time()
    report: dict[str, Any] = {"machine": machine_info(), "seconds_per_figure": args.seconds,
                              "in_flight": args.in_flight}  # fmt: skip
    report["taps_alone"] = taps_alone(args.alone)
    rows = asyncio.run(closed_loops(args))
    report |= {"rounds": rows, "summary": summary(rows),
               "wall_seconds": round(time.time() - started, 1)}  # fmt: skip
    print(table(report))
    print(f"\nwrote {write_result('metrics_cost', report, args.out)}")


if __name__ == "__main__":
    main()
