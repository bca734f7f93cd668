"""A stand-in for the seeds' ``llm-agent``: deterministic, offline, shaped like an LLM agent.

* Anywhere but a hierarchical supervisor seat it answers ``{"response": "LLM(<input>)",
  "confidence": 0.9}`` — which satisfies seed 04's ``outputSchema``.
* As the supervisor of a hierarchical hive (``APIARY_PATTERN=hierarchical`` and its stage is
  ``SUPERVISOR_STAGE``, default ``supervisor``) it delegates the input to every stage named in
  ``WORKERS`` (default ``worker1,worker2``), and when their results come back it answers with a
  summary built from them.

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


@agent
def llm(msg, ctx):
    if not _supervising():
        return {"response": f"LLM({_text(msg.payload)})", "confidence": 0.9}
    if msg.type == "result":  # the workers answered: one payload, or a list of stage results
        results = (
            msg.payload
            if isinstance(msg.payload, list)
            else [{"stage": msg.source_agent_id or "worker", "payload": msg.payload}]
        )
        summary = "; ".join(f"{r['stage']}: {_text(r['payload'])}" for r in results)
        return {"response": f"summary of {len(results)} workers: {summary}", "confidence": 0.9}
    workers = [w for w in os.environ.get("WORKERS", "worker1,worker2").split(",") if w]
    for worker in workers[:-1]:
        ctx.emit(msg.payload, "task", dest_agent_id=worker)
    return Message(msg.payload, "task", dest_agent_id=workers[-1])


if __name__ == "__main__":
    llm.run()
