"""Which sessions a drone holds (:attr:`Keeper.held`), with real agent processes: what its keeper
token may reach (docs/comb.md, "What a drone may reach")."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Awaitable, Callable

import pytest

from apiary.node.keeper import AgentCrashed, HeldSessions, Keeper, ResponseTimeout
from apiary.waggle import Message

Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]

# Answers "more" lines first, then the final one when told to; "hang" never answers; "die" exits.
AGENT = textwrap.dedent(
    """
    import json, sys, threading, time

    lock = threading.Lock()

    def say(out):  # one write per line: print() from two threads can interleave its newline
        with lock:
            sys.stdout.write(json.dumps(out) + "\\n")
            sys.stdout.flush()

    def work(msg):
        p = msg["payload"]
        if p.get("do") == "hang":
            return
        if p.get("do") == "die":
            sys.stdout.flush(); import os; os._exit(3)
        for i in range(p.get("more", 0)):
            out = {"type": "result", "payload": i, "correlationId": msg["id"],
                   "metadata": {"more": "true"}}
            say(out)
        time.sleep(p.get("sleep", 0))
        say({"type": "result", "payload": "done", "correlationId": msg["id"]})

    for line in sys.stdin:
        threading.Thread(target=work, args=(json.loads(line),), daemon=True).start()
    """
)


def test_held_sessions_count_and_match_cell_or_bare_names() -> None:
    held = HeldSessions()
    held.add("c/a")
    held.add("c/a")
    held.add("b")
    assert held.holds("c", "a") and held.holds("c", "b") and not held.holds("other", "a")
    assert not held.holds("c", "c/a") and not held.holds("c", "x")
    held.release("c/a")
    assert held.holds("c", "a")  # one message of a is still in hand
    held.release("c/a")
    held.release("c/a")  # an extra release never goes negative
    assert not held.holds("c", "a") and held.sessions() == ["b"] and len(held) == 1


async def test_a_session_is_held_until_the_final_answer_is_taken(spawn: Spawn) -> None:
    keeper = Keeper({"type": "stdin", "concurrency": 3}, name="c/d")
    await keeper.attach(await spawn(sys.executable, "-c", AGENT))
    await keeper.start()
    slow = asyncio.create_task(
        keeper.deliver(Message({"more": 2, "sleep": 2.0}, session_id="c/a"), timeout=10)
    )
    quick = asyncio.create_task(
        keeper.deliver(Message({"sleep": 0.1}, session_id="c/a"), timeout=10)
    )
    other = asyncio.create_task(
        keeper.deliver(Message({"sleep": 0.1}), timeout=10, session="c/b")  # the dispatch's word
    )
    await asyncio.sleep(0.05)
    assert keeper.held.sessions() == ["c/a", "c/b"]
    await asyncio.gather(quick, other)
    # the "more" lines of the slow message were emitted, its final answer is not in yet (it
    # sleeps 2 s, the quick ones 0.1 s: room for a loaded machine)
    assert keeper.held.holds("c", "a") and not keeper.held.holds("c", "b")
    outputs = await slow
    assert [o.payload for o in outputs] == [0, 1, "done"]
    assert len(keeper.held) == 0
    await keeper.stop()


async def test_a_timed_out_or_crashed_delivery_is_no_longer_held(spawn: Spawn) -> None:
    keeper = Keeper({"type": "stdin", "concurrency": 2}, name="c/d")
    await keeper.attach(await spawn(sys.executable, "-c", AGENT))
    await keeper.start()
    with pytest.raises(ResponseTimeout):
        await keeper.deliver(Message({"do": "hang"}, session_id="c/a"), timeout=0.2)
    assert len(keeper.held) == 0
    abandoned = asyncio.create_task(
        keeper.deliver(Message({"do": "hang"}, session_id="c/a"), timeout=10)
    )
    await asyncio.sleep(0.05)
    assert keeper.held.holds("c", "a")
    abandoned.cancel()  # the worker gave up on it (drone stopping)
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    assert len(keeper.held) == 0
    with pytest.raises(AgentCrashed):
        await keeper.deliver(Message({"do": "die"}, session_id="c/a"), timeout=10)
    assert len(keeper.held) == 0
    await keeper.stop()


async def until(done: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``done`` until it holds (a timer or a subprocess may be late on a loaded machine)."""
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.02)


def _optional(payload: object, session: str) -> Message:
    return Message(payload, "result", session_id=session, metadata={"reply": "optional"})


async def test_a_reply_optional_message_is_held_until_the_agent_prints_for_it(
    spawn: Spawn,
) -> None:
    """A supervisor handed a worker's result (``reply: optional``) still works on it after the
    exchange returned: its session stays reachable (the Comb) until it prints for it, and the
    lines it printed for earlier results of the session release those too."""
    keeper = Keeper({"type": "stdin", "concurrency": 4}, name="c/d")
    late: list[Message] = []
    keeper.on_late(lambda _msg, out: late.append(out))
    await keeper.attach(await spawn(sys.executable, "-c", AGENT))
    await keeper.start()
    first = _optional({"do": "hang"}, "c/a")  # prints nothing for it
    assert await keeper.deliver(first, timeout=10) == []
    other = _optional({"do": "hang"}, "c/b")
    assert await keeper.deliver(other, timeout=10) == []
    assert keeper.held.holds("c", "a") and keeper.held.holds("c", "b")
    assert await keeper.deliver(_optional({"sleep": 0.2}, "c/a"), timeout=10) == []
    await asyncio.sleep(0.05)
    assert keeper.held.holds("c", "a")  # still working on it
    await until(lambda: bool(late))
    assert [o.payload for o in late] == ["done"]
    assert not keeper.held.holds("c", "a")  # both results of session a are done with
    assert keeper.held.holds("c", "b")  # another session's result is not
    await keeper.stop()
    assert len(keeper.held) == 0  # the process went: nothing is in its hands


async def test_a_reply_optional_hold_ends_with_the_delivery_timeout(spawn: Spawn) -> None:
    keeper = Keeper({"type": "stdin"}, name="c/d")
    await keeper.attach(await spawn(sys.executable, "-c", AGENT))
    await keeper.start()
    assert await keeper.deliver(_optional({"do": "hang"}, "c/a"), timeout=0.2) == []
    assert keeper.held.holds("c", "a")
    await until(lambda: len(keeper.held) == 0)  # 0.2 s after the delivery, late on a loaded box
    await keeper.stop()
