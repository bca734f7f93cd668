"""The Python SDK for Apiary agents: a handler in, a running agent out.

    from apiary.agent import run
    run(lambda msg: msg.payload.upper())

or, with a decorator and extra outputs::

    from apiary.agent import agent

    @agent
    def plan(msg, ctx):
        for step in msg.payload["steps"]:
            ctx.emit({"step": step}, "task", dest_agent_id="worker")
        return "dispatched"

    if __name__ == "__main__":
        plan.run()          # stdin/stdout, Waggle format
        # plan.serve_http() # the http interface (apiary.agent.http)

A handler gets a :class:`~apiary.waggle.Message` (and optionally a :class:`Context`) and returns a
payload, a Message, a list of them, or None. No agent needs this SDK: any program that reads lines
and writes lines is an agent.
"""

from __future__ import annotations

from apiary.agent.comb import Comb, CombError
from apiary.agent.llm import Llm, LlmError
from apiary.agent.runtime import Context, handle, run, wants_context
from apiary.waggle.message import Message

TYPE_CHECKING = False  # see apiary.agent.runtime: typing is not worth 10 ms of every cold start
if TYPE_CHECKING:
    from typing import Any

    from apiary.agent.runtime import Handler


class Agent:
    """A handler wrapped by :func:`agent`: still callable, and runnable over either interface."""

    __slots__ = ("handler",)

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def __call__(self, *args: Any) -> Any:
        return self.handler(*args)

    def run(self) -> None:
        run(self.handler)

    def serve_http(self, **kwargs: Any) -> None:
        from apiary.agent.http import serve

        serve(self.handler, **kwargs)


def agent(handler: Handler) -> Agent:
    """Decorator form of :func:`run`: ``@agent`` then ``handler.run()`` under ``__main__``."""
    return Agent(handler)


__all__ = [
    "Agent",
    "Comb",
    "CombError",
    "Context",
    "Llm",
    "LlmError",
    "Message",
    "agent",
    "handle",
    "run",
    "wants_context",
]
