"""A stand-in for the seeds' ``llm-agent``: deterministic, offline, shaped like an LLM agent.

* Anywhere but a hierarchical supervisor seat it answers ``{"response": "LLM(<input>)",
  "confidence": 0.9}`` — which satisfies seed 04's ``outputSchema``.
* As the supervisor of a hierarchical hive (``APIARY_PATTERN=hierarchical`` and its stage is
  ``SUPERVISOR_STAGE``, default ``supervisor``) it delegates the input to every stage named in
  ``WORKERS`` (default ``worker1,worker2``). Results come back one by one (``correlationId`` =
  the task's id); it keeps them, says nothing while more are out (they are ``reply: optional``),
  and answers the last with a summary built from them, in the workers' order.

``APIARY_PATTERN`` and ``APIARY_STAGE`` are set by the node for every drone of a hive.
"""

import json
import os

from apiary.agent import Message, agent


def _text(payload):
    return payload if isinstance(payload, str) else json.dumps(payload, sort_keys=True)


def _supervising():
    stage = os.environ.get("APIARY_STAGE", "")
    seat = os.environ.get("SUPERVISOR_STAGE", "supervisor")
    return os.environ.get("APIARY_PATTERN") == "hierarchical" and stage == seat


_asked: dict[str, tuple[str, int]] = {}
"""task id → (the input it was for, the worker's place in WORKERS)."""
_got: dict[str, dict[int, tuple[str, object]]] = {}
"""input id → {place: (worker stage, its payload)}."""
_wanted: dict[str, int] = {}
"""input id → how many tasks were sent for it."""


@agent
def llm(msg, ctx):
    if not _supervising():
        return {"response": f"LLM({_text(msg.payload)})", "confidence": 0.9}
    if msg.type == "result":  # one worker answered
        origin, place = _asked.pop(msg.correlation_id, (msg.correlation_id, 0))
        got = _got.setdefault(origin, {})
        got[place] = (msg.source_agent_id or "worker", msg.payload)
        if len(got) < _wanted.get(origin, 1):
            return None  # more results are on their way
        _wanted.pop(origin, None)
        results = [got[k] for k in sorted(_got.pop(origin))]
        summary = "; ".join(f"{stage}: {_text(payload)}" for stage, payload in results)
        return {"response": f"summary of {len(results)} workers: {summary}", "confidence": 0.9}
    workers = [w for w in os.environ.get("WORKERS", "worker1,worker2").split(",") if w]
    tasks = [Message(msg.payload, "task", dest_agent_id=w) for w in workers]
    _wanted[msg.id] = len(tasks)
    for place, task in enumerate(tasks):
        _asked[task.id] = (msg.id, place)
    for task in tasks[:-1]:
        ctx.emit(task)
    return tasks[-1]


if __name__ == "__main__":
    llm.run()
