"""What a drone's worker is doing right now, so that it can stop doing it.

Two things stop a message the agent holds:

* **its session was closed** — the router sends a Cancel to every drone of the stage
  (router/cancel.py). The worker forgets the message (its delivery is acked: the router has
  ended the flow, an answer would be a duplicate), remembers the session so that its dispatches
  still queued are dropped unread, and tells the agent on the Waggle channel: an ``event`` with
  ``metadata.cancel: "true"`` and ``correlationId`` = the message's id (``reply: optional``: no
  answer is awaited; one that comes is kept with the unsolicited);
* **the drone is stopping** and the grace period is over — the message is handed back to the
  bus (nak) for another replica, as Kubernetes does after ``terminationGracePeriodSeconds``.

Both make the keeper stop waiting for the answer; :class:`InFlight` says which, so the worker
settles the delivery the right way.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from apiary.waggle import REPLY, REPLY_OPTIONAL, Message

if TYPE_CHECKING:
    from apiary.node.keeper import Keeper

SESSIONS_KEEP = 4096
"""Closed sessions remembered, so that their queued dispatches are dropped unread."""

CANCELLED = "cancelled"
STOPPING = "stopping"


class InFlight:
    """Dispatch id → (session, message) of what the agent holds, and closed sessions. Cancelling
    goes through the keeper (:meth:`Keeper.cancel`: the delivery raises DeliveryCancelled), so a
    delivery costs no task of its own."""

    def __init__(self, keeper: Keeper) -> None:
        self.keeper = keeper
        self._held: dict[str, tuple[str, Message]] = {}
        self._why: dict[str, str] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()

    def hold(self, dispatch: str, session: str, message: Message) -> None:
        self._held[dispatch] = (session, message)

    def release(self, dispatch: str) -> str | None:
        """Forget ``dispatch``; why it was cancelled (CANCELLED, STOPPING) or None."""
        self._held.pop(dispatch, None)
        return self._why.pop(dispatch, None)

    def closed(self, session: str) -> bool:
        return session in self._closed

    def close_session(self, session: str, dispatches: list[str]) -> list[Message]:
        """The session was closed: cancel what of it is held; returns the messages to notify."""
        self._closed[session] = None
        self._closed.move_to_end(session)
        if len(self._closed) > SESSIONS_KEEP:
            self._closed.popitem(last=False)
        wanted = set(dispatches)
        hit = [
            d for d, (s, _) in self._held.items() if s == session and (d in wanted or not wanted)
        ]
        return [m for m in (self._cancel(d, CANCELLED) for d in hit) if m is not None]

    def stop_all(self) -> int:
        """The grace period is over: hand back everything held."""
        return sum(self._cancel(d, STOPPING) is not None for d in list(self._held))

    def _cancel(self, dispatch: str, why: str) -> Message | None:
        _, message = self._held[dispatch]
        if not self.keeper.cancel(message):
            return None  # answered meanwhile
        self._why[dispatch] = why
        return message


def cancel_notice(message: Message, reason: str, text: str) -> Message:
    """What the agent holding ``message`` is told when its session was closed."""
    return Message(
        {"reason": reason, "message": text},
        "event",
        metadata={"cancel": "true", REPLY: REPLY_OPTIONAL},
        correlation_id=message.id,
        session_id=message.session_id,
        traceparent=message.traceparent,
    )
