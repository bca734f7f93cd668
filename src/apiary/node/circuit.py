"""The per-drone circuit breaker (``guardrails.circuitBreaker``), as a pure state machine.

A drone that keeps failing — errors, timeouts, crashes — should stop receiving work while it is
sick, so that its queue group hands the work to healthy replicas instead of burning retries on
it. The breaker counts *consecutive* failed attempts:

* **Closed** — normal. ``failureThreshold`` failures in a row open it; any success resets the
  count.
* **Open** — the drone takes nothing for ``resetTimeoutSeconds`` (the worker leaves its queue
  group, and the drone's status shows ``CircuitOpen``).
* **HalfOpen** — after the cooldown the drone takes ``halfOpenRequests`` trial messages (one by
  default) and nothing else; all of them succeeding closes the circuit, any failing re-opens it
  for another cooldown.

The machine only decides; :class:`~apiary.node.worker.StageWorker` acts on its transitions
(``on_change``). The clock is injectable so tests drive the cooldown by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["Closed", "Open", "HalfOpen"]
CLOSED: State = "Closed"
OPEN: State = "Open"
HALF_OPEN: State = "HalfOpen"

TRIAL_BUSY_DELAY = 0.1
"""Seconds a message waits (nak delay) while the half-open trial is still running."""


class CircuitBreaker:
    __slots__ = (
        "clock",
        "cooldown",
        "failures",
        "on_change",
        "opened_at",
        "opens",
        "state",
        "threshold",
        "trial_successes",
        "trials",
        "trials_taken",
    )

    def __init__(
        self,
        *,
        threshold: int = 5,
        cooldown: float = 30.0,
        trials: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] | None = None,
    ) -> None:
        if threshold < 1 or trials < 1 or cooldown <= 0:
            raise ValueError("circuitBreaker: failureThreshold and halfOpenRequests must be >= 1 "
                             "and resetTimeoutSeconds positive")  # fmt: skip
        self.threshold = threshold
        self.cooldown = float(cooldown)
        self.trials = trials
        self.clock = clock
        self.on_change = on_change
        self.state: State = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.opens = 0
        self.trials_taken = 0
        self.trial_successes = 0

    # --------------------------------------------------------------------------- admission

    def remaining(self) -> float:
        """Seconds of cooldown left while open (0.0 otherwise)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown - self.clock())

    def poll(self) -> State:
        """Move Open → HalfOpen once the cooldown is over; the state after that."""
        if self.state == OPEN and self.remaining() <= 0.0:
            self.trials_taken = self.trial_successes = 0
            self._set(HALF_OPEN)
        return self.state

    def admit(self) -> float:
        """Whether a message may go to the drone now: 0.0 yes, else seconds to wait."""
        if self.state == CLOSED:
            return 0.0
        if self.poll() == OPEN:
            return max(self.remaining(), 1e-3)
        if self.trials_taken < self.trials:
            self.trials_taken += 1
            return 0.0
        return TRIAL_BUSY_DELAY

    def release(self) -> None:
        """A message that was admitted never reached the agent (already answered): while half
        open, its trial slot is free again."""
        if self.state == HALF_OPEN and self.trials_taken > self.trial_successes:
            self.trials_taken -= 1

    # ----------------------------------------------------------------------------- results

    def success(self) -> None:
        if self.state == CLOSED:
            self.failures = 0
        elif self.state == HALF_OPEN:
            self.trial_successes += 1
            if self.trial_successes >= self.trials:
                self.failures = 0
                self._set(CLOSED)
        # Open: a late success of a message taken before the circuit opened changes nothing.

    def failure(self) -> None:
        if self.state == CLOSED:
            self.failures += 1
            if self.failures >= self.threshold:
                self._open()
        elif self.state == HALF_OPEN:
            self.failures += 1
            self._open()
        # Open: late failures of messages taken before opening do not extend the cooldown.

    def _open(self) -> None:
        self.opened_at = self.clock()
        self.opens += 1
        self._set(OPEN)

    def _set(self, state: State) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(state)


__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker", "State"]
