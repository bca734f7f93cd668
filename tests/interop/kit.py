"""What the interop tests share: agent programs, manifests, and an SSE reader.

The agents are real processes run by the embedded apiaryd's node: ``DRAFT`` writes two partial
lines (``metadata.partial``) and then its answer with token usage, like an LLM streaming;
``ECHO`` answers at once.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from e2e.cluster import Apiaryd, is_ready, wait_drones

Obj = dict[str, Any]

DRAFT = [sys.executable, "-c", """
import json, sys, time
for line in sys.stdin:
    m = json.loads(line)
    text = str(m["payload"])
    for part in (text[: len(text) // 2], text[len(text) // 2 :]):
        print(json.dumps({"type": "result", "payload": part, "metadata": {"partial": "true"}}),
              flush=True)
        time.sleep(0.05)
    print(json.dumps({"type": "result", "payload": "draft: " + text,
                      "usage": {"promptTokens": 3, "completionTokens": 5}}), flush=True)
"""]  # fmt: skip
ECHO = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "ok: $line"; done']


def agentspec(cell: str, name: str, command: list[str], fmt: str) -> Obj:
    return {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
            "metadata": {"name": name, "namespace": cell},
            "spec": {"runtime": {"command": command},
                     "interface": {"type": "stdin", "format": fmt},
                     "resources": {"requests": {"cpu": 10, "memory": 8_000_000}}}}  # fmt: skip


def hive(cell: str, name: str, gated: bool, a2a: Obj | None = None) -> Obj:
    stages: list[Obj] = [{"name": "draft", "agentRef": "draft"},
                         {"name": "review", "agentRef": "review"}]  # fmt: skip
    if gated:
        stages[1]["approval"] = "required"
    spec: Obj = {"pattern": "pipeline", "stages": stages}
    if a2a is not None:
        spec["a2a"] = a2a
    return {"apiVersion": "apiary.io/v1", "kind": "Hive",
            "metadata": {"name": name, "namespace": cell}, "spec": spec}  # fmt: skip


def deploy(server: Apiaryd, cell: str, hives: list[Obj]) -> None:
    with server.client(cell) as c:
        c.create(agentspec(cell, "draft", DRAFT, "waggle"))
        c.create(agentspec(cell, "review", ECHO, "text"))
        for h in hives:
            c.create(h)
        n = 2 * len(hives)
        ready = lambda ds: len(ds) == n and all(map(is_ready, ds))  # noqa: E731
        wait_drones(c, cell, ready, 30, f"{n} drones Ready")
    time.sleep(0.2)  # a Ready drone's worker subscribes right after its status is written


def read_sse(
    url: str, token: str, stop: Callable[[str, Obj], bool], last_event_id: str | None = None,
    timeout: float = 20.0,
) -> list[tuple[str, str, Obj]]:  # fmt: skip
    """(id, event, data) of each event until ``stop(event, data)`` says so; then disconnect."""
    headers = {"Authorization": f"Bearer {token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events: list[tuple[str, str, Obj]] = []
    with httpx.stream("GET", url, headers=headers, timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        fields: dict[str, str] = {}
        for line in r.iter_lines():
            if line == "":
                if "data" in fields:
                    data = orjson.loads(fields["data"])
                    events.append((fields["id"], fields["event"], data))
                    if stop(fields["event"], data):
                        return events
                fields = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
    return events
