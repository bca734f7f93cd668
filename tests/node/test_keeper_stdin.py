"""The keeper over ``stdin`` + ``format: waggle`` with real agent processes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from apiary.node.keeper import (
    AgentCrashed,
    AgentNotReady,
    AgentProtocolError,
    Keeper,
    ResponseTimeout,
)
from apiary.waggle import Message

AGENTS = Path(__file__).resolve().parents[2] / "examples" / "agents"
PY = sys.executable
Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


def agent(name: str) -> tuple[str, str]:
    return (PY, str(AGENTS / name))


def script(code: str) -> tuple[str, str, str]:
    return (PY, "-c", code)


async def test_echo_agent_answers_each_message(spawn: Spawn) -> None:
    keeper = Keeper({"type": "stdin"}, name="echo-0")
    assert not keeper.ready
    await keeper.attach(await spawn(*agent("echo.py")))
    await keeper.start()
    assert keeper.ready
    for i in range(20):
        msg = Message({"i": i}, session_id="s1")
        [out] = await keeper.deliver(msg, timeout=10)
        assert (out.type, out.payload, out.correlation_id, out.session_id) == (
            "result",
            {"i": i},
            msg.id,
            "s1",
        )
    stats = keeper.stats
    assert (stats.delivered, stats.failed, stats.in_flight) == (20, 0, 0)
    assert sum(stats.latency_counts) == 20 and stats.latency_sum > 0
    assert stats.quantile(0.5) is not None
    await keeper.stop()
    assert not keeper.ready


async def test_more_flag_keeps_the_turn_open(spawn: Spawn) -> None:
    code = (
        "from apiary.agent import run\n"
        "def h(msg, ctx):\n"
        "    for w in msg.payload.split():\n"
        "        ctx.emit(w, 'task', dest_agent_id='worker')\n"
        "    return 'dispatched'\n"
        "run(h)\n"
    )
    keeper = Keeper()
    await keeper.attach(await spawn(*script(code)))
    msg = Message("a b c")
    outs = await keeper.deliver(msg, timeout=10)
    assert [o.payload for o in outs] == ["a", "b", "c", "dispatched"]
    assert [o.more for o in outs] == [True, True, True, False]
    assert all(o.correlation_id == msg.id for o in outs)
    assert [o.dest_agent_id for o in outs[:3]] == ["worker"] * 3
    [again] = await keeper.deliver(Message(""), timeout=10)  # nothing emitted: still one answer
    assert again.payload == "dispatched"


async def test_concurrent_messages_answered_out_of_order(spawn: Spawn) -> None:
    # Reads three messages, then answers them newest first, correlating each answer.
    code = (
        "import sys, json\n"
        "while True:\n"
        "    batch = [json.loads(sys.stdin.readline()) for _ in range(3)]\n"
        "    for m in reversed(batch):\n"
        "        print(json.dumps({'type': 'result', 'payload': m['payload'] * 10,"
        " 'correlationId': m['id']}), flush=True)\n"
    )
    keeper = Keeper({"type": "stdin", "concurrency": 3})
    await keeper.attach(await spawn(*script(code)))
    for _ in range(3):
        msgs = [Message(i) for i in range(1, 4)]
        results = await asyncio.gather(*(keeper.deliver(m, timeout=10) for m in msgs))
        assert [r[0].payload for r in results] == [10, 20, 30]
        assert [r[0].correlation_id for r in results] == [m.id for m in msgs]
    assert keeper.stats.delivered == 9


async def test_concurrency_is_bounded_by_the_semaphore(spawn: Spawn) -> None:
    keeper = Keeper({"type": "stdin", "concurrency": 2})
    await keeper.attach(await spawn(*agent("slow.py"), env={"SLOW_SECONDS": "0.2"}))
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(keeper.stats.in_flight)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        results = await asyncio.gather(*(keeper.deliver(Message(i), timeout=10) for i in range(4)))
    finally:
        watcher.cancel()
    assert [r[0].payload for r in results] == [0, 1, 2, 3]
    assert max(seen) == 2


async def test_uncorrelated_lines_answer_the_oldest_message(spawn: Spawn) -> None:
    # The seed-03 shell loop under the default waggle format: its line is not JSON, so it is
    # a string payload answering the (only) open message.
    loop = 'while IFS= read -r line; do echo "Echo: $line"; done'
    keeper = Keeper({"type": "stdin", "format": "waggle"})
    await keeper.attach(await spawn("/bin/sh", "-c", loop))
    msg = Message("hi")
    [out] = await keeper.deliver(msg, timeout=10)
    assert isinstance(out.payload, str) and out.payload.startswith("Echo: {")
    assert msg.id in out.payload and out.correlation_id == msg.id


async def test_timeout_then_the_late_answer_is_not_taken_for_the_next(spawn: Spawn) -> None:
    late: list[Message] = []
    keeper = Keeper(on_unsolicited=late.append)
    await keeper.attach(
        await spawn("/bin/sh", "-c", 'while read -r l; do sleep 0.4; echo "$l"; done')
    )
    first = Message("first")
    with pytest.raises(ResponseTimeout):
        await keeper.deliver(first, timeout=0.1)
    assert keeper.stats.timeouts == 1 and keeper.stats.in_flight == 0
    second = Message("second")
    [out] = await keeper.deliver(second, timeout=5)
    # The shell echoes the Waggle line itself, which is taken as is: the message comes back.
    assert out.correlation_id == second.id and out.payload == "second"
    assert [m.payload for m in late] == ["first"]
    assert list(keeper.unsolicited) == late and keeper.stats.unsolicited == 1


async def test_a_cancelled_caller_does_not_shift_answers(spawn: Spawn) -> None:
    keeper = Keeper()
    await keeper.attach(await spawn(*agent("slow.py"), env={"SLOW_SECONDS": "0.3"}))
    task = asyncio.create_task(keeper.deliver(Message("abandoned")))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [out] = await keeper.deliver(Message("kept"), timeout=5)
    assert out.payload == "kept"
    assert [m.payload for m in keeper.unsolicited] == ["abandoned"]


async def test_crash_fails_in_flight_then_a_new_process_takes_over(spawn: Spawn) -> None:
    keeper = Keeper({"type": "stdin", "concurrency": 4})
    await keeper.attach(await spawn(*agent("crash.py"), env={"CRASH_AFTER": "1"}))
    [out] = await keeper.deliver(Message("one"), timeout=10)
    assert out.payload == "one"
    results = await asyncio.gather(
        *(keeper.deliver(Message(i), timeout=10) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, AgentCrashed) for r in results), results
    assert any(r.exit_code == 3 for r in results if isinstance(r, AgentCrashed))
    assert not keeper.ready and keeper.stats.crashes == 3
    with pytest.raises(AgentCrashed):
        await keeper.deliver(Message("while dead"), timeout=1)

    await keeper.attach(await spawn(*agent("echo.py")))
    assert keeper.ready
    [out] = await keeper.deliver(Message("after restart"), timeout=10)
    assert out.payload == "after restart"


async def test_attach_replaces_a_live_process_and_fails_its_in_flight(spawn: Spawn) -> None:
    keeper = Keeper()
    await keeper.attach(await spawn(*agent("slow.py"), env={"SLOW_SECONDS": "5"}))
    pending = asyncio.create_task(keeper.deliver(Message("stuck")))
    await asyncio.sleep(0.05)
    await keeper.attach(await spawn(*agent("upper.py")))
    with pytest.raises(AgentCrashed, match="replaced"):
        await pending
    [out] = await keeper.deliver(Message("fresh"), timeout=10)
    assert out.payload == "FRESH"


async def test_garbage_output_is_handled_and_the_keeper_goes_on(spawn: Spawn) -> None:
    code = r"""
import sys
out = sys.stdout.buffer
out.write(b"booting, not a protocol line\n"); out.flush()
replies = [
    b"\n\n{not json at all",
    b"\xff\xfe binary",
    b'{"type": "shout", "payload": 1}',
    b"X" * 5000,
    b'{"type": "result", "payload": "fine"}',
]
for line, reply in zip(sys.stdin.buffer, replies):
    out.write(reply + b"\n"); out.flush()
"""
    banner: list[Message] = []
    keeper = Keeper(on_unsolicited=banner.append, max_line_bytes=1000)
    await keeper.attach(await spawn(*script(code)))
    async with asyncio.timeout(10):  # a banner printed before any message answers nothing
        while not banner:
            await asyncio.sleep(0.01)
    [text] = await keeper.deliver(Message(1), timeout=10)
    assert text.payload == "{not json at all"  # blank lines are skipped, non-JSON is a string
    [binary] = await keeper.deliver(Message(2), timeout=10)
    assert binary.payload == "\ufffd\ufffd binary"
    with pytest.raises(AgentProtocolError, match="type"):
        await keeper.deliver(Message(3), timeout=10)
    with pytest.raises(AgentProtocolError, match="longer than 1000 bytes"):
        await keeper.deliver(Message(4), timeout=10)
    [fine] = await keeper.deliver(Message(5), timeout=10)
    assert fine.payload == "fine"
    assert [m.payload for m in banner] == ["booting, not a protocol line"]
    assert keeper.stats.protocol_errors == 2 and keeper.stats.delivered == 3


async def test_handler_errors_become_error_messages(spawn: Spawn) -> None:
    keeper = Keeper()
    await keeper.attach(await spawn(*agent("upper.py")))
    [ok] = await keeper.deliver(Message("x"), timeout=10)
    [out] = await keeper.deliver(Message(None), timeout=10)  # json.dumps(None) = "null" → "NULL"
    assert ok.payload == "X" and out.payload == "NULL"
    keeper2 = Keeper()
    await keeper2.attach(await spawn(*script("from apiary.agent import run\nrun(lambda m: 1 / 0)")))
    [err] = await keeper2.deliver(Message("boom"), timeout=10)
    assert err.type == "error" and err.payload["error"] == "ZeroDivisionError"
    [err2] = await keeper2.deliver(Message("again"), timeout=10)  # the agent is still alive
    assert err2.type == "error"


async def test_schema_agent_output_and_usage(spawn: Spawn) -> None:
    keeper = Keeper()
    await keeper.attach(await spawn(*agent("schema_agent.py")))
    [out] = await keeper.deliver(Message("what is a hive"), timeout=10)
    assert set(out.payload) == {"response", "confidence"}
    assert isinstance(out.payload["response"], str) and 0 <= out.payload["confidence"] <= 1
    assert out.usage is not None and out.usage.total > 0


async def test_not_attached_and_bad_processes(spawn: Spawn) -> None:
    keeper = Keeper()
    with pytest.raises(AgentNotReady):
        await keeper.deliver(Message("x"))
    no_pipes = await asyncio.create_subprocess_exec("true")
    await no_pipes.wait()
    with pytest.raises(ValueError, match="pipes"):
        await keeper.attach(no_pipes)
    # An agent that exits at once (CRASH_AFTER=0): the first delivery reports the crash.
    await keeper.attach(await spawn(*agent("crash.py"), env={"CRASH_AFTER": "0"}))
    with pytest.raises(AgentCrashed):
        await keeper.deliver(Message("x"), timeout=10)


async def test_stop_fails_in_flight_and_closes_stdin(spawn: Spawn) -> None:
    keeper = Keeper()
    proc = await spawn(*agent("slow.py"), env={"SLOW_SECONDS": "0.5"})
    await keeper.attach(proc)
    pending = asyncio.create_task(keeper.deliver(Message("x")))
    await asyncio.sleep(0.05)
    await keeper.stop()
    with pytest.raises(AgentCrashed, match="stopped"):
        await pending
    assert await asyncio.wait_for(proc.wait(), 10) == 0  # EOF on stdin: the SDK loop ends
