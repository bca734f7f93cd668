"""Probes (node/probes.py) on a fake clock: thresholds, periods, timeouts, the settings read from
a manifest and their admission errors, the worker's readiness gate, and the supervisor's
restart-with-a-reason — no real period is waited."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

import pytest

from apiary.errors import Invalid
from apiary.node.probes import (
    DroneProbes,
    HttpGetCheck,
    Prober,
    ProbeSettings,
    alive_check,
    probe_settings,
)
from apiary.node.supervision import DroneRuntimeStatus
from apiary.resources import ValidationFailed, admit


class Done(Exception):
    """Raised by the fake sleep to end a prober's run after a set number of periods."""


class FakeTime:
    def __init__(self, periods: int) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.periods = periods

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) > self.periods:
            raise Done
        self.now += seconds
        await asyncio.sleep(0)


def scripted(outcomes: list[str | None], spend: FakeTime | None = None, each: float = 0.0) -> Any:
    """A check answering ``outcomes`` in turn (None: healthy); each answer costs ``each``
    seconds of fake time."""
    answers = iter(outcomes)

    async def check() -> str | None:
        if spend is not None:
            spend.now += each
        return next(answers)

    return check


def recorder() -> tuple[list[tuple[bool, str]], Callable[[bool, str], None]]:
    seen: list[tuple[bool, str]] = []
    return seen, lambda ok, why: seen.append((ok, why))


async def test_failure_threshold_failures_in_a_row_fail_and_success_threshold_passes() -> None:
    seen, tell = recorder()
    settings = ProbeSettings(success_threshold=2, failure_threshold=3)
    bad = "HTTP GET /healthz answered 500"
    prober = Prober("Readiness", scripted([bad, bad, None, bad, bad, bad, bad, None, None]),
                    settings, tell)  # fmt: skip
    results = [await prober.step() for _ in range(9)]
    assert results == [False, False, True, False, False, False, False, True, True]
    # Two failures, a success (the count starts over), three failures: fails once, not twice.
    assert seen == [
        (False, "Readiness probe failed: HTTP GET /healthz answered 500 (3 times in a row)"),
        (True, ""),
    ]
    assert prober.passing


async def test_run_waits_the_initial_delay_then_one_period_from_probe_start_to_start() -> None:
    fake = FakeTime(periods=3)
    seen, tell = recorder()
    settings = ProbeSettings(initial_delay_seconds=5, period_seconds=10, failure_threshold=1)
    prober = Prober("Liveness", scripted([None, "down", None], fake, each=0.25), settings, tell,
                    clock=fake.clock, sleep=fake.sleep)  # fmt: skip
    with pytest.raises(Done):
        await prober.run()
    assert fake.sleeps == [5, 9.75, 9.75, 9.75]  # the probe's own time counts in the period
    assert seen == [(False, "Liveness probe failed: down"), (True, "")]


async def test_an_unanswered_probe_fails_after_timeout_seconds_and_a_broken_one_fails() -> None:
    async def hangs() -> str | None:
        await asyncio.Event().wait()
        return None

    async def raises() -> str | None:
        raise RuntimeError("bug")

    seen, tell = recorder()
    hang = Prober("Readiness", hangs, ProbeSettings(timeout_seconds=0.01, failure_threshold=1),
                  tell)  # fmt: skip
    assert not await hang.step()
    broken = Prober("Readiness", raises, ProbeSettings(failure_threshold=1), tell)
    assert not await broken.step()
    assert seen == [
        (False, "Readiness probe failed: no answer within 0.01s"),
        (False, "Readiness probe failed: the probe failed: RuntimeError('bug')"),
    ]


async def test_a_failing_callback_does_not_stop_the_prober() -> None:
    def broken(_ok: bool, _why: str) -> None:
        raise RuntimeError("reporter down")

    prober = Prober("Readiness", scripted(["x", None]), ProbeSettings(failure_threshold=1), broken)
    assert not await prober.step() and await prober.step()


# ------------------------------------------------------------------------------ settings


def test_an_http_agent_gets_a_readiness_probe_on_its_health_path_by_default() -> None:
    readiness, liveness = probe_settings({"type": "http", "port": 8080, "healthPath": "/up"})
    assert readiness == ProbeSettings(http_path="/up")  # Kubernetes' defaults
    assert (readiness.period_seconds, readiness.timeout_seconds) == (10, 1)
    assert (readiness.success_threshold, readiness.failure_threshold) == (1, 3)
    assert liveness is None
    assert probe_settings({"type": "stdin"}) == (None, None)  # stdin: only when asked


def test_probe_settings_from_the_manifest() -> None:
    interface = {
        "type": "http", "port": 8080,
        "readinessProbe": {"periodSeconds": 0.2, "failureThreshold": 1, "httpGet": {"port": 9}},
        "livenessProbe": {"httpGet": {"path": "/live"}, "initialDelaySeconds": 2},
    }  # fmt: skip
    readiness, liveness = probe_settings(interface)
    assert readiness == ProbeSettings(period_seconds=0.2, failure_threshold=1,
                                      http_path="/healthz", http_port=9)  # fmt: skip
    assert liveness == ProbeSettings(initial_delay_seconds=2, http_path="/live")
    readiness, liveness = probe_settings({"livenessProbe": {"periodSeconds": 1}})
    assert readiness is None and liveness == ProbeSettings(period_seconds=1)  # process check


def test_bad_probe_settings_name_every_field() -> None:
    raw = {"periodSeconds": 0, "timeoutSeconds": "1", "failureThreshold": 0,
           "httpGet": {"path": "x", "port": 0}}  # fmt: skip
    with pytest.raises(Invalid) as caught:
        ProbeSettings.from_spec(raw, field="spec.interface.readinessProbe", http=True)
    fields = {d.field for d in caught.value.details}
    base = "spec.interface.readinessProbe"
    assert fields == {f"{base}.periodSeconds", f"{base}.timeoutSeconds",
                      f"{base}.failureThreshold", f"{base}.httpGet.path",
                      f"{base}.httpGet.port"}  # fmt: skip
    with pytest.raises(Invalid):
        ProbeSettings.from_spec({"httpGet": {}}, field="f", http=False)


AGENT: dict[str, Any] = {
    "apiVersion": "apiary.io/v1", "kind": "AgentSpec",
    "metadata": {"name": "a", "namespace": "default"},
    "spec": {"runtime": {"command": ["x"]}, "interface": {"type": "http", "port": 8080}},
}  # fmt: skip


def admitted(**interface: Any) -> dict[str, Any]:
    body = copy.deepcopy(AGENT)
    body["spec"]["interface"].update(interface)
    return dict(admit(body).object["spec"]["interface"])


def admission_errors(**interface: Any) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        admitted(**interface)
    return dict(caught.value.details)


def test_admission_fills_kubernetes_defaults_and_the_health_path() -> None:
    got = admitted(healthPath="/up", readinessProbe={}, livenessProbe={"periodSeconds": 0.5})
    assert got["readinessProbe"] == {
        "httpGet": {"path": "/up"}, "initialDelaySeconds": 0, "periodSeconds": 10,
        "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3,
    }  # fmt: skip
    assert got["livenessProbe"]["periodSeconds"] == 0.5
    assert "readinessProbe" not in admitted()  # the default probe is the node's: no new hash


def test_admission_errors_name_the_probe_field() -> None:
    base = "spec.interface.readinessProbe"
    errors = admission_errors(readinessProbe={"periodSeconds": 0, "failureThreshold": 0})
    assert set(errors) == {f"{base}.periodSeconds", f"{base}.failureThreshold"}
    assert "at least 0.1" in errors[f"{base}.periodSeconds"]
    assert set(admission_errors(readinessProbe={"httpGet": {"path": "up"}})) == {
        f"{base}.httpGet.path"
    }
    errors = admission_errors(livenessProbe={"successThreshold": 2})
    assert errors == {"spec.interface.livenessProbe.successThreshold":
                      "must be 1 for a liveness probe"}  # fmt: skip
    body = copy.deepcopy(AGENT)
    body["spec"]["interface"] = {"type": "stdin", "livenessProbe": {"httpGet": {}}}
    with pytest.raises(ValidationFailed) as caught:
        admit(body)
    assert [f for f, _ in caught.value.details] == ["spec.interface.livenessProbe.httpGet"]
    body["spec"]["interface"] = {"type": "stdin", "livenessProbe": {"periodSeconds": 1}}
    assert admit(body).object["spec"]["interface"]["livenessProbe"]["periodSeconds"] == 1


# ------------------------------------------------------------------------------ wiring


async def test_drone_probes_run_readiness_and_liveness_and_stop() -> None:
    alive = [True]

    async def probe() -> bool:
        return alive[0]

    fake = FakeTime(periods=1000)
    ready: list[tuple[bool, str]] = []
    dead: list[str] = []
    fast = ProbeSettings(period_seconds=1, failure_threshold=2)
    probes = DroneProbes(fast, fast, port=None, alive=probe,
                         on_ready=lambda ok, why: ready.append((ok, why)), on_dead=dead.append,
                         clock=fake.clock, sleep=fake.sleep)  # fmt: skip
    probes.start()
    for _ in range(5):
        await asyncio.sleep(0)
    assert ready == [] and dead == []
    alive[0] = False
    for _ in range(10):
        await asyncio.sleep(0)
    why = "probe failed: the agent's process is gone or closed its stdout (2 times in a row)"
    assert ready == [(False, f"Readiness {why}")] and dead == [f"Liveness {why}"]
    probes.stop()
    await asyncio.sleep(0)
    count = len(fake.sleeps)
    await asyncio.sleep(0)
    assert len(fake.sleeps) == count  # stopped: no more probes


async def test_http_get_check_reports_the_status_code_and_a_refused_connection() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    check = HttpGetCheck(port, "/healthz")
    try:
        assert await check() == "HTTP GET /healthz answered 503"
    finally:
        await check.aclose()
        server.close()
        await server.wait_closed()
    refused = HttpGetCheck(port, "/healthz")
    try:
        assert await refused() == "HTTP GET /healthz failed: ConnectError"
    finally:
        await refused.aclose()


async def test_alive_check_says_why() -> None:
    async def dead() -> bool:
        return False

    assert await alive_check(dead)() == "the agent's process is gone or closed its stdout"


def test_last_state_shows_how_the_previous_process_ended() -> None:
    st = DroneRuntimeStatus(phase="Running", last_terminated=(("reason", "LivenessProbeFailed"),
                                                             ("exitCode", 143)))  # fmt: skip
    assert st.as_status()["lastState"] == {
        "terminated": {"reason": "LivenessProbeFailed", "exitCode": 143}
    }


class FakeSub:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def drain(self) -> None:
        self.log.append("drain")


class FakeBus:
    ack_wait_cap = None

    def __init__(self) -> None:
        self.log: list[str] = []

    async def subscribe(self, subject: str, *_a: Any, **_k: Any) -> FakeSub:
        if not subject.endswith(".in"):  # the drone's cancel subscription stays put
            return FakeSub([])
        self.log.append("subscribe")
        return FakeSub(self.log)

    async def remove_group(self, *_a: Any) -> None:
        pass


class FakeKeeper:
    class config:
        concurrency = 1

    def on_late(self, _hook: Any) -> None:
        pass


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_worker_leaves_the_queue_group_while_unready_and_joins_again() -> None:
    from apiary.node.worker import StageWorker

    bus = FakeBus()
    worker = StageWorker(bus, FakeKeeper(), cell="c", hive="h", stage="s",  # type: ignore[arg-type]
                         drone="d")  # fmt: skip
    await worker.start()
    worker.gate(True)  # already ready: nothing happens
    worker.gate(False)
    await settle()
    assert bus.log == ["subscribe", "drain"]
    await worker.start()  # e.g. a guardrail pause ending: stays out while unready
    assert bus.log == ["subscribe", "drain"]
    worker.gate(True)
    await settle()
    assert bus.log == ["subscribe", "drain", "subscribe"]
    await worker.stop()
