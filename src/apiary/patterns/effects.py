"""The side of a step a pattern sees: make dispatches, finish the segment, or fail the flow.

A pattern module never touches the session state's bookkeeping (open dispatches, pending
counts) or builds records itself; it calls these methods, so every pattern gets the same
deterministic ids, timestamps and open-dispatch accounting.
"""

from __future__ import annotations

from typing import Any

from apiary.patterns.ids import make_id
from apiary.patterns.layout import Segment
from apiary.patterns.step import Dispatch, Record, Step
from apiary.waggle import Message


class Effects:
    """Collects what one pattern call does to one flow (one input's journey through the hive)."""

    def __init__(
        self,
        step: Step,
        flow_id: str,
        flow: dict[str, Any],
        segment: Segment,
        timestamp: str,
    ) -> None:
        self.step = step
        self.flow_id = flow_id
        self.flow = flow
        self.segment = segment
        self.timestamp = timestamp
        """Every message made in this step carries the timestamp of what caused the step, so a
        retried step makes byte-identical messages."""
        self.result: tuple[Any, str, dict[str, str]] | None = None
        self.failure: tuple[str, str, str] | None = None
        self.origins: dict[str, str] = {}
        """Record id → the id the agent gave that output (the engine records it under its own)."""
        self.listening: list[str] = []
        """Answered dispatches whose late outputs this flow still routes (:meth:`listen`)."""

    def origin(self, record_id: str) -> str:
        """The id the agent gave the output recorded as ``record_id``."""
        return self.origins.get(record_id, record_id)

    def listen(self, dispatch_id: str) -> None:
        """Route the lines the agent prints for ``dispatch_id`` after its answer (late outputs)
        to this flow's pattern, until the flow ends; the flow is not stalled meanwhile."""
        if dispatch_id not in self.listening:
            self.listening.append(dispatch_id)

    @property
    def pending(self) -> int:
        """Dispatches of this flow's current segment still waiting for an outcome."""
        return int(self.flow["pending"])

    @property
    def metadata(self) -> dict[str, str]:
        """The input's metadata (minus per-message keys): context every stage receives."""
        return dict(self.flow["ctx"]["metadata"])

    def message(
        self,
        payload: Any,
        type: str,
        *,
        id: str,
        metadata: dict[str, str] | None = None,
        correlation_id: str | None = None,
        source: str | None = None,
        dest: str | None = None,
    ) -> Message:
        ctx = self.flow["ctx"]
        return Message(
            payload,
            type,
            id=id,
            metadata=self.metadata if metadata is None else metadata,
            timestamp=self.timestamp,
            session_id=ctx.get("sessionId"),
            traceparent=ctx.get("traceparent"),
            correlation_id=correlation_id,
            source_agent_id=source,
            dest_agent_id=dest,
        )

    def dispatch(
        self,
        stage: str,
        cause: str,
        index: int,
        payload: Any,
        *,
        parent: str,
        type: str = "task",
        metadata: dict[str, str] | None = None,
        correlation_id: str | None = None,
        source: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Send ``payload`` to one replica of ``stage``; the id is ``make_id(cause, stage,
        index)``, and so is the message's unless ``message_id`` is given (an agent's own id).
        Returns the dispatch id."""
        did = make_id(cause, stage, index)
        message = self.message(
            payload,
            type,
            id=message_id or did,
            metadata=metadata,
            correlation_id=self.flow_id if correlation_id is None else correlation_id,
            source=source,
            dest=stage,
        )
        self.step.dispatches.append(Dispatch(did, stage, message, parent))
        self.step.state["open"][did] = {
            "flow": self.flow_id,
            "stage": stage,
            "seg": self.segment.index,
        }
        self.flow["pending"] += 1
        return did

    def note(self, record_id: str, payload: Any, *, parent: str, stage: str | None) -> None:
        """Journal an ``event`` record (something worth seeing in the transcript)."""
        message = self.message(payload, "event", id=record_id, correlation_id=self.flow_id)
        self.step.records.append(Record(record_id, "event", message, stage, parent))

    def finish(self, payload: Any, parent: str, metadata: dict[str, str] | None = None) -> None:
        """This segment has its answer: the hive's final, or the next segment's input."""
        if self.result is None and self.failure is None:
            self.result = (payload, parent, dict(metadata or {}))

    def fail(self, reason: str, message: str, parent: str) -> None:
        """The flow failed: no further dispatches for it; the router marks the input failed."""
        if self.failure is None and self.result is None:
            self.failure = (reason, message, parent)

    @property
    def settled(self) -> bool:
        return self.result is not None or self.failure is not None
