"""An http agent whose health a test flips from outside (stdlib only: it runs as any user).

``GET /NAME`` answers the status code written in the file ``$HEALTH_DIR/NAME`` (200 while the
file is missing or empty), so ``/healthz`` and ``/livez`` turn to 500 when the test writes
``500`` there, and back. ``POST`` answers ``{"by": $AGENT_NAME, "pid": ..., "echo": payload}``:
the test sees which replica (and which process) took each message.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEALTH_DIR = os.environ.get("HEALTH_DIR", ".")
NAME = os.environ.get("AGENT_NAME", "agent")


def _code(path: str) -> int:
    name = path.strip("/").split("?")[0] or "root"
    try:
        with open(os.path.join(HEALTH_DIR, name)) as f:
            return int(f.read().strip() or 200)
    except (OSError, ValueError):
        return 200


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        code = _code(self.path)
        self._answer(code, b"ok" if code < 400 else b"unhealthy", "text/plain")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        payload = json.loads(body).get("payload") if body else None
        out = {"by": NAME, "pid": os.getpid(), "echo": payload}
        self._answer(200, json.dumps(out).encode(), "application/json")

    def _answer(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the drone's log is for the test's failures


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
