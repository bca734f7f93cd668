"""Late outputs over ``stdin``: every line an agent prints is kept — lines after a message's answer
go to the late hook, attributed by ``correlationId`` or to the last message written — and a
``reply: optional`` message is written without waiting for an answer (real agent processes)."""

from __future__ import annotations

import asyncio

from test_keeper_stdin import Spawn, script

from apiary.node.keeper import Keeper
from apiary.waggle import REPLY, REPLY_OPTIONAL, Message

# Prints three lines per message: two tasks, then one more naming the message it answers.
CHATTY = r"""
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    for i in range(2):
        print(json.dumps({"type": "task", "payload": f"{m['payload']}-{i}"}), flush=True)
    print(json.dumps({"type": "result", "payload": "done", "correlationId": m["id"]}), flush=True)
"""

# Says nothing to a reply-optional message; answers the third message it has seen.
QUIET = r"""
import json, sys
seen = 0
for line in sys.stdin:
    seen += 1
    if seen == 3:
        print(json.dumps({"type": "result", "payload": f"after {seen}"}), flush=True)
"""


async def until(predicate: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_lines_after_the_answer_are_late_outputs_not_dropped(spawn: Spawn) -> None:
    keeper = Keeper({"type": "stdin"}, name="chatty-0")
    late: list[tuple[str, Message]] = []
    keeper.on_late(lambda owner, out: late.append((owner.id, out)))
    await keeper.attach(await spawn(*script(CHATTY)))
    first = Message("a", "task", id="m-a")
    outputs = await keeper.deliver(first, timeout=5)
    assert [o.payload for o in outputs] == ["a-0"]  # a line ends the turn...
    await until(lambda: len(late) == 2)
    # ... and the rest still arrive, attributed to the message they answer.
    assert [(owner, o.payload) for owner, o in late] == [("m-a", "a-1"), ("m-a", "done")]
    assert all(o.correlation_id == "m-a" for _, o in late)
    assert keeper.stats.unsolicited == 0
    await keeper.stop()


async def test_a_reply_optional_message_is_not_waited_for(spawn: Spawn) -> None:
    keeper = Keeper({"type": "stdin"}, name="quiet-0")
    late: list[tuple[str, Message]] = []
    keeper.on_late(lambda owner, out: late.append((owner.id, out)))
    await keeper.attach(await spawn(*script(QUIET)))
    for i in range(3):
        notice = Message(i, "result", id=f"r-{i}", metadata={REPLY: REPLY_OPTIONAL})
        assert await asyncio.wait_for(keeper.deliver(notice, timeout=5), 1) == []
    await until(lambda: late)
    ((owner, out),) = late
    assert (owner, out.payload, out.correlation_id) == ("r-2", "after 3", "r-2")
    assert keeper.stats.in_flight == 0 and len(keeper.held) == 0
    await keeper.stop()


async def test_without_a_late_hook_lines_are_kept_as_unsolicited(spawn: Spawn) -> None:
    keeper = Keeper({"type": "stdin"}, name="chatty-1")
    await keeper.attach(await spawn(*script(CHATTY)))
    await keeper.deliver(Message("b", "task", id="m-b"), timeout=5)
    await until(lambda: keeper.stats.unsolicited == 2)
    assert [m.payload for m in keeper.unsolicited] == ["b-1", "done"]
    await keeper.stop()


async def test_cancel_stops_waiting_and_a_late_answer_is_kept_aside(spawn: Spawn) -> None:
    from apiary.node.keeper import DeliveryCancelled

    # Answers each message 0.3 s after reading it.
    slow = (
        "import sys, time\nfor line in sys.stdin:\n    time.sleep(0.3); print('late', flush=True)"
    )
    keeper = Keeper({"type": "stdin", "format": "text"}, name="slow-0")
    await keeper.attach(await spawn(*script(slow)))
    msg = Message("x", "task", id="m-x")
    answer = asyncio.ensure_future(keeper.deliver(msg, timeout=5))
    await asyncio.sleep(0.05)
    assert keeper.cancel(msg) and not keeper.cancel(Message("y", "task", id="m-y"))
    try:
        await answer
        raise AssertionError("the delivery was not cancelled")
    except DeliveryCancelled:
        pass
    assert keeper.stats.in_flight == 0 and len(keeper.held) == 0
    await until(lambda: keeper.stats.unsolicited == 1)  # the zombie turn took the late line
    assert await keeper.deliver(Message("z", "task", id="m-z"), timeout=5) != []
    await keeper.stop()
