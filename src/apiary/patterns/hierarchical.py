"""hierarchical: a supervisor delegates tasks to worker stages and composes the answer (DESIGN §6).

The supervisor receives the input. Every line it prints — in its answer or after it, for the
input or for any result it was given (late outputs, :meth:`Engine.on_late`) — is taken as it
arrives:

* addressed (``destAgentId`` or ``metadata.stage`` naming a worker stage) → a ``task`` for that
  stage (one replica), with the id the supervisor gave it;
* unaddressed ``result``/``response`` (not ``more``) → the final answer; later outputs, and
  results of tasks still out, are recorded only;
* unaddressed ``event``, or any partial (``more: true``) output → a note, recorded only;
* anything else (an unaddressed ``task``/``request``, a destination naming no worker) → the flow
  fails, naming what was wrong, rather than guessing.

Each worker's answer goes back to the supervisor on its own, as a ``result`` whose
``correlationId`` is the supervisor's id for that task and whose ``sourceAgentId`` is the worker
stage, marked ``reply: optional``: the supervisor need not answer it, and the keeper does not wait
for it. Only the supervisor knows which result completes what it asked, so it answers (new tasks
or the final answer) when it is ready; until then the flow listens to it. Results may reach it in
any order. (Were the result that leaves no task out a message awaiting an answer, a result
overtaken on the bus by it would wait behind it on a one-slot drone: a deadlock.) What bounds a
supervisor that never answers is the session's ``timeoutMinutes``/``maxDurationMinutes``.

A *round* is a delivery to the supervisor after which it emits new tasks: a fan-out of fifty
tasks is one round. Starting round ``maxTurns + 1`` fails the flow with ``MaxTurnsExceeded``.
"""

from __future__ import annotations

from typing import Any

from apiary.patterns.base import Pattern
from apiary.patterns.effects import Effects
from apiary.patterns.messages import Output, carried, terminal
from apiary.waggle import REPLY, REPLY_OPTIONAL, Message

FINAL_TYPES = ("result", "response")


class Hierarchical(Pattern):
    """State: ``tasks`` (task dispatch id → the supervisor's id for it, while out), ``rounds``
    and ``counted`` (the supervisor deliveries counted as rounds)."""

    @property
    def workers(self) -> list[str]:
        supervisor = self.segment.supervisor
        return [name for name in self.segment.stage_names() if name != supervisor]

    def start(self, fx: Effects, st: dict[str, Any], message: Message, cause: str) -> None:
        fx.dispatch(self.segment.supervisor, cause, 0, message.payload, parent=cause)
        st.update(tasks={}, rounds=0, counted=[])

    def outcome(
        self, fx: Effects, st: dict[str, Any], dispatch_id: str, stage: str, outputs: list[Output]
    ) -> None:
        if dispatch_id in st["tasks"]:
            self._worker(fx, st, dispatch_id, stage, outputs)
        else:
            self.late(fx, st, dispatch_id, stage, outputs)

    def late(
        self, fx: Effects, st: dict[str, Any], dispatch_id: str, stage: str, outputs: list[Output]
    ) -> None:
        """The supervisor's lines for ``dispatch_id`` (one of its deliveries), as they come."""
        fx.listen(dispatch_id)
        for index, (record_id, message) in enumerate(outputs):
            dest = message.dest_agent_id or message.metadata.get("stage")
            if dest:
                if not self._task(fx, st, dispatch_id, index, record_id, message, dest):
                    return
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

    def _task(
        self, fx: Effects, st: dict[str, Any], delivery: str, index: int, record_id: str,
        message: Message, dest: str,
    ) -> bool:  # fmt: skip
        """Send one supervisor output to its worker stage; False when the flow failed."""
        if dest not in self.workers:
            field = "destAgentId" if message.dest_agent_id else "metadata.stage"
            fx.fail(
                "UnknownStage",
                f"supervisor output {index} ({field}) names {dest!r}, which is not a "
                f"worker stage of this hive (workers: {', '.join(self.workers) or 'none'})",
                record_id,
            )
            return False
        if delivery not in st["counted"]:
            rounds = st["rounds"] + 1
            if rounds > self.segment.max_turns:
                fx.fail(
                    "MaxTurnsExceeded",
                    f"the supervisor {self.segment.supervisor!r} would start round {rounds} "
                    f"(a delivery after which it emits new tasks); guardrails.maxTurns is "
                    f"{self.segment.max_turns}",
                    record_id,
                )
                return False
            st["rounds"] = rounds
            st["counted"].append(delivery)
        own_id = fx.origin(record_id)
        metadata = {k: v for k, v in carried(message.metadata).items() if k != "stage"}
        task = fx.dispatch(
            dest,
            record_id,
            0,
            message.payload,
            parent=record_id,
            type=message.type if message.type in ("task", "request") else "task",
            metadata=metadata,
            correlation_id=message.correlation_id,
            source=self.segment.supervisor,
            message_id=own_id,
        )
        st["tasks"][task] = own_id
        return True

    def _worker(
        self, fx: Effects, st: dict[str, Any], dispatch_id: str, stage: str, outputs: list[Output]
    ) -> None:
        answer = terminal(outputs)
        if answer is None:
            self.no_answer(fx, dispatch_id, stage)
            return
        own_id = st["tasks"].pop(dispatch_id)
        record_id, message = answer
        metadata = {**fx.metadata, REPLY: REPLY_OPTIONAL}
        fx.dispatch(
            self.segment.supervisor,
            record_id,
            0,
            message.payload,
            parent=record_id,
            type="result",
            metadata=metadata,
            correlation_id=own_id,
            source=stage,
        )
