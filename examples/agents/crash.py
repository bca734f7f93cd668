"""Crashing agent: echoes ``CRASH_AFTER`` messages (default 0), then exits with code 3 on the next
one without answering it — with 0 it exits at once, before reading anything (a crash loop)."""

import os
import sys

from apiary.agent import run

LIMIT = int(os.environ.get("CRASH_AFTER", "0"))
seen = 0


def maybe_crash(msg):
    global seen
    seen += 1
    if seen > LIMIT:
        print(f"crash.py: crashing on message {seen} (CRASH_AFTER={LIMIT})", file=sys.stderr)
        os._exit(3)
    return msg.payload


if __name__ == "__main__":
    if LIMIT == 0:
        print("crash.py: crashing at start (CRASH_AFTER=0)", file=sys.stderr)
        sys.exit(3)
    run(maybe_crash)
