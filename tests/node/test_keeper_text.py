"""The keeper over ``stdin`` + ``format: text``: classic Unix filters as agents."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml

from apiary.node.interfaces import escape_text, unescape_text
from apiary.node.keeper import Keeper, ResponseTimeout
from apiary.waggle import Message

SEED_03 = Path(__file__).resolve().parents[2] / "examples/seed-manifests/03-agentspec-simple.yaml"
Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


def seed_03_command() -> list[str]:
    if SEED_03.exists():
        command: list[str] = yaml.safe_load(SEED_03.read_text())["spec"]["runtime"]["command"]
        return command
    return ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Echo: $line"; done']


async def test_the_seed_03_shell_loop(spawn: Spawn) -> None:
    keeper = Keeper({"type": "stdin", "format": "text"})
    await keeper.attach(await spawn(*seed_03_command()))
    msg = Message("hello world", session_id="s")
    [out] = await keeper.deliver(msg, timeout=10)
    assert (out.type, out.payload, out.correlation_id, out.session_id) == (
        "result",
        "Echo: hello world",
        msg.id,
        "s",
    )
    [out] = await keeper.deliver(Message({"k": [1, 2]}), timeout=10)
    assert out.payload == 'Echo: {"k":[1,2]}'  # non-text payloads travel as compact JSON


async def test_cat_round_trips_multiline_payloads(spawn: Spawn) -> None:
    keeper = Keeper({"type": "stdin", "format": "text"})
    await keeper.attach(await spawn("cat"))
    for payload in ["line one\nline two", "C:\\new\\table", "tab\tand\r\nCRLF", "", "ünïcödé"]:
        [out] = await keeper.deliver(Message(payload), timeout=10)
        assert out.payload == payload


async def test_tr_pipelined_answers_in_order(spawn: Spawn) -> None:
    # tr block-buffers when its stdout is a pipe; stdbuf -oL makes it answer line by line.
    if shutil.which("stdbuf") is None:
        pytest.skip("stdbuf (coreutils) is not installed")
    keeper = Keeper({"type": "stdin", "format": "text", "concurrency": 8})
    await keeper.attach(await spawn("stdbuf", "-oL", "tr", "a-z", "A-Z"))
    msgs = [Message(f"message number {i}") for i in range(200)]
    results = await asyncio.gather(*(keeper.deliver(m, timeout=10) for m in msgs))
    for msg, [out] in zip(msgs, results, strict=True):
        assert out.payload == msg.payload.upper() and out.correlation_id == msg.id
    assert keeper.stats.delivered == 200


async def test_a_late_line_is_consumed_by_its_timed_out_message(spawn: Spawn) -> None:
    keeper = Keeper({"type": "stdin", "format": "text"})
    await keeper.attach(
        await spawn("/bin/sh", "-c", 'while IFS= read -r l; do sleep 0.3; echo "got $l"; done')
    )
    with pytest.raises(ResponseTimeout):
        await keeper.deliver(Message("a"), timeout=0.05)
    [out] = await keeper.deliver(Message("b"), timeout=5)
    assert out.payload == "got b"
    assert [m.payload for m in keeper.unsolicited] == ["got a"]


async def test_lines_before_any_message_are_unsolicited(spawn: Spawn) -> None:
    seen: list[Message] = []
    keeper = Keeper({"type": "stdin", "format": "text"}, on_unsolicited=seen.append)
    await keeper.attach(await spawn("/bin/sh", "-c", "echo ready; exec cat"))
    async with asyncio.timeout(10):
        while not seen:
            await asyncio.sleep(0.01)
    [out] = await keeper.deliver(Message("x"), timeout=10)
    assert out.payload == "x" and seen[0].payload == "ready" and seen[0].correlation_id is None


@pytest.mark.parametrize(
    ("payload", "line"),
    [
        ("plain", "plain"),
        ("a\nb", "a\\nb"),
        ("back\\slash", "back\\\\slash"),
        ("cr\r", "cr\\r"),
        (None, ""),
        ([1, "x"], '[1,"x"]'),
    ],
)
def test_escaping(payload: object, line: str) -> None:
    assert escape_text(payload) == line
    if isinstance(payload, str):
        assert unescape_text(line) == payload


def test_unknown_escapes_are_kept() -> None:
    assert unescape_text("a\\tb\\") == "a\\tb\\"
