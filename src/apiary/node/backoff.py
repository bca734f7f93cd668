"""Exponential restart back-off for crashing drones (Kubernetes' CrashLoopBackOff, made tunable).

A drone that keeps dying must not burn the machine restarting in a tight loop, but one that crashed
once after running happily for an hour should come back at once. So the delay doubles with every
consecutive failure (``initial * factor**n``, capped at ``cap``) and falls back to ``initial``
once a process has stayed up for ``reset_after`` seconds. The clock is injected so tests can prove
the schedule without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackoffPolicy:
    """The knobs: Kubernetes' defaults except a 1 s start (agents start in milliseconds)."""

    initial_seconds: float = 1.0
    factor: float = 2.0
    cap_seconds: float = 300.0
    reset_after_seconds: float = 60.0

    def __post_init__(self) -> None:
        # Bad knobs would give a zero or shrinking delay — a hot restart loop — so refuse them.
        if self.initial_seconds < 0:
            raise ValueError(f"initial_seconds must be >= 0, got {self.initial_seconds}")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if self.cap_seconds < self.initial_seconds:
            raise ValueError(
                f"cap_seconds ({self.cap_seconds}) must be >= initial_seconds "
                f"({self.initial_seconds})"
            )
        if self.reset_after_seconds < 0:
            raise ValueError(f"reset_after_seconds must be >= 0, got {self.reset_after_seconds}")


@dataclass
class Backoff:
    """Tracks consecutive failures of one drone and says how long to wait before the next start.

    Call :meth:`started` when a process is up and :meth:`next_delay` after it (or its launch)
    failed; the delay depends on how many failures came in a row without a long-enough run.
    """

    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    _started_at: float | None = None

    def started(self) -> None:
        """A process is running now; its uptime decides whether the next failure resets the run."""
        self._started_at = self.clock()

    def next_delay(self) -> float:
        """The delay before the next attempt, counting this failure."""
        if (
            self._started_at is not None
            and self.clock() - self._started_at >= self.policy.reset_after_seconds
        ):
            self.failures = 0
        self._started_at = None
        delay = self.delay_for(self.failures)
        self.failures += 1
        return delay

    def delay_for(self, failures: int) -> float:
        """The delay after ``failures`` earlier consecutive failures (0 → ``initial``)."""
        p = self.policy
        if p.factor == 1 or failures == 0:
            return min(p.initial_seconds, p.cap_seconds)
        # Stop multiplying once past the cap so a long crash loop can't overflow the float.
        delay = p.initial_seconds
        for _ in range(failures):
            delay *= p.factor
            if delay >= p.cap_seconds:
                return p.cap_seconds
        return delay

    def reset(self) -> None:
        """Forget the failure history (e.g. after the spec changed and a fresh start is wanted)."""
        self.failures = 0
        self._started_at = None
