"""pipeline: input → stage 1 → stage 2 → … → final; stage k's answer payload is stage k+1's
input. Partial outputs (``more: true``) are recorded, never forwarded."""

from __future__ import annotations

from typing import Any

from apiary.patterns.base import Pattern
from apiary.patterns.effects import Effects
from apiary.patterns.messages import Output, carried, terminal
from apiary.waggle import Message


class Pipeline(Pattern):
    def start(self, fx: Effects, st: dict[str, Any], message: Message, cause: str) -> None:
        st["index"] = 0
        fx.dispatch(self.segment.stages[0].name, cause, 0, message.payload, parent=cause)

    def outcome(
        self, fx: Effects, st: dict[str, Any], dispatch_id: str, stage: str, outputs: list[Output]
    ) -> None:
        answer = terminal(outputs)
        if answer is None:
            self.no_answer(fx, dispatch_id, stage)
            return
        record_id, message = answer
        following = st["index"] + 1
        if following == len(self.segment.stages):
            fx.finish(message.payload, record_id, carried(message.metadata))
            return
        st["index"] = following
        name = self.segment.stages[following].name
        fx.dispatch(name, record_id, 0, message.payload, parent=record_id)
