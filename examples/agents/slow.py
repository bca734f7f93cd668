"""Slow agent: sleeps ``SLOW_SECONDS`` (default 1) before echoing, to exercise timeouts."""

import os
import time

from apiary.agent import run

DELAY = float(os.environ.get("SLOW_SECONDS", "1"))


def slow(msg):
    time.sleep(DELAY)
    return msg.payload


if __name__ == "__main__":
    run(slow)
