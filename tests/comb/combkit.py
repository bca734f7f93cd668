"""Helpers shared by the Comb tests: a clock that moves only when told, and the factory type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from apiary.comb import Comb


class FakeClock:
    """Epoch seconds that only move when the test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeComb = Callable[..., Awaitable[Comb]]
