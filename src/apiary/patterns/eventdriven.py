"""event-driven: choreography. Events go to every stage whose ``filter`` matches; each answer
becomes an event again, until nothing is open any more.

* The input is the first event, with its own type (a ``result`` counts as ``event``: that is the
  type the keeper gives an answer the agent did not type itself) and ``metadata.hops = "0"``.
* Each output that is not partial becomes an event with ``metadata.hops`` = its cause's + 1 and
  the agent's metadata (the engine's ``hops`` wins); it goes to every matching stage, in stage
  order, except the stage that produced it (an agent reacting to its own output is a loop, not
  a conversation: seed 09's lone unfiltered subscriber would otherwise echo itself 8 times). An
  event whose hops reach ``maxHops`` is recorded, noted (``HopLimitReached``) when some
  stage would have taken it, and routed no further.
* When the flow has nothing open, the final payload is every output of the flow in the order
  recorded: ``[{"stage", "type", "payload"}, ...]`` (an input no stage matches → ``[]``).
"""

from __future__ import annotations

from typing import Any

from apiary.patterns.base import Pattern
from apiary.patterns.effects import Effects
from apiary.patterns.ids import make_id
from apiary.patterns.messages import Output, carried
from apiary.waggle import Message


def event_type(message: Message) -> str:
    return "event" if message.type == "result" else message.type


class EventDriven(Pattern):
    def start(self, fx: Effects, st: dict[str, Any], message: Message, cause: str) -> None:
        st.update(events=[], hops={})
        metadata = {**carried(message.metadata), "hops": "0"}
        self._route(fx, st, cause, event_type(message), message.payload, metadata, 0)
        if fx.pending == 0:
            fx.finish([], cause, {"events": "0"})

    def outcome(
        self, fx: Effects, st: dict[str, Any], dispatch_id: str, stage: str, outputs: list[Output]
    ) -> None:
        hops = st["hops"].pop(dispatch_id) + 1
        last = dispatch_id
        for record_id, message in outputs:
            last = record_id
            kind = event_type(message)
            st["events"].append({"stage": stage, "type": kind, "payload": message.payload})
            if message.more:
                continue
            metadata = {**carried(message.metadata), "hops": str(hops)}
            if hops < self.segment.max_hops:
                self._route(fx, st, record_id, kind, message.payload, metadata, hops, stage)
            elif any(s.matches(kind, metadata) for s in self.segment.stages if s.name != stage):
                note = {
                    "reason": "HopLimitReached",
                    "message": f"event {record_id} reached maxHops {self.segment.max_hops}; "
                    "recorded, not routed",
                    "event": record_id,
                    "hops": hops,
                }
                fx.note(make_id(record_id, "#hop-limit", 0), note, parent=record_id, stage=stage)
        if fx.pending == 0:
            fx.finish(list(st["events"]), last, {"events": str(len(st["events"]))})

    def _route(
        self,
        fx: Effects,
        st: dict[str, Any],
        cause: str,
        kind: str,
        payload: Any,
        metadata: dict[str, str],
        hops: int,
        producer: str | None = None,
    ) -> None:
        for stage in self.segment.stages:
            if stage.name != producer and stage.matches(kind, metadata):
                did = fx.dispatch(
                    stage.name,
                    cause,
                    0,
                    payload,
                    parent=cause,
                    type=kind,
                    metadata=dict(metadata),
                    correlation_id=cause,
                )
                st["hops"][did] = hops
