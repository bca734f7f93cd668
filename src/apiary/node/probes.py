"""Periodic readiness and liveness probes of a running drone (Kubernetes' ``readinessProbe`` and
``livenessProbe``; docs/waggle.md, "Probes").

Why: an http agent's health path used to be read once, at start. An agent whose ``/healthz``
turned to 500 afterwards stayed Ready and kept being handed messages it could not answer. Now a
:class:`Prober` runs a check every ``periodSeconds``. After ``failureThreshold`` failures in a row
a readiness probe makes the drone unready — its worker leaves the stage's queue group, so the
work goes to the other replicas or stays queued, nothing is lost — and a liveness probe has its
process restarted; after ``successThreshold`` successes in a row a readiness probe makes it
ready again.

What is checked: for an http agent, ``GET httpGet.path`` (default ``healthPath``) on
``httpGet.port`` (default the agent's port), on a connection of its own so messages in flight
never delay it. A stdin agent has no health endpoint: its probe checks that the process is alive
with its stdout open (:meth:`apiary.node.keeper.Keeper.probe`), which catches an agent that closed
its stdout but hangs on; plain exits the supervisor sees at once anyway. So an http agent without
a readiness probe gets the default one (its health path must be watched), while nothing else is
probed unless the AgentSpec asks.

Probing starts when the drone has started — a stdin agent at once, an http agent once its health
path first answered (that start wait plays Kubernetes' startupProbe) — and ``initialDelaySeconds``
counts from then. Clock and sleep are injectable so unit tests run whole schedules without
waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from apiary.errors import FieldDetail, Invalid
from apiary.node.interfaces.config import DEFAULT_HEALTH_PATH
from apiary.node.interfaces.http import get_health, probe_client

log = logging.getLogger("apiary.node.probes")

Check = Callable[[], Awaitable[str | None]]
"""One probe: None when healthy, else what went wrong (it ends up in the drone's status)."""

READINESS_FAILED = "ReadinessProbeFailed"
"""The reason of a Running drone that is not ready because its readiness probe fails."""

LIVENESS_FAILED = "LivenessProbeFailed"
"""The reason of a restart because the liveness probe failed (status and ``lastState``)."""

MIN_SECONDS = 0.1
"""The shortest period or timeout (the AgentSpec admits fractions down to this)."""


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """One probe of a drone, with Kubernetes' defaults."""

    initial_delay_seconds: float = 0.0
    """Seconds after the drone started (http: first answered its health path) before the
    first probe."""

    period_seconds: float = 10.0
    """Seconds from the start of one probe to the start of the next."""

    timeout_seconds: float = 1.0
    """A probe that has not answered after this many seconds failed."""

    success_threshold: int = 1
    """Consecutive successes after failing that make the probe pass again."""

    failure_threshold: int = 3
    """Consecutive failures that make a passing probe fail."""

    http_path: str | None = None
    """``GET`` this path (http agents); None: check that the process is alive (stdin agents)."""

    http_port: int | None = None
    """The port of that ``GET``; None: the agent's own port."""

    @classmethod
    def from_spec(
        cls, spec: Any, *, field: str, http: bool, health_path: str = DEFAULT_HEALTH_PATH
    ) -> ProbeSettings:
        """The manifest form (already admitted, but read defensively: every problem is reported
        with its field path, e.g. ``spec.interface.readinessProbe.periodSeconds``)."""
        if not isinstance(spec, Mapping):
            raise Invalid(f"{field} must be a mapping", [FieldDetail(field, "must be a mapping")])
        errors: list[FieldDetail] = []
        path, port = _http_get(spec.get("httpGet"), f"{field}.httpGet", http, health_path, errors)
        settings = cls(
            initial_delay_seconds=_seconds(spec, "initialDelaySeconds", 0.0, 0.0, field, errors),
            period_seconds=_seconds(spec, "periodSeconds", 10.0, MIN_SECONDS, field, errors),
            timeout_seconds=_seconds(spec, "timeoutSeconds", 1.0, MIN_SECONDS, field, errors),
            success_threshold=_count(spec, "successThreshold", 1, field, errors),
            failure_threshold=_count(spec, "failureThreshold", 3, field, errors),
            http_path=path,
            http_port=port,
        )
        if errors:
            raise Invalid(f"invalid {field}", errors)
        return settings


def _seconds(
    spec: Mapping[str, Any],
    key: str,
    default: float,
    minimum: float,
    field: str,
    errors: list[FieldDetail],
) -> float:
    value = spec.get(key, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum:
        errors.append(FieldDetail(f"{field}.{key}", f"must be a number >= {minimum:g}"))
        return default
    return float(value)


def _count(
    spec: Mapping[str, Any], key: str, default: int, field: str, errors: list[FieldDetail]
) -> int:
    value = spec.get(key, default)
    if type(value) is not int or value < 1:
        errors.append(FieldDetail(f"{field}.{key}", f"must be an integer >= 1, not {value!r}"))
        return default
    return value


def _http_get(
    raw: Any, field: str, http: bool, health_path: str, errors: list[FieldDetail]
) -> tuple[str | None, int | None]:
    """(path, port) of the probe's ``GET``; (None, None) for a stdin agent's process check."""
    if not http:
        if raw is not None:
            errors.append(FieldDetail(field, "only used with type: http"))
        return None, None
    raw = raw if raw is not None else {}
    if not isinstance(raw, Mapping):
        errors.append(FieldDetail(field, "must be a mapping"))
        return health_path, None
    path = raw.get("path") or health_path
    if not isinstance(path, str) or not path.startswith("/"):
        errors.append(FieldDetail(f"{field}.path", f"must start with /, not {path!r}"))
    port = raw.get("port")
    if port is not None and (type(port) is not int or not 1 <= port <= 65535):
        errors.append(FieldDetail(f"{field}.port", f"must be a port number, not {port!r}"))
        port = None
    return str(path), port


def probe_settings(
    interface: Mapping[str, Any], field: str = "spec.interface"
) -> tuple[ProbeSettings | None, ProbeSettings | None]:
    """(readiness, liveness) of an interface; None where nothing is probed. An http agent
    without a readiness probe gets the default one on its health path."""
    http = interface.get("type") == "http"
    health = interface.get("healthPath") or DEFAULT_HEALTH_PATH
    found: dict[str, ProbeSettings | None] = {}
    for key in ("readinessProbe", "livenessProbe"):
        raw = interface.get(key)
        found[key] = None if raw is None else ProbeSettings.from_spec(
            raw, field=f"{field}.{key}", http=http, health_path=health
        )  # fmt: skip
    readiness = found["readinessProbe"]
    if readiness is None and http:
        readiness = ProbeSettings(http_path=health)
    return readiness, found["livenessProbe"]


class Prober:
    """Runs one check every period and calls ``on_change(passing, message)`` when the outcome
    crosses a threshold: ``failureThreshold`` failures in a row fail it, ``successThreshold``
    successes in a row pass it again. It starts out passing (the drone is started)."""

    def __init__(
        self,
        kind: str,
        check: Check,
        settings: ProbeSettings,
        on_change: Callable[[bool, str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.kind = kind
        """``Readiness`` or ``Liveness``: the first word of its messages."""
        self.check = check
        self.settings = settings
        self.on_change = on_change
        self.passing = True
        self.successes = 0
        self.failures = 0
        self._clock = clock
        self._sleep = sleep

    async def run(self) -> None:
        """Probe forever (until cancelled): after the initial delay, once per period."""
        await self._sleep(self.settings.initial_delay_seconds)
        while True:
            started = self._clock()
            await self.step()
            spent = self._clock() - started
            await self._sleep(max(0.0, self.settings.period_seconds - spent))

    async def step(self) -> bool:
        """Probe once and count the outcome; True when this probe succeeded."""
        failure = await self._once()
        if failure is None:
            self._succeeded()
        else:
            self._failed(failure)
        return failure is None

    async def _once(self) -> str | None:
        timeout = self.settings.timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                return await self.check()
        except TimeoutError:
            return f"no answer within {timeout:g}s"
        except Exception as exc:  # a broken check is a failed probe, not a dead prober
            return f"the probe failed: {exc!r}"

    def _succeeded(self) -> None:
        self.failures = 0
        self.successes += 1
        if not self.passing and self.successes >= self.settings.success_threshold:
            self.passing = True
            self._tell(True, "")

    def _failed(self, failure: str) -> None:
        self.successes = 0
        self.failures += 1
        if self.passing and self.failures >= self.settings.failure_threshold:
            self.passing = False
            times = "" if self.failures == 1 else f" ({self.failures} times in a row)"
            self._tell(False, f"{self.kind} probe failed: {failure}{times}")

    def _tell(self, passing: bool, message: str) -> None:
        try:
            self.on_change(passing, message)
        except Exception:
            log.exception("probe callback failed", extra={"probe": self.kind.lower()})


class HttpGetCheck:
    """``GET path`` on the agent's port (loopback), on a connection of its own."""

    def __init__(self, port: int, path: str, host: str = "127.0.0.1") -> None:
        self.path = path
        self._client = probe_client(f"http://{host}:{port}")

    async def __call__(self) -> str | None:
        return await get_health(self._client, self.path)

    async def aclose(self) -> None:
        await self._client.aclose()


def alive_check(probe: Callable[[], Awaitable[bool]]) -> Check:
    """A stdin agent's probe: its process runs with its stdout open (``Keeper.probe``)."""

    async def check() -> str | None:
        return None if await probe() else "the agent's process is gone or closed its stdout"

    return check


class DroneProbes:
    """The probers of one drone process. Readiness tells ``on_ready(ready, message)``; a failed
    liveness probe tells ``on_dead(message)`` (the runner has the process restarted). Made for
    each started process, stopped when it stops running."""

    def __init__(
        self,
        readiness: ProbeSettings | None,
        liveness: ProbeSettings | None,
        *,
        port: int | None,
        alive: Callable[[], Awaitable[bool]],
        on_ready: Callable[[bool, str], None],
        on_dead: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._port = port
        self._alive = alive
        self._clock, self._sleep = clock, sleep
        self._wanted: list[tuple[str, ProbeSettings, Callable[[bool, str], None]]] = []
        if readiness is not None:
            self._wanted.append(("Readiness", readiness, on_ready))
        if liveness is not None:

            def died(passing: bool, message: str) -> None:
                if not passing:
                    on_dead(message)

            self._wanted.append(("Liveness", liveness, died))
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for kind, settings, on_change in self._wanted:
            prober = Prober(kind, self._check(settings), settings, on_change,
                            clock=self._clock, sleep=self._sleep)  # fmt: skip
            self._tasks.append(asyncio.create_task(_probing(prober), name=f"probe:{kind}"))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    def _check(self, settings: ProbeSettings) -> Check:
        port = settings.http_port or self._port
        if settings.http_path is None or port is None:
            return alive_check(self._alive)
        return HttpGetCheck(port, settings.http_path)


async def _probing(prober: Prober) -> None:
    try:
        await prober.run()
    finally:
        if isinstance(prober.check, HttpGetCheck):
            with contextlib.suppress(Exception):
                await prober.check.aclose()
