"""The interface every pattern implements, on the state of one flow in one segment."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from apiary.patterns.effects import Effects
from apiary.patterns.layout import Segment
from apiary.patterns.messages import Output
from apiary.waggle import Message


class Pattern(ABC):
    """One pattern over one segment's stages.

    ``st`` is this flow's state for the segment: a plain JSON dict the pattern owns and mutates
    in place. A pattern must leave every call either with a dispatch open, or finished
    (``fx.finish``), or failed (``fx.fail``); the engine fails a flow that is left waiting on
    nothing (reason ``Stalled``) so that no input can hang forever.
    """

    def __init__(self, segment: Segment) -> None:
        self.segment = segment

    @abstractmethod
    def start(self, fx: Effects, st: dict[str, Any], message: Message, cause: str) -> None:
        """The segment's input arrived; ``cause`` is its journal id (input or hand-off)."""

    @abstractmethod
    def outcome(
        self, fx: Effects, st: dict[str, Any], dispatch_id: str, stage: str, outputs: list[Output]
    ) -> None:
        """A dispatch of this segment answered with ``outputs`` (already recorded)."""

    def late(
        self, fx: Effects, st: dict[str, Any], dispatch_id: str, stage: str, outputs: list[Output]
    ) -> None:
        """Lines printed for ``dispatch_id`` after its answer, for a dispatch this pattern
        listens to (``fx.listen``); already recorded. Only hierarchical listens."""
        return None

    def no_answer(self, fx: Effects, dispatch_id: str, stage: str) -> None:
        fx.fail(
            "NoOutput",
            f"stage {stage!r} answered dispatch {dispatch_id} with no terminal output "
            "(every output had metadata.more=true, or there was none)",
            dispatch_id,
        )
