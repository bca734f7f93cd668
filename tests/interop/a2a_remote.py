"""A remote A2A agent built with the ``a2a-sdk`` server classes, for the a2a-stage test.

``python a2a_remote.py PORT`` serves JSON-RPC at ``http://127.0.0.1:PORT/``. For an input text:
``slow…`` sleeps a minute (a stage timeout cuts it); ``flaky…`` fails its first attempt and
completes the next; anything else streams one working message, then completes with
``remote: <text>``.
"""

import asyncio
import sys

import uvicorn
from a2a.helpers.proto_helpers import new_task, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState
from starlette.applications import Starlette

SEEN: dict[str, int] = {}


class Remote(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        task_id, context_id = context.task_id or "", context.context_id or ""
        if context.current_task is None:
            await event_queue.enqueue_event(
                new_task(task_id, context_id, TaskState.TASK_STATE_SUBMITTED)
            )
        updater = TaskUpdater(event_queue, task_id, context_id)
        await updater.start_work()
        say = lambda t: new_text_message(t, context_id=context_id, task_id=task_id)  # noqa: E731
        if text.startswith("slow"):
            await asyncio.sleep(60)
        if text.startswith("flaky"):
            SEEN[text] = SEEN.get(text, 0) + 1
            if SEEN[text] == 1:
                await updater.failed(say("the first attempt fails"))
                return
        await updater.update_status(TaskState.TASK_STATE_WORKING, say(f"thinking about {text}"))
        await updater.complete(say(f"remote: {text}"))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await updater.cancel()


def main() -> None:
    port = int(sys.argv[1])
    url = f"http://127.0.0.1:{port}/"
    card = AgentCard(name="remote", description="a test agent", version="1",
                     supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC",
                                                          protocol_version="1.0")],
                     capabilities=AgentCapabilities(streaming=True),
                     skills=[AgentSkill(id="echo", name="echo", description="echoes",
                                        tags=["test"])],
                     default_input_modes=["text/plain"],
                     default_output_modes=["text/plain"])  # fmt: skip
    handler = DefaultRequestHandler(Remote(), InMemoryTaskStore(), card)
    app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
