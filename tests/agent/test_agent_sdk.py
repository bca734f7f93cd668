"""The Python agent SDK: the stdin loop, the turn rule it keeps for handlers, and its cold start."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import pytest

from apiary.agent import Context, agent, run, wants_context
from apiary.waggle import Message, decode, encode_line


def converse(handler: Any, *inputs: bytes | Message) -> list[Message]:
    """Run ``handler`` over the given stdin lines in-process; return what it wrote."""
    lines = b"".join(i if isinstance(i, bytes) else encode_line(i) for i in inputs)
    out = io.BytesIO()
    run(handler, stdin=io.BytesIO(lines), stdout=out)
    return [decode(line, default_type="result") for line in out.getvalue().splitlines()]


def test_a_lambda_is_an_agent() -> None:
    msg = Message("hello", session_id="s1")
    [out] = converse(lambda m: m.payload.upper(), msg)
    assert (out.type, out.payload, out.correlation_id, out.session_id) == (
        "result",
        "HELLO",
        msg.id,
        "s1",
    )
    assert not out.more


def test_return_shapes() -> None:
    msg = Message("x")
    [none] = converse(lambda m: None, msg)
    assert none.type == "result" and none.payload is None  # the turn still ends
    [custom] = converse(lambda m: Message({"a": 1}, "event", metadata={"k": "v"}), msg)
    assert custom.type == "event" and custom.metadata == {"k": "v"}
    assert custom.correlation_id == msg.id
    several = converse(lambda m: [1, Message(2, "event"), 3], msg)
    assert [o.payload for o in several] == [1, 2, 3]
    assert [o.more for o in several] == [True, True, False]


def test_emit_streams_and_the_last_output_ends_the_turn() -> None:
    def handler(msg: Message, ctx: Context) -> None:
        ctx.emit("step 1", "event")
        ctx.emit("step 2", "event")
        ctx.emit({"done": True})

    outs = converse(handler, Message("go"), Message("again"))
    assert [o.payload for o in outs] == ["step 1", "step 2", {"done": True}] * 2
    assert [o.more for o in outs] == [True, True, False] * 2


def test_handler_errors_become_error_messages_and_the_loop_goes_on() -> None:
    def handler(msg: Message) -> str:
        if msg.payload == "bad":
            raise KeyError("missing")
        return "ok"

    outs = converse(handler, Message("bad"), Message("good"))
    assert outs[0].type == "error" and outs[0].payload["error"] == "KeyError"
    assert outs[1].payload == "ok"


def test_unserialisable_output_is_an_error_not_a_dead_agent() -> None:
    outs = converse(lambda m: {1, 2} if m.payload == 1 else "fine", Message(1), Message(2))
    assert outs[0].type == "error" and outs[0].payload["field"] == "payload"
    assert outs[1].payload == "fine"


def test_async_handlers_work() -> None:
    async def handler(msg: Message) -> str:
        return f"async {msg.payload}"

    [out] = converse(handler, Message("x"))
    assert out.payload == "async x"


def test_text_and_bare_json_input_lines_are_accepted() -> None:
    outs = converse(lambda m: {"got": m.payload, "type": m.type}, b"typed by hand\n", b"[1, 2]\n\n")
    assert [o.payload for o in outs] == [
        {"got": "typed by hand", "type": "task"},
        {"got": [1, 2], "type": "task"},
    ]


def test_invalid_waggle_input_is_answered_with_an_error() -> None:
    [out] = converse(lambda m: "unreached", b'{"type": "shout", "payload": 1}\n')
    assert out.type == "error" and out.payload["field"] == "type"


def test_decorator_form() -> None:
    @agent
    def handler(msg: Message, ctx: Context) -> str:
        return f"{msg.payload}!"

    assert handler(Message("direct"), None) == "direct!"
    [out] = converse(handler.handler, Message("hi"))
    assert out.payload == "hi!"


class _Callable:
    def __call__(self, msg: Message, ctx: Context) -> None: ...


class _Method:
    def one(self, msg: Message) -> None: ...

    def two(self, msg: Message, ctx: Context) -> None: ...


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda m: m, False),
        (lambda m, c: m, True),
        (lambda *args: args, True),
        (_Callable(), True),
        (_Method().one, False),
        (_Method().two, True),
        (print, False),
    ],
)
def test_wants_context(fn: Any, expected: bool) -> None:
    assert wants_context(fn) is expected


def test_stray_prints_go_to_stderr_in_a_real_process() -> None:
    code = "from apiary.agent import run\ndef h(m):\n    print('debug', m.payload)\n    return 1\n"
    code += "run(h)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=encode_line(Message("x")),
        capture_output=True,
        timeout=30,
        check=True,
    )
    [line] = proc.stdout.splitlines()
    assert json.loads(line)["payload"] == 1
    assert b"debug x" in proc.stderr


def test_the_sdk_imports_nothing_heavy() -> None:
    """Agent cold start: no orjson, typing, asyncio or inspect just to import the SDK."""
    code = (
        "import sys; import apiary.agent\n"
        "heavy = {'orjson', 'typing', 'asyncio', 'inspect', 'dataclasses', 'uuid', 'pydantic'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "[]"
