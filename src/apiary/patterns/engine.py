"""The pattern engine: the pure brain of the router (docs/sessions.md, docs/patterns.md).

The router calls :meth:`Engine.on_input` when a client's input is accepted and
:meth:`Engine.on_outcome` when a drone reports what it made of a dispatch; each returns a
:class:`Step` — the new state document plus the dispatches to publish and the records to
journal — which the router commits atomically before publishing. No I/O, no clock, no
randomness: the same state and event always give the same step, ids included, so a step retried
after a version conflict, or replayed by another replica, is a no-op for the journal and the bus.
"""

from __future__ import annotations

from typing import Any

from apiary.patterns.base import Pattern
from apiary.patterns.effects import Effects
from apiary.patterns.eventdriven import EventDriven
from apiary.patterns.hierarchical import Hierarchical
from apiary.patterns.ids import make_id
from apiary.patterns.layout import Segment, layout
from apiary.patterns.messages import Output, carried, describe, recorded
from apiary.patterns.pipeline import Pipeline
from apiary.patterns.state import begin, clone, forget_heard, normalize, remember
from apiary.patterns.step import Record, Step
from apiary.patterns.swarm import Swarm
from apiary.waggle import Message

PATTERN_TYPES: dict[str, type[Pattern]] = {
    "pipeline": Pipeline,
    "hierarchical": Hierarchical,
    "swarm": Swarm,
    "event-driven": EventDriven,
}


class Engine:
    """Routes the messages of one Hive. Build one per hive generation and reuse it: it holds
    only the hive's layout, never session state."""

    def __init__(self, hive: dict[str, Any]) -> None:
        """Raises :class:`apiary.errors.Invalid` naming each field it cannot route by."""
        self.segments: list[Segment] = layout(hive)
        self.patterns: list[Pattern] = [PATTERN_TYPES[s.pattern](s) for s in self.segments]

    def stages(self) -> list[str]:
        """Every stage name, as the controllers label the drones (``apiary.io/stage``)."""
        return [name for segment in self.segments for name in segment.stage_names()]

    # -- queries ----------------------------------------------------------------------------------

    def open_dispatches(self, state: dict[str, Any]) -> list[str]:
        """Dispatches still waiting for an outcome, oldest first (what a recovery sweep
        republishes)."""
        return list(normalize(state)["open"])

    def quiescent(self, state: dict[str, Any]) -> bool:
        """Nothing in flight: every input has ended and no dispatch is open."""
        current = normalize(state)
        return not current["open"] and not current["flows"]

    def input_status(self, state: dict[str, Any], input_id: str) -> str | None:
        """``active``, ``completed``, ``failed``, or None for an input the session never saw."""
        current = normalize(state)
        if input_id in current["flows"]:
            return "active"
        done = current["done"].get(input_id)
        return str(done) if done is not None else None

    def late_gap(self, state: dict[str, Any], dispatch_id: str, offset: int) -> bool:
        """Whether late outputs starting at ``offset`` would skip earlier ones not yet seen (the
        router takes outcomes concurrently; a flow must see an agent's lines in order)."""
        heard = (normalize(state).get("heard") or {}).get(dispatch_id)
        return heard is not None and offset > int(heard["next"])

    # -- steps ------------------------------------------------------------------------------------

    def on_input(self, state: dict[str, Any], message: Message) -> Step:
        """A client's input (its id is the input's journal id). A re-sent input is a no-op."""
        current = normalize(state)
        input_id = message.id
        if (
            input_id in current["flows"]
            or input_id in current["done"]
            or input_id in current["open"]
        ):
            return Step(current)
        step = Step(begin(current))
        flow: dict[str, Any] = {
            "seg": 0,
            "pending": 0,
            "ctx": {
                "sessionId": message.session_id,
                "traceparent": message.traceparent,
                "metadata": carried(message.metadata),
                "timestamp": message.timestamp,
            },
            "s": {},
        }
        step.state["flows"][input_id] = flow
        fx = Effects(step, input_id, flow, self.segments[0], message.timestamp)
        self.patterns[0].start(fx, flow["s"], message, input_id)
        self._settle(step, fx, input_id, None)
        return step

    def on_outcome(
        self,
        state: dict[str, Any],
        dispatch_id: str,
        stage: str,
        outputs: list[Message],
        error: tuple[str, str] | None = None,
    ) -> Step:
        """What a drone made of a dispatch: its outputs, or an error (reason, message).

        An outcome for a dispatch that is not open (a duplicate, or a straggler of a failed
        flow) returns a Step with nothing to do. ``stage`` is informational: the stage the
        dispatch was sent to is taken from the state.
        """
        current = normalize(state)
        entry = current["open"].get(dispatch_id)
        if entry is None:
            return Step(current)
        for index, output in enumerate(outputs):
            if not isinstance(output, Message):
                raise TypeError(f"outputs[{index}] must be a waggle Message, not {output!r}")
        step = Step(begin(current))
        del step.state["open"][dispatch_id]
        stage = entry["stage"]
        received, origins = self._record(step, dispatch_id, stage, 0, outputs)
        flow_id = entry["flow"]
        flow = step.state["flows"].get(flow_id)
        if flow is None or flow["seg"] != entry["seg"]:
            return step  # the flow (or this segment) already has its answer: record only
        flow = step.state["flows"][flow_id] = clone(flow)
        flow["pending"] -= 1
        timestamp = outputs[-1].timestamp if outputs else flow["ctx"]["timestamp"]
        fx = Effects(step, flow_id, flow, self.segments[flow["seg"]], timestamp)
        fx.origins = origins
        agent_error = next(((r, m) for r, m in received if m.type == "error"), None)
        if error is not None:
            reason, text = error
            fx.fail(str(reason), str(text), dispatch_id)
        elif agent_error is not None:
            record_id, message = agent_error
            fx.fail(
                "AgentError",
                f"stage {stage!r} answered with an error: {describe(message.payload)}",
                record_id,
            )
        else:
            self.patterns[flow["seg"]].outcome(fx, flow["s"], dispatch_id, stage, received)
        self._hear(step, fx, len(outputs))
        self._settle(step, fx, dispatch_id, stage)
        return step

    def on_late(
        self,
        state: dict[str, Any],
        dispatch_id: str,
        stage: str,
        offset: int,
        outputs: list[Message],
    ) -> Step:
        """Lines an agent printed for ``dispatch_id`` after its answer: outputs ``offset``… of
        that dispatch (docs/waggle.md, "Turns"). They are always recorded; a flow that listens
        to the dispatch (a hierarchical supervisor's) routes them too. An output seen before (a
        redelivered outcome) is skipped, so the step is a no-op the second time."""
        current = normalize(state)
        heard = (current.get("heard") or {}).get(dispatch_id)
        start = max(offset, int(heard["next"])) if heard is not None else offset
        fresh = outputs[start - offset :]
        step = Step(begin(current))
        if not fresh:
            return step
        received, origins = self._record(step, dispatch_id, stage, start, fresh)
        if heard is None:
            return step  # nobody listens (a pipeline stage's surplus line): recorded only
        flow_id = heard["flow"]
        step.state["heard"][dispatch_id] = {**heard, "next": start + len(fresh)}
        flow = step.state["flows"].get(flow_id)
        if flow is None or flow["seg"] != heard["seg"]:  # pragma: no cover - forgotten at the end
            forget_heard(step.state, flow_id)
            return step
        flow = step.state["flows"][flow_id] = clone(flow)
        fx = Effects(step, flow_id, flow, self.segments[flow["seg"]], fresh[-1].timestamp)
        fx.origins = origins
        self.patterns[flow["seg"]].late(fx, flow["s"], dispatch_id, stage, received)
        self._hear(step, fx, start + len(fresh))
        self._settle(step, fx, dispatch_id, stage)
        return step

    def cancel(self, state: dict[str, Any], reason: str, text: str) -> Step:
        """End every flow of the session now (it was closed): each open dispatch and each input
        still in progress gets an ``error`` record ``{"reason", "message"}`` — which answers the
        dispatch for the journal, so no sweep sends it again — and nothing more is dispatched.
        Outcomes that come later are duplicates."""
        current = normalize(state)
        step = Step(begin(current))
        payload = {"reason": reason, "message": text}
        for dispatch_id, entry in current["open"].items():
            record_id = make_id(dispatch_id, "#cancelled", 0)
            message = Message(payload, "error", id=record_id, correlation_id=entry["flow"])
            step.records.append(Record(record_id, "error", message, entry["stage"], dispatch_id))
        for flow_id, flow in current["flows"].items():
            record_id = make_id(flow_id, "#cancelled", 0)
            message = Message(payload, "error", id=record_id, correlation_id=flow_id,
                              timestamp=flow["ctx"]["timestamp"],
                              session_id=flow["ctx"].get("sessionId"))  # fmt: skip
            step.records.append(Record(record_id, "error", message, None, flow_id))
            remember(step.state, flow_id, "failed")
        step.state["open"], step.state["flows"] = {}, {}
        step.state.pop("heard", None)
        if current["flows"]:
            step.failure = (reason, text)
        return step

    @staticmethod
    def _record(
        step: Step, dispatch_id: str, stage: str, first: int, outputs: list[Message]
    ) -> tuple[list[Output], dict[str, str]]:
        """Journal records for outputs ``first``… of a dispatch, under the engine's ids; with
        the ids the agent gave them."""
        received: list[Output] = []
        origins: dict[str, str] = {}
        for index, output in enumerate(outputs, first):
            record_id = make_id(dispatch_id, "out", index)
            message = recorded(output, record_id, dispatch_id)
            step.records.append(Record(record_id, "output", message, stage, dispatch_id))
            received.append((record_id, message))
            origins[record_id] = output.id
        return received, origins

    @staticmethod
    def _hear(step: Step, fx: Effects, next_index: int) -> None:
        """Keep (or start) listening to the dispatches the pattern asked for."""
        if not fx.listening or fx.settled:
            return
        heard = step.state.setdefault("heard", {})
        for dispatch_id in fx.listening:
            known = heard.get(dispatch_id)
            heard[dispatch_id] = {
                "flow": fx.flow_id,
                "seg": fx.flow["seg"],
                "next": max(next_index, int(known["next"])) if known else next_index,
            }

    # -- the end of a step ------------------------------------------------------------------------

    def _settle(self, step: Step, fx: Effects, trigger: str, stage: str | None) -> None:
        """Turn a pattern's result into a final or the next segment's start, a failure into an
        error record; and fail a flow left waiting on nothing."""
        while True:
            if fx.failure is not None:
                self._fail(step, fx, stage)
                return
            if fx.result is None:
                if fx.pending == 0 and not self._listened(step.state, fx.flow_id):
                    where = f"stage {stage!r}" if stage else "the input"
                    fx.fail("Stalled", f"after {where} nothing is left to wait for", trigger)
                    continue
                return
            payload, parent, metadata = fx.result
            flow_id, flow = fx.flow_id, fx.flow
            following = flow["seg"] + 1
            if following == len(self.segments):
                record_id = make_id(flow_id, "#final", 0)
                message = fx.message(
                    payload, "result", id=record_id, metadata=metadata, correlation_id=flow_id
                )
                final = Record(record_id, "final", message, None, flow_id)
                step.records.append(final)
                step.finals.append(final)
                del step.state["flows"][flow_id]
                forget_heard(step.state, flow_id)
                remember(step.state, flow_id, "completed")
                return
            segment = self.segments[following]
            record_id = make_id(flow_id, "#segment", following)
            handoff_meta = {**metadata, "fromSegment": str(self.segments[following - 1].name)}
            message = fx.message(
                payload, "result", id=record_id, metadata=handoff_meta, correlation_id=flow_id
            )
            step.records.append(Record(record_id, "event", message, None, parent))
            forget_heard(step.state, flow_id)
            flow.update(seg=following, pending=0, s={})
            fx = Effects(step, flow_id, flow, segment, fx.timestamp)
            self.patterns[following].start(fx, flow["s"], message, record_id)
            trigger, stage = record_id, None

    @staticmethod
    def _listened(state: dict[str, Any], flow_id: str) -> bool:
        """Whether the flow waits on an agent's late lines rather than on a dispatch."""
        return any(e["flow"] == flow_id for e in (state.get("heard") or {}).values())

    @staticmethod
    def _fail(step: Step, fx: Effects, stage: str | None) -> None:
        assert fx.failure is not None
        reason, text, parent = fx.failure
        flow_id = fx.flow_id
        record_id = make_id(parent, "#error", 0)
        payload = {"reason": reason, "message": text}
        message = fx.message(payload, "error", id=record_id, correlation_id=flow_id)
        step.records.append(Record(record_id, "error", message, stage, parent))
        step.failure = (reason, text)
        opened = step.state["open"]
        for dispatch_id in [d for d, e in opened.items() if e["flow"] == flow_id]:
            del opened[dispatch_id]
        step.dispatches = [d for d in step.dispatches if d.id in opened]
        del step.state["flows"][flow_id]
        forget_heard(step.state, flow_id)
        remember(step.state, flow_id, "failed")
