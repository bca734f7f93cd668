"""The two per-drone meters behind ``rateLimitPerMinute`` and ``tokenBudgetPerMinute``.

Both answer the same question before a message is taken — *how long until this drone may take
one more?* — so that the worker can hand the message back to the queue with exactly that delay
(``nak(delay)``) instead of holding it: the work waits in the queue, where another replica may
take it, and is never lost. Both take an injectable clock so tests drive time by hand.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    """Messages per minute as a token bucket: ``per_minute / 60`` tokens a second.

    The bucket holds ``burst`` tokens (one second's worth, at least one, by default), so a drone
    that was idle may take a short burst but the rate over any minute stays within
    ``per_minute + burst``. Why a bucket and not a fixed window: a fixed window lets a drone take
    twice its limit across a window boundary, and a bucket tells the exact wait for the next
    token, which becomes the nak delay.
    """

    __slots__ = ("capacity", "clock", "rate", "stamp", "tokens")

    def __init__(self, per_minute: float, *, burst: float | None = None, clock: Clock) -> None:
        if per_minute <= 0:
            raise ValueError("rateLimitPerMinute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = float(burst) if burst is not None else max(1.0, float(math.ceil(self.rate)))
        self.clock = clock
        self.tokens = self.capacity
        self.stamp = clock()

    def take(self) -> float:
        """Take a token: 0.0 when one was taken, else the seconds until one is there (nothing
        is taken then)."""
        now = self.clock()
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate

    def give_back(self) -> None:
        """Return a token taken for a message that was not delivered after all."""
        self.tokens = min(self.capacity, self.tokens + 1.0)


class TokenWindow:
    """Tokens used in the last ``window`` seconds, against a budget (``tokenBudgetPerMinute``).

    A sliding window of (time, tokens) records: exact, and cheap because a drone records one
    entry per answered message. The drone has *room* while the tokens in the window are below
    the budget; :meth:`wait` says how long until it has room again — the time the oldest records
    need to fall out of the window.
    """

    __slots__ = ("budget", "clock", "entries", "used", "window")

    def __init__(self, budget: int, *, window: float = 60.0, clock: Clock) -> None:
        if budget <= 0:
            raise ValueError("tokenBudgetPerMinute must be positive")
        self.budget = budget
        self.window = window
        self.clock = clock
        self.entries: deque[tuple[float, int]] = deque()
        self.used = 0

    def add(self, tokens: int) -> None:
        if tokens > 0:
            self.entries.append((self.clock(), tokens))
            self.used += tokens

    def wait(self) -> float:
        """0.0 when the drone has room, else seconds until it has."""
        now = self.clock()
        horizon = now - self.window
        entries = self.entries
        while entries and entries[0][0] <= horizon:
            self.used -= entries.popleft()[1]
        if self.used < self.budget:
            return 0.0
        left = self.used
        for stamp, tokens in entries:
            left -= tokens
            if left < self.budget:
                return max(stamp + self.window - now, 1e-3)
        return self.window  # unreachable: the window empties eventually


__all__ = ["Clock", "TokenBucket", "TokenWindow"]
