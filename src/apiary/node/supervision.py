"""Keeping one drone running: start, watch, restart with exponential back-off, report.

A :class:`Supervisor` turns a :class:`~apiary.node.launcher.LaunchSpec` into a drone that stays
up: it launches the process (:func:`~apiary.node.launcher.launch`), hands every started process
to ``on_started`` (the keeper takes its pipes there), and reports every state change as a
:class:`DroneRuntimeStatus` (what the node agent writes into ``Drone.status``). A process that
exits is started again after a back-off; one that keeps crashing is ``CrashLoopBackOff``.

:meth:`Supervisor.restart` ends the running process on purpose (a failed liveness probe,
:mod:`~apiary.node.probes`): it counts as a restart like a crash, with the caller's reason in
the Failed status and in ``lastState.terminated``, which keeps how the previous process ended
while its successor runs (a short Failed phase may never reach the API).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from apiary.node.backoff import Backoff, BackoffPolicy
from apiary.node.launcher import (
    STDERR_TAIL_LINES,
    DroneProcess,
    LaunchError,
    LaunchSpec,
    Phase,
    describe_exit,
    launch,
    memory_hint,
)
from apiary.node.logs import LogWriter, drone_log_path

log = logging.getLogger("apiary.node.launcher")  # the name operators already filter on


@dataclass(frozen=True)
class DroneRuntimeStatus:
    """What the node agent writes into ``Drone.status`` (see :meth:`as_status`)."""

    phase: Phase
    pid: int | None = None
    restart_count: int = 0
    exit_code: int | None = None
    signal: str | None = None
    reason: str | None = None
    message: str | None = None
    last_stderr: tuple[str, ...] = ()
    next_restart_at: float | None = None  # epoch seconds
    started_at: float | None = None  # epoch seconds
    last_terminated: tuple[tuple[str, Any], ...] = ()
    """How the previous process ended: (camelCase key, value) pairs of ``lastState.terminated``
    (``finishedAt`` in epoch seconds)."""

    def as_status(self) -> dict[str, Any]:
        """The camelCase fields of a Drone's status (unset ones left out)."""
        out: dict[str, Any] = {"phase": self.phase, "restartCount": self.restart_count}
        for key, value in (
            ("pid", self.pid),
            ("exitCode", self.exit_code),
            ("signal", self.signal),
            ("reason", self.reason),
            ("message", self.message),
            ("nextRestartAt", self.next_restart_at),
            ("startedAt", self.started_at),
        ):
            if value is not None:
                out[key] = value
        if self.last_stderr:
            out["lastStderr"] = list(self.last_stderr)
        if self.last_terminated:
            out["lastState"] = {"terminated": dict(self.last_terminated)}
        return out


def _terminated(
    reason: str, message: str, code: int, sig: str | None, at: float
) -> tuple[tuple[str, Any], ...]:
    """``lastState.terminated`` of :class:`DroneRuntimeStatus`, unset fields left out."""
    fields = (("reason", reason), ("message", message), ("exitCode", code), ("signal", sig),
              ("finishedAt", at))  # fmt: skip
    return tuple((key, value) for key, value in fields if value is not None)


StatusCallback = Callable[[DroneRuntimeStatus], Awaitable[None] | None]
StartedCallback = Callable[[DroneProcess], Awaitable[None] | None]


class Supervisor:
    """Keeps one drone running: start → Running → (exit) → back-off → start again, until stopped.

    Every state change goes to ``on_status``; every started process to ``on_started`` (the keeper
    takes its pipes there). Both callbacks may be plain or async; their exceptions are logged,
    never allowed to stop the supervision. ``sleep``/``clock`` are injectable for tests.
    """

    def __init__(
        self,
        spec: LaunchSpec,
        *,
        on_status: StatusCallback | None = None,
        on_started: StartedCallback | None = None,
        backoff: BackoffPolicy | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.spec = spec
        self._on_status = on_status
        self._on_started = on_started
        self._backoff = Backoff(backoff or BackoffPolicy(), clock=clock)
        self._clock = clock
        self._sleep = sleep
        self._status = DroneRuntimeStatus(phase="Starting")
        self._spawns = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ended_by: tuple[str, str] | None = None
        """(reason, message) of a :meth:`restart` of the current process, until it exits."""
        self._ending: asyncio.Future[int] | None = None
        self.process: DroneProcess | None = None
        self.log: LogWriter | None = None
        if spec.log_dir is not None:
            path = drone_log_path(spec.log_dir, spec.cell, spec.drone)
            try:
                self.log = LogWriter(
                    path,
                    max_bytes=spec.log_max_bytes,
                    backups=spec.log_backups,
                    memory_lines=STDERR_TAIL_LINES,
                )
            except OSError as exc:  # an unwritable log dir must not keep the agent from running
                log.warning(
                    "no log file for the drone",
                    extra={"cell": spec.cell, "drone": spec.drone, "path": str(path),
                           "error": str(exc)},
                )  # fmt: skip

    @property
    def status(self) -> DroneRuntimeStatus:
        return self._status

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name=f"drone:{self.spec.cell}/{self.spec.drone}"
            )
        return self._task

    async def stop(self) -> DroneRuntimeStatus:
        """Stop for good (graceful: SIGTERM, grace period, SIGKILL) and return the final status."""
        self._stop.set()
        if self._task is not None:
            # asyncio.wait, not await: a supervisor task that was cancelled (or crashed) must not
            # make the caller of stop() look cancelled itself.
            await asyncio.wait({self._task})
            if not self._task.cancelled() and self._task.exception() is not None:
                log.error(
                    "drone supervisor failed",
                    exc_info=self._task.exception(),
                    extra={"cell": self.spec.cell, "drone": self.spec.drone},
                )
        elif self._status.phase != "Stopped":
            await self._emit(phase="Stopped", pid=None, next_restart_at=None)
        if self.log is not None:
            self.log.close()
        return self._status

    def restart(self, reason: str, message: str) -> bool:
        """End the running process gracefully (SIGTERM, grace period, SIGKILL); it is started
        again after the back-off like a crashed one, with ``reason``/``message`` as why it
        ended. False when no process runs (or one is already being ended)."""
        proc = self.process
        if proc is None or proc.returncode is not None or self._stop.is_set() or self._ended_by:
            return False
        log.warning(
            "drone restarting",
            extra={"cell": self.spec.cell, "drone": self.spec.drone, "reason": reason,
                   "error": message},
        )  # fmt: skip
        self._ended_by = (reason, message)
        self._ending = asyncio.ensure_future(proc.stop())
        return True

    async def _run(self) -> None:
        try:
            while not self._stop.is_set():
                await self._emit(phase="Starting", pid=None, next_restart_at=None)
                try:
                    proc = await launch(self.spec, log=self.log)
                except LaunchError as exc:
                    delay = self._backoff.next_delay()
                    await self._emit(
                        phase="Failed",
                        reason=exc.reason,
                        message=f"{exc.message}; retrying in {delay:g}s",
                        next_restart_at=self._clock() + delay,
                    )
                    if await self._pause(delay):
                        break
                    continue
                if await self._supervise(proc):
                    break
        finally:
            current = self.process
            if current is not None and current.returncode is None:  # cancelled: leave nothing
                current.kill()
                await asyncio.shield(current.wait())
        await self._emit(phase="Stopped", pid=None, next_restart_at=None)

    async def _supervise(self, proc: DroneProcess) -> bool:
        """Run one process to its end; True if the supervisor was asked to stop."""
        self.process = proc
        self._spawns += 1
        self._backoff.started()
        await self._emit(
            phase="Running",
            pid=proc.pid,
            restart_count=self._spawns - 1,
            started_at=proc.started_at,
            reason=None,
            message=None,
        )
        await self._call(self._on_started, proc)
        exited = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not exited.done():
            await self._emit(phase="Stopping")
            _, code, sig, message = describe_exit(await proc.stop())
            # Recorded without a callback of its own: _run reports it with phase Stopped.
            self._status = replace(self._status, exit_code=code, signal=sig, message=message)
            return True
        reason, code, sig, message = describe_exit(exited.result())
        tail = proc.last_stderr
        if tail:
            message += f"; last stderr: {tail[-1]}"
        message += memory_hint(self.spec, exited.result(), tail)
        ended_by, self._ended_by, self._ending = self._ended_by, None, None
        if ended_by is not None:  # ended on purpose: say why first
            reason, message = ended_by[0], f"{ended_by[1]}; {message}"
        self._status = replace(
            self._status, last_terminated=_terminated(reason, message, code, sig, self._clock())
        )
        delay = self._backoff.next_delay()
        if self._backoff.failures > 1 and ended_by is None:
            reason = "CrashLoopBackOff"
        await self._emit(
            phase="Failed",
            pid=None,
            exit_code=code,
            signal=sig,
            reason=reason,
            message=f"{message}; restarting in {delay:g}s",
            last_stderr=tuple(tail),
            next_restart_at=self._clock() + delay,
        )
        return await self._pause(delay)

    async def _pause(self, delay: float) -> bool:
        """Back-off sleep that a stop request cuts short; True if stopping."""
        sleeper = asyncio.ensure_future(self._sleep(delay))
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({sleeper, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (sleeper, stopping):
            task.cancel()
        return self._stop.is_set()

    async def _emit(self, **changes: Any) -> None:
        self._status = replace(self._status, **changes)
        await self._call(self._on_status, self._status)

    async def _call(
        self, callback: Callable[[Any], Awaitable[None] | None] | None, arg: Any
    ) -> None:
        if callback is None:
            return
        try:
            result = callback(arg)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception(
                "drone status callback failed",
                extra={"cell": self.spec.cell, "drone": self.spec.drone},
            )
