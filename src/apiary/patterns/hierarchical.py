"""hierarchical: a supervisor delegates tasks to worker stages and composes the answer.

One supervisor *turn* = one dispatch to the supervisor. Each of its outputs is, in order:

* addressed (``destAgentId`` or ``metadata.stage`` naming a worker stage) → a ``task`` for that
  stage (one replica);
* unaddressed ``result``/``response`` (not ``more``) → the final answer; later outputs of the
  same turn, and results of tasks still out, are recorded only;
* unaddressed ``event``, or any partial (``more: true``) output → a note, recorded only;
* anything else (an unaddressed ``task``/``request``, a destination naming no worker) → the flow
  fails, naming what was wrong, rather than guessing.

When every task of a turn has its result the supervisor gets the next turn: one ``result``
message (one task: the worker's payload, ``correlationId`` = the task id; several: a list of
``{"stage", "correlationId", "payload"}`` in dispatch order, ``correlationId`` = the previous turn's
dispatch). Starting turn ``maxTurns + 1`` fails the flow with ``MaxTurnsExceeded``.
"""

from __future__ import annotations

from typing import Any

from apiary.patterns.base import Pattern
from apiary.patterns.effects import Effects
from apiary.patterns.messages import Output, carried, terminal
from apiary.waggle import Message

FINAL_TYPES = ("result", "response")


class Hierarchical(Pattern):
    @property
    def workers(self) -> list[str]:
        supervisor = self.segment.supervisor
        return [name for name in self.segment.stage_names() if name != supervisor]

    def _turn_metadata(self, fx: Effects, turn: int) -> dict[str, str]:
        return {**fx.metadata, "turn": str(turn)}

    def start(self, fx: Effects, st: dict[str, Any], message: Message, cause: str) -> None:
        supervisor = self.segment.supervisor
        did = fx.dispatch(
            supervisor, cause, 0, message.payload, parent=cause, metadata=self._turn_metadata(fx, 1)
        )
        st.update(turns=1, turn=did, tasks=[])

    def outcome(
        self, fx: Effects, st: dict[str, Any], dispatch_id: str, stage: str, outputs: list[Output]
    ) -> None:
        if dispatch_id == st["turn"]:
            self._supervisor(fx, st, dispatch_id, outputs)
        else:
            self._worker(fx, st, dispatch_id, stage, outputs)

    def _supervisor(
        self, fx: Effects, st: dict[str, Any], dispatch_id: str, outputs: list[Output]
    ) -> None:
        supervisor = self.segment.supervisor
        for index, (record_id, message) in enumerate(outputs):
            dest = message.dest_agent_id or message.metadata.get("stage")
            if dest:
                if dest not in self.workers:
                    field = "destAgentId" if message.dest_agent_id else "metadata.stage"
                    fx.fail(
                        "UnknownStage",
                        f"supervisor output {index} ({field}) names {dest!r}, which is not a "
                        f"worker stage of this hive (workers: {', '.join(self.workers) or 'none'})",
                        record_id,
                    )
                    return
                metadata = {k: v for k, v in carried(message.metadata).items() if k != "stage"}
                task = fx.dispatch(
                    dest,
                    record_id,
                    0,
                    message.payload,
                    parent=record_id,
                    metadata=metadata,
                    correlation_id=record_id,
                    source=supervisor,
                )
                st["tasks"].append({"id": task, "stage": dest, "done": False, "payload": None})
            elif message.more or message.type == "event":
                continue
            elif message.type in FINAL_TYPES:
                fx.finish(message.payload, record_id, carried(message.metadata))
                return
            else:
                fx.fail(
                    "NoDestination",
                    f"supervisor output {index} is a {message.type!r} with neither destAgentId "
                    "nor metadata.stage: name a worker stage, or answer with type result",
                    record_id,
                )
                return
        if not st["tasks"]:
            fx.fail(
                "NoOutput",
                f"supervisor turn {st['turns']} ended with neither a task nor a final result",
                dispatch_id,
            )

    def _worker(
        self,
        fx: Effects,
        st: dict[str, Any],
        dispatch_id: str,
        stage: str,
        outputs: list[Output],
    ) -> None:
        task = next((t for t in st["tasks"] if t["id"] == dispatch_id), None)
        if task is None:  # pragma: no cover - the engine only routes this turn's tasks here
            return
        answer = terminal(outputs)
        if answer is None:
            self.no_answer(fx, dispatch_id, stage)
            return
        record_id, message = answer
        task.update(done=True, payload=message.payload)
        if not all(t["done"] for t in st["tasks"]):
            return
        turn = st["turns"] + 1
        if turn > self.segment.max_turns:
            fx.fail(
                "MaxTurnsExceeded",
                f"the supervisor {self.segment.supervisor!r} would start turn {turn}; "
                f"guardrails.maxTurns is {self.segment.max_turns}",
                record_id,
            )
            return
        tasks = st["tasks"]
        if len(tasks) == 1:
            payload: Any = tasks[0]["payload"]
            correlation, source = tasks[0]["id"], tasks[0]["stage"]
        else:
            payload = [
                {"stage": t["stage"], "correlationId": t["id"], "payload": t["payload"]}
                for t in tasks
            ]
            correlation, source = st["turn"], None
        did = fx.dispatch(
            self.segment.supervisor,
            st["turn"],
            turn,
            payload,
            parent=record_id,
            type="result",
            metadata=self._turn_metadata(fx, turn),
            correlation_id=correlation,
            source=source,
        )
        st.update(turns=turn, turn=did, tasks=[])
