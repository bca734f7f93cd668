"""Serve a handler over the ``http`` interface with the stdlib only (no web framework to import).

``POST messagePath`` takes one Waggle message (or bare JSON, or text) and answers the turn's
outputs: one message as an object, several as a JSON list. ``GET healthPath`` answers 200 once the
server listens, which is what the keeper waits for. A threading server with HTTP/1.1 keep-alive,
so the keeper's connection pool is reused and ``interface.concurrency`` > 1 is served in parallel
(the handler must then be thread-safe).

Port: the ``port`` argument, else ``$PORT``, else ``$APIARY_AGENT_PORT``, else 8080; paths: the
arguments, else ``$APIARY_MESSAGE_PATH``/``$APIARY_HEALTH_PATH``, else ``/message``/``/healthz``.
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from apiary.agent.runtime import encode_line, encode_output, handle, parse_input, wants_context
from apiary.waggle.message import InvalidMessage, Message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from apiary.agent.runtime import Handler

MAX_BODY = 64 << 20


def answer_body(handler: Handler, body: bytes, with_ctx: bool) -> bytes:
    """One request body → the response body (the SDK's turn, collected instead of streamed)."""
    outputs: list[Message] = []
    handle(handler, parse_input(body), outputs.append, with_ctx)
    lines = [encode_output(m).rstrip(b"\n") for m in outputs]
    if len(lines) == 1:
        return lines[0]
    return b"[" + b",".join(lines) + b"]"


def make_server(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    message_path: str | None = None,
    health_path: str | None = None,
) -> ThreadingHTTPServer:
    """A bound (not yet serving) server; ``port=0`` picks a free port (``server.server_port``)."""
    if port is None:
        port = int(os.environ.get("PORT") or os.environ.get("APIARY_AGENT_PORT") or 8080)
    msg_path = message_path or os.environ.get("APIARY_MESSAGE_PATH") or "/message"
    ok_path = health_path or os.environ.get("APIARY_HEALTH_PATH") or "/healthz"
    with_ctx = wants_context(handler)

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == ok_path:
                self._send(200, b'{"status":"ok"}')
            else:
                self._send(404, b'{"error":"not found"}')

        def do_POST(self) -> None:
            if self.path != msg_path:
                self._send(404, b'{"error":"not found"}')
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self._send(400, b'{"error":"a Content-Length up to 64 MiB is required"}')
                self.close_connection = True
                return
            body = self.rfile.read(length)
            try:
                out = answer_body(handler, body, with_ctx)
            except InvalidMessage as exc:
                detail = {"error": "InvalidMessage", "field": exc.field, "message": str(exc)}
                self._send(400, encode_line(Message(detail, "error")).rstrip(b"\n"))
                return
            self._send(200, out)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one access-log line per message would drown the drone log

    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    return server


def serve(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    message_path: str | None = None,
    health_path: str | None = None,
) -> None:
    """Serve ``handler`` until interrupted (SIGTERM ends the process as usual)."""
    server = make_server(
        handler, host=host, port=port, message_path=message_path, health_path=health_path
    )
    print(f"apiary agent listening on http://{host}:{server.server_port}", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
