"""A stand-in for the seeds' ``llm-agent``: deterministic, offline, shaped like an LLM agent.

* Anywhere but a hierarchical supervisor seat it answers ``{"response": "LLM(<input>)",
  "confidence": 0.9}`` — which satisfies seed 04's ``outputSchema``.
* As the supervisor of a hierarchical hive (``APIARY_PATTERN=hierarchical`` and its stage is
  ``SUPERVISOR_STAGE``, default ``supervisor``) it delegates the input to every stage named in
  ``WORKERS`` (default ``worker1,worker2``). Results come back one by one (``correlationId`` =
  the task's id); it keeps them, says nothing while more are out (they are ``reply: optional``),
  and answers the last with a summary built from them, in the workers' order.

The supervisor keeps its bookkeeping in the session's Comb, not in memory: seed 04 scales this
agent (``scaling.minReplicas: 2``), and a worker's result may reach another supervisor replica than
the one that sent the task (docs/patterns.md, "Hierarchical"). The Comb's ``append`` is atomic, so
exactly one replica sees the last result come in and answers.

``APIARY_PATTERN`` and ``APIARY_STAGE`` are set by the node for every drone of a hive.
"""

import hashlib
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
    comb = ctx.comb
    if msg.type == "result":  # one worker answered
        origin, place, wanted = comb.get(f"task:{msg.correlation_id}", [msg.correlation_id, 0, 1])
        results_list = "results-" + hashlib.sha256(origin.encode()).hexdigest()[:32]  # a DNS label
        got = comb.append(results_list, [place, msg.source_agent_id or "worker", msg.payload])
        if got < wanted:
            return None  # more results are on their way
        results = sorted(comb.list_range(results_list))
        summary = "; ".join(f"{stage}: {_text(payload)}" for _, stage, payload in results)
        return {"response": f"summary of {len(results)} workers: {summary}", "confidence": 0.9}
    workers = [w for w in os.environ.get("WORKERS", "worker1,worker2").split(",") if w]
    tasks = [Message(msg.payload, "task", dest_agent_id=w) for w in workers]
    for place, task in enumerate(tasks):
        comb.set(f"task:{task.id}", [msg.id, place, len(tasks)], ttl=3600)
    for task in tasks[:-1]:
        ctx.emit(task)
    return tasks[-1]


if __name__ == "__main__":
    llm.run()
