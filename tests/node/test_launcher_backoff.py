"""The restart back-off schedule: doubling, capped, reset after a long enough run."""

from __future__ import annotations

import pytest

from apiary.node import Backoff, BackoffPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_defaults_double_from_one_second_to_a_five_minute_cap() -> None:
    b = Backoff(clock=Clock())
    delays = [b.next_delay() for _ in range(12)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]


def test_long_run_resets_the_schedule() -> None:
    clock = Clock()
    b = Backoff(BackoffPolicy(reset_after_seconds=60), clock=clock)
    for _ in range(4):
        b.started()
        clock.now += 1
        b.next_delay()
    b.started()
    clock.now += 59.9
    assert b.next_delay() == 16  # not long enough
    b.started()
    clock.now += 60
    assert b.next_delay() == 1
    assert b.next_delay() == 2


def test_configurable_and_overflow_safe() -> None:
    b = Backoff(BackoffPolicy(initial_seconds=0.5, factor=3, cap_seconds=10), clock=Clock())
    assert [b.next_delay() for _ in range(4)] == [0.5, 1.5, 4.5, 10]
    assert b.delay_for(10_000) == 10
    b.reset()
    assert b.next_delay() == 0.5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial_seconds": -1}, "initial_seconds"),
        ({"factor": 0.5}, "factor"),
        ({"initial_seconds": 10, "cap_seconds": 5}, "cap_seconds"),
        ({"reset_after_seconds": -1}, "reset_after_seconds"),
    ],
)
def test_bad_policy_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BackoffPolicy(**kwargs)
