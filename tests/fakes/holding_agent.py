"""An agent that holds every task until told otherwise (standard library only).

It answers a task only after ``HOLD_SECONDS`` (default 30). A line with ``metadata.cancel`` is
the Waggle cancel notice: it logs ``cancelled <correlationId>`` on stderr (the drone's log) and
drops that task. Used to show that closing a session stops the work it has in flight.
"""

import json
import os
import select
import sys
import time

HOLD = float(os.environ.get("HOLD_SECONDS", "30"))
held = {}  # message id -> (deadline, payload)
buf = b""
while True:
    now = time.monotonic()
    wait = min((d for d, _ in held.values()), default=now + 3600) - now
    ready, _, _ = select.select([sys.stdin], [], [], max(0.0, wait))
    if ready:
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            msg = json.loads(line)
            if msg.get("metadata", {}).get("cancel") == "true":
                held.pop(msg.get("correlationId"), None)
                print(f"cancelled {msg.get('correlationId')}", file=sys.stderr, flush=True)
            else:
                print(f"holding {msg['id']}", file=sys.stderr, flush=True)
                held[msg["id"]] = (time.monotonic() + HOLD, msg["payload"])
    for mid, (deadline, payload) in list(held.items()):
        if deadline <= time.monotonic():
            del held[mid]
            print(
                json.dumps({"type": "result", "payload": payload, "correlationId": mid}), flush=True
            )
