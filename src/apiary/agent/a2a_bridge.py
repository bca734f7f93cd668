"""A remote A2A agent as a stage: the drone process the node runs for ``interface.type: a2a``.

``python -m apiary.agent.a2a_bridge`` speaks Waggle on stdin/stdout to its keeper — so the
keeper's guardrails, timeouts, retries, budgets and dead letters apply exactly as to a local
agent — and A2A 1.0 (JSON-RPC ``SendStreamingMessage``) to ``$APIARY_A2A_URL``: each message
is sent as an A2A user message (a string payload a text part, other JSON a data part), each
``WORKING`` status with a message becomes a partial line (``metadata.partial``, a
``message.delta`` on the session stream), and the task's end becomes the answer: ``COMPLETED``
its status message or last artifact; ``FAILED``, ``REJECTED``, ``CANCELED``, ``INPUT_REQUIRED``
or a broken stream an ``error`` output (retried, then dead-lettered, by the hive's policy).
A cancel notice from the keeper (a timeout, a closed session) abandons the call and asks the
remote agent to ``CancelTask``. ``$APIARY_A2A_TOKEN``, when set, is sent as a bearer token.
Several messages may be in flight at once (``interface.concurrency``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from typing import Any

import httpx

Obj = dict[str, Any]
TERMINAL_ERRORS = {"TASK_STATE_FAILED": "A2AFailed", "TASK_STATE_REJECTED": "A2ARejected",
                   "TASK_STATE_CANCELED": "A2ACanceled", "TASK_STATE_INPUT_REQUIRED":
                   "A2AInputRequired", "TASK_STATE_AUTH_REQUIRED": "A2AAuthRequired"}  # fmt: skip


def parts_of(payload: Any) -> list[Obj]:
    return [{"text": payload}] if isinstance(payload, str) else [{"data": payload}]


def payload_of(parts: Any) -> Any:
    values = [p.get("text", p.get("data")) for p in parts or [] if isinstance(p, dict)]
    return values[0] if len(values) == 1 else values


class Bridge:
    def __init__(self, url: str, token: str | None) -> None:
        headers = {"A2A-Version": "1.0", "Accept": "text/event-stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url
        self.http = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(None, connect=10))
        self.calls: dict[str, tuple[asyncio.Task[None], list[str]]] = {}

    def emit(self, out: Obj) -> None:
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()

    def answer(self, msg: Obj, payload: Any, *, partial: bool = False) -> None:
        out: Obj = {"type": "result", "payload": payload, "correlationId": msg["id"]}
        if partial:
            out["metadata"] = {"partial": "true"}
        self.emit(out)

    def fail(self, msg: Obj, reason: str, message: str) -> None:
        self.emit({"type": "error", "correlationId": msg["id"],
                   "payload": {"reason": reason, "message": message}})  # fmt: skip

    async def call(self, msg: Obj, task_ids: list[str]) -> None:
        request = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": "SendStreamingMessage",
                   "params": {"message": {"messageId": msg["id"], "role": "ROLE_USER",
                                          "parts": parts_of(msg.get("payload"))}}}  # fmt: skip
        last: Any = None
        try:
            async with self.http.stream("POST", self.url, json=request) as r:
                if r.status_code >= 400:
                    body = (await r.aread())[:200].decode("utf-8", "replace")
                    return self.fail(msg, "A2AHttpError", f"HTTP {r.status_code}: {body}")
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = json.loads(line[5:].strip() or "null")
                    if not isinstance(data, dict):
                        continue
                    if "error" in data:
                        err = data["error"] or {}
                        return self.fail(
                            msg, "A2AError", f"{err.get('code')}: {err.get('message')}"
                        )
                    done, last = self.step(msg, data.get("result") or {}, task_ids, last)
                    if done:
                        return
        except httpx.HTTPError as exc:
            return self.fail(msg, "A2AUnreachable", f"{self.url}: {exc or type(exc).__name__}")
        self.fail(msg, "A2AStreamEnded", "the A2A stream ended before the task did")

    def step(self, msg: Obj, r: Obj, task_ids: list[str], last: Any) -> tuple[bool, Any]:
        """One StreamResponse: (the task ended?, the last artifact payload)."""
        if "message" in r:
            self.answer(msg, payload_of(r["message"].get("parts")))
            return True, last
        if "artifactUpdate" in r:
            return False, payload_of((r["artifactUpdate"].get("artifact") or {}).get("parts"))
        event = r.get("task") or r.get("statusUpdate") or {}
        task = event.get("id") or event.get("taskId")
        if task and task not in task_ids:
            task_ids.append(task)
        artifacts = event.get("artifacts") or []
        if artifacts:
            last = payload_of(artifacts[-1].get("parts"))
        status = event.get("status") or {}
        state, said = status.get("state"), status.get("message")
        if state == "TASK_STATE_COMPLETED":
            self.answer(msg, payload_of(said["parts"]) if said else last)
            return True, last
        if state in TERMINAL_ERRORS:
            text = payload_of(said["parts"]) if said else state
            self.fail(msg, TERMINAL_ERRORS[state], f"the remote agent's task is {state}: {text}")
            return True, last
        if said and "statusUpdate" in r:
            self.answer(msg, payload_of(said.get("parts")), partial=True)
        return False, last

    def start(self, msg: Obj) -> None:
        task_ids: list[str] = []
        task = asyncio.ensure_future(self.call(msg, task_ids))
        self.calls[msg["id"]] = (task, task_ids)
        task.add_done_callback(lambda _: self.calls.pop(msg["id"], None))

    async def cancel(self, msg_id: str) -> None:
        call = self.calls.pop(msg_id, None)
        if call is None:
            return
        task, task_ids = call
        task.cancel()
        for remote in task_ids:
            with contextlib.suppress(httpx.HTTPError):
                await self.http.post(self.url, json={"jsonrpc": "2.0", "id": "cancel",
                                                     "method": "CancelTask",
                                                     "params": {"id": remote}})  # fmt: skip


async def main() -> None:
    bridge = Bridge(os.environ["APIARY_A2A_URL"], os.environ.get("APIARY_A2A_TOKEN"))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        metadata = msg.get("metadata") or {}
        if metadata.get("cancel") == "true":
            await bridge.cancel(str(msg.get("correlationId")))
        elif isinstance(msg, dict) and "id" in msg:
            bridge.start(msg)
    for task, _ in list(bridge.calls.values()):
        with contextlib.suppress(asyncio.CancelledError):
            await task


if __name__ == "__main__":
    asyncio.run(main())
