"""A hierarchical supervisor written with the standard library only, against DESIGN §5/§6.

For each input it splits the payload into words and prints one task per word, each with its own
uuid id, addressed to the stage named by ``WORKER_STAGE`` (default ``worker``). It reads the
results as they come back (their ``correlationId`` is the task's id) and, when every word of an
input is back, prints the answer: the results joined by spaces, in the words' order. Nothing
Apiary-specific: no SDK, no ``more``, no knowledge of turns.
"""

import json
import sys
import uuid

WORKER = __import__("os").environ.get("WORKER_STAGE", "worker")

asked = {}  # task id -> (input id, position)
jobs = {}  # input id -> [result or None per word]


def say(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    if not line.strip():
        continue
    msg = json.loads(line)
    if msg.get("type") == "result":
        origin, place = asked.pop(msg.get("correlationId"), (None, None))
        if origin is None:
            continue  # not one of ours
        results = jobs[origin]
        results[place] = msg["payload"]
        if all(r is not None for r in results):
            del jobs[origin]
            say({"type": "result", "payload": " ".join(results), "correlationId": origin})
        continue
    words = str(msg["payload"]).split()
    jobs[msg["id"]] = [None] * len(words)
    for place, word in enumerate(words):
        task_id = str(uuid.uuid4())
        asked[task_id] = (msg["id"], place)
        say({"id": task_id, "type": "task", "destAgentId": WORKER, "payload": word})
