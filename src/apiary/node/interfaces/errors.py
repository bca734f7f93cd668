"""Why a delivery to an agent failed; the router decides from the class what to do next.

``AgentCrashed`` and ``ResponseTimeout`` are retryable elsewhere (the message is intact, the drone
is not); ``AgentProtocolError`` means the agent answered but the answer is unusable (retry per
policy, then dead-letter); ``AgentNotReady`` means nothing was sent at all.
"""

from __future__ import annotations

from apiary.errors import ApiaryError, Unavailable


class AgentCrashed(Unavailable):
    """The agent process died (or was replaced) while the message was in flight."""

    code = "AgentCrashed"

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class AgentNotReady(Unavailable):
    """No process is attached yet, or an http agent has not passed its health check."""

    code = "AgentNotReady"


class ResponseTimeout(ApiaryError):
    """The agent did not finish its turn within the response timeout."""

    status = 504
    code = "ResponseTimeout"


class AgentProtocolError(ApiaryError):
    """The agent answered with something the keeper cannot use (bad Waggle, HTTP 5xx, …)."""

    status = 502
    code = "AgentProtocolError"


class DeliveryCancelled(ApiaryError):
    """The keeper stopped waiting for the agent's answer: its session was closed, or the drone
    is stopping (:meth:`~apiary.node.keeper.Keeper.cancel`)."""

    status = 409
    code = "DeliveryCancelled"
