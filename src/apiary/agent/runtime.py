"""The agent side of the ``stdin`` interface: read Waggle lines, call the handler, write answers.

The turn rule (docs/waggle.md) says every output line ends the agent's turn unless it carries
``metadata.more == "true"``. The SDK keeps that promise for the handler author: ``ctx.emit``
holds back the latest output and writes the previous one with ``more=true``, so whatever is
written last — the return value, the last emitted output, or an empty result when there was
nothing — is the one that ends the turn. A handler that raises ends its turn with an ``error``
message; the agent keeps running.

Imports are kept to what every agent needs, because they are paid on every drone start (see
docs/waggle.md for the figures): the stdlib ``json`` module rather than orjson (+~20 ms to import,
for ~3 µs a message saved), no ``typing``/``inspect`` at run time, ``asyncio`` only when a handler
turns out to be a coroutine function, ``traceback`` only when a handler fails.
"""

from __future__ import annotations

import os
import sys
from json import JSONEncoder
from json import loads as _json_loads

from apiary.waggle.message import InvalidMessage, Message, looks_like_waggle

TYPE_CHECKING = False  # typing costs ~10 ms to import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import IO, Any

    from apiary.agent.comb import Comb
    from apiary.agent.llm import Llm

    Handler = Callable[..., Any]

_encode = JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def encode_line(msg: Message) -> bytes:
    """One compact JSON line; a payload JSON cannot carry raises :class:`InvalidMessage`."""
    try:
        return (_encode(msg.to_dict()) + "\n").encode()
    except (TypeError, ValueError) as exc:
        raise InvalidMessage("payload", f"not JSON-serialisable: {exc}") from None


_CO_VARARGS = 0x04


def wants_context(fn: Handler) -> bool:
    """Whether ``fn`` takes ``(msg, ctx)`` rather than ``(msg)`` (no ``inspect``: it is slow to
    import)."""
    target: Any = fn
    code = getattr(target, "__code__", None)
    if code is None:
        target = getattr(type(fn), "__call__", None)  # noqa: B004 - want the function, not a test
        code = getattr(target, "__code__", None)
        if code is None:
            return False
        bound = 1
    else:
        bound = 1 if getattr(fn, "__self__", None) is not None else 0
    if code.co_flags & _CO_VARARGS:
        return True
    return bool(code.co_argcount - bound >= 2)


class Context:
    """What a handler may do besides returning: emit extra outputs, log, find its keeper."""

    __slots__ = ("_held", "_write", "message")

    def __init__(self, message: Message, write: Callable[[Message], None]) -> None:
        self.message = message
        self._write = write
        self._held: Message | None = None

    def emit(self, payload: Any = None, type: str = "result", **fields: Any) -> Message:
        """Send an extra output now (it is marked ``more=true``; the turn goes on)."""
        out = payload if isinstance(payload, Message) else Message(payload, type, **fields)
        self._push(out)
        return out

    def log(self, *parts: object) -> None:
        """A line in the drone's log (stderr); stdout belongs to the protocol."""
        print(*parts, file=sys.stderr, flush=True)

    @property
    def keeper_url(self) -> str | None:
        """The keeper's local HTTP endpoint (Comb memory, LLM gateway), if the node offers one."""
        return os.environ.get("APIARY_KEEPER_URL")

    @property
    def comb(self) -> Comb:
        """This message's session memory and the cell's long-term memory (see apiary.agent.comb)."""
        from apiary.agent.comb import Comb

        return Comb.for_message(self.message)

    @property
    def llm(self) -> Llm:
        """The drone's LLM gateway, counting against this message (see apiary.agent.llm)."""
        from apiary.agent.llm import Llm

        return Llm(self.message.id, session=self.message.session_id)

    def _push(self, out: Message) -> None:
        m = self.message
        if out.correlation_id is None:
            out.correlation_id = m.id
        if out.session_id is None:
            out.session_id = m.session_id
        if out.traceparent is None:
            out.traceparent = m.traceparent
        held, self._held = self._held, out
        if held is not None:
            held.metadata = {**held.metadata, "more": "true"}
            self._write(held)

    def _finish(self) -> None:
        held, self._held = self._held, None
        if held is None:
            if self.message.reply_optional:  # nothing to say, and no answer is expected
                return
            held = self.message.reply(None)
            self._push(held)
            self._held = None
        if held.metadata.get("more") is not None:
            held.metadata = {k: v for k, v in held.metadata.items() if k != "more"}
        self._write(held)


def encode_output(m: Message) -> bytes:
    """:func:`encode_line`, but a payload JSON cannot carry becomes an ``error`` output in its
    place (same correlation, same ``more`` flag) instead of killing the agent."""
    try:
        return encode_line(m)
    except InvalidMessage as exc:
        err = Message(
            {"error": "InvalidOutput", "field": exc.field, "message": str(exc)},
            "error",
            correlation_id=m.correlation_id,
            session_id=m.session_id,
            metadata={"more": "true"} if m.metadata.get("more") == "true" else None,
        )
        return encode_line(err)


def outputs_of(result: Any) -> Iterable[Any]:
    """A handler's return value as a sequence of outputs (None → none, list → several)."""
    if result is None:
        return ()
    if isinstance(result, list | tuple):
        return result
    return (result,)


_loop: Any = None


def _await(coro: Any) -> Any:
    global _loop
    if _loop is None:
        import asyncio

        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coro)


def error_message(msg: Message, exc: BaseException) -> Message:
    return msg.reply({"error": type(exc).__name__, "message": str(exc)}, "error")


def handle(
    handler: Handler, msg: Message, write: Callable[[Message], None], with_ctx: bool
) -> None:
    """Run one turn: call the handler, write its outputs, always end with a final line."""
    ctx = Context(msg, write)
    try:
        result = handler(msg, ctx) if with_ctx else handler(msg)
        if hasattr(result, "__await__"):
            result = _await(result)
        for out in outputs_of(result):
            ctx.emit(out)
    except Exception as exc:
        import traceback

        traceback.print_exc(file=sys.stderr)
        ctx.emit(error_message(msg, exc))
    ctx._finish()


def parse_input(line: bytes) -> Message:
    """A stdin line → the message to handle; plain text and bare JSON work too (handy by hand)."""
    try:
        value = _json_loads(line)
    except ValueError:
        return Message(line.decode("utf-8", "replace"), "task")
    if looks_like_waggle(value):
        return Message.from_dict(value)
    return Message(value, "task")


def run(
    handler: Handler, *, stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None
) -> None:
    """Serve ``handler`` on stdin/stdout until EOF; stray ``print()``s go to stderr (the log).

    Outputs are written when every message that has arrived is answered, except ``more``
    outputs, which are flushed at once (a supervisor's tasks should not wait for its turn's end).
    """
    inp = stdin if stdin is not None else sys.stdin.buffer
    out = stdout if stdout is not None else sys.stdout.buffer
    if stdout is None:
        sys.stdout = sys.stderr  # print() in a handler must not corrupt the protocol
    with_ctx = wants_context(handler)
    buffered: list[bytes] = []

    def flush() -> None:
        out.write(b"".join(buffered) if len(buffered) > 1 else buffered[0])
        out.flush()
        buffered.clear()

    def write(m: Message) -> None:
        buffered.append(encode_output(m))
        if m.metadata.get("more") == "true":
            flush()

    def one(line: bytes) -> None:
        if not line.strip():
            return
        try:
            msg = parse_input(line.rstrip(b"\r"))
        except InvalidMessage as exc:
            detail = {"error": "InvalidMessage", "field": exc.field, "message": str(exc)}
            write(Message(detail, "error"))
        else:
            handle(handler, msg, write, with_ctx)

    # Read whatever has arrived (read1: one read(2), no waiting for a full buffer), answer every
    # complete line in it, then write all the answers at once: pipelined messages cost one
    # write(2) per batch instead of one per message, and a lone message is not delayed at all.
    read = getattr(inp, "read1", None) or inp.read
    partial = bytearray()
    try:
        while chunk := read(1 << 16):
            end = chunk.rfind(b"\n")
            if end < 0:
                partial += chunk
                continue
            if partial:
                partial += chunk[: end + 1]
                block, rest = bytes(partial), chunk[end + 1 :]
                partial = bytearray(rest)
            else:
                block, partial = chunk[: end + 1], bytearray(chunk[end + 1 :])
            for line in block.split(b"\n")[:-1]:
                one(line)
            if buffered:
                flush()
        one(bytes(partial))  # a last line without its newline
        if buffered:
            flush()
    except (KeyboardInterrupt, BrokenPipeError):
        pass  # interrupted by hand, or the keeper went away: nothing left to answer
