"""The ``stdin`` interface: one line per message in, one line per output out (DESIGN §5).

Turn rule. Every message written to the agent opens a *turn*; every output line ends the turn it
is attributed to, except a Waggle line whose ``metadata.more == "true"`` (more outputs follow). In
``waggle`` format a line is attributed to the open turn its ``correlationId`` names, else to the
oldest open turn; in ``text`` format always to the oldest (a Unix filter answers in order).

A turn that times out or whose caller gives up stays in the queue as a *zombie*: its answer may
still come, and it must be consumed by the zombie — otherwise a text filter's late line would be
taken as the answer to the next message. A zombie's outputs go to the unsolicited hook (its
message was answered with an error, and is retried).

No line is dropped (DESIGN §6): a line that finds no open turn is a *late output* of a message the
agent was given — the one its ``correlationId`` names, else the last one written — and goes to
:attr:`StdioChannel.on_late`, which the worker routes like the answer. A message marked
``reply: optional`` opens no turn at all: it is written and the exchange returns at once with no
outputs; whatever the agent prints for it comes as late outputs.

stdout is read in chunks and split by hand rather than with ``readline()``: it is faster when
answers are pipelined, and it keeps an over-long line (a runaway agent) from raising inside the
reader — the line is dropped and its turn fails with AgentProtocolError instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import orjson

from apiary.node.interfaces.base import Channel, UnsolicitedHook, log
from apiary.node.interfaces.errors import (
    AgentCrashed,
    AgentNotReady,
    AgentProtocolError,
    DeliveryCancelled,
    ResponseTimeout,
)
from apiary.waggle import (
    InvalidMessage,
    Message,
    encode_line,
    looks_like_waggle,
    output_from_json,
    output_from_text,
)

READ_CHUNK = 1 << 16
DEFAULT_MAX_LINE = 16 << 20
WRITE_HIGH_WATER = 1 << 20
RECENT = 4096
"""Messages remembered for attributing late outputs by ``correlationId``."""

LateHook = Callable[[Message, Message], None]
"""(the message a late output belongs to, the output)."""


def escape_text(payload: Any) -> str:
    """The payload as one line for a text filter: strings as is, other JSON compact; ``\\``, CR
    and LF escaped so a multi-line payload is still one line (and round-trips through ``cat``)."""
    if payload is None:
        return ""
    text = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    if "\\" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return text


def unescape_text(line: str) -> str:
    """Inverse of :func:`escape_text`; unknown escapes (``\\t``) are kept verbatim."""
    if "\\" not in line:
        return line
    out: list[str] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == "\\" and i + 1 < n and line[i + 1] in "\\nr":
            out.append({"\\": "\\", "n": "\n", "r": "\r"}[line[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


class _Turn:
    __slots__ = ("future", "msg", "open", "outputs", "timer")

    def __init__(self, msg: Message, future: asyncio.Future[list[Message]]) -> None:
        self.msg = msg
        self.future = future
        self.outputs: list[Message] = []
        self.open = True
        self.timer: asyncio.TimerHandle | None = None


class StdioChannel(Channel):
    def __init__(
        self,
        fmt: str,
        on_unsolicited: UnsolicitedHook,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE,
        exit_grace: float = 0.5,
    ) -> None:
        super().__init__(on_unsolicited)
        self._text = fmt == "text"
        self._max_line = max_line_bytes
        self._exit_grace = exit_grace
        self._queue: deque[_Turn] = deque()
        self._by_id: dict[str, _Turn] = {}
        self._reader: asyncio.Task[None] | None = None
        self._stdin: asyncio.StreamWriter | None = None
        self._out: list[bytes] = []
        self._dead: str | None = "no agent process attached"
        self._exit_code: int | None = None
        self.protocol_errors = 0
        self.on_late: LateHook | None = None
        """Where late outputs go (None: to the unsolicited hook)."""
        self._recent: OrderedDict[str, Message] = OrderedDict()

    # -- lifecycle -------------------------------------------------------------------------------

    async def attach(self, proc: asyncio.subprocess.Process) -> None:
        if proc.stdin is None or proc.stdout is None:
            raise ValueError("a stdin agent needs its stdin and stdout as pipes")
        await self._detach("the agent process was replaced")
        self.proc = proc
        self._stdin = proc.stdin
        self._dead = None
        self._exit_code = None
        self._reader = asyncio.create_task(self._read_loop(proc, proc.stdout))
        self.ready = True

    async def start(self, timeout: float) -> None:
        if self._dead is not None:
            raise AgentNotReady(self._dead)
        self.ready = True

    async def probe(self) -> bool:
        return self._dead is None and self.proc is not None and self.proc.returncode is None

    async def stop(self) -> None:
        await self._detach("the keeper was stopped")
        self._dead = "the keeper was stopped"

    async def _detach(self, reason: str) -> None:
        self.ready = False
        self._fail_all(reason, None)
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._out = []
        if self._stdin is not None:
            with contextlib.suppress(Exception):
                self._stdin.close()
            self._stdin = None

    # -- sending ---------------------------------------------------------------------------------

    async def exchange(self, msg: Message, timeout: float | None) -> list[Message]:
        stdin = self._stdin
        if self.proc is None:
            raise AgentNotReady("no agent process attached")
        if self._dead is not None or stdin is None:
            raise AgentCrashed(self._dead or "the agent is gone", self._exit_code)
        if stdin.transport.is_closing():
            raise AgentCrashed("the agent's stdin is closed", self._exit_code)
        data = (escape_text(msg.payload) + "\n").encode() if self._text else encode_line(msg)
        loop = asyncio.get_running_loop()
        self._remember(msg)
        if msg.reply_optional:  # nothing to wait for: what the agent prints comes as late outputs
            self._write(loop, data)
            return []
        turn = _Turn(msg, loop.create_future())
        self._queue.append(turn)
        self._by_id[msg.id] = turn
        if self._write(loop, data) and stdin.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            try:
                await stdin.drain()  # the agent reads slower than we write: back-pressure
            except (ConnectionError, RuntimeError) as exc:
                self._finish(turn, AgentCrashed(f"the agent's stdin is closed ({exc!r})", None))
        if timeout is not None and not turn.future.done():
            turn.timer = loop.call_later(timeout, self._expire, turn, timeout)
        try:
            return await turn.future
        except asyncio.CancelledError:
            self._abandon(turn)
            raise

    def _write(self, loop: asyncio.AbstractEventLoop, data: bytes) -> bool:
        """Queue ``data``; every message queued in this loop iteration goes out in one write(2).
        True when a flush was already scheduled (the caller may check back-pressure)."""
        self._out.append(data)
        if len(self._out) == 1:
            loop.call_soon(self._flush)
            return False
        return True

    def _remember(self, msg: Message) -> None:
        recent = self._recent
        recent[msg.id] = msg
        recent.move_to_end(msg.id)
        if len(recent) > RECENT:
            recent.popitem(last=False)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._stdin is not None and out:
            self._stdin.write(out[0] if len(out) == 1 else b"".join(out))

    def _expire(self, turn: _Turn, timeout: float) -> None:
        turn.timer = None
        if not turn.future.done():
            turn.future.set_exception(
                ResponseTimeout(f"the agent did not answer message {turn.msg.id} in {timeout:g}s")
            )
        if self._by_id.get(turn.msg.id) is turn:
            del self._by_id[turn.msg.id]

    def cancel(self, msg_id: str) -> bool:
        """The turn stays in the queue as a zombie (a late answer is consumed by it)."""
        turn = self._by_id.get(msg_id)
        if turn is None or turn.future.done():
            return False
        self._abandon(turn)
        turn.future.set_exception(DeliveryCancelled(f"message {msg_id} was cancelled"))
        return True

    def _abandon(self, turn: _Turn) -> None:
        if turn.timer is not None:
            turn.timer.cancel()
            turn.timer = None
        if self._by_id.get(turn.msg.id) is turn:
            del self._by_id[turn.msg.id]

    # -- receiving -------------------------------------------------------------------------------

    async def _read_loop(self, proc: asyncio.subprocess.Process, out: asyncio.StreamReader) -> None:
        pending: list[bytes] = []
        pending_len = 0
        skipping = False  # inside an over-long line: drop bytes until its newline
        try:
            while True:
                chunk = await out.read(READ_CHUNK)
                if not chunk:
                    break
                start = 0
                nl = chunk.find(b"\n")
                while nl >= 0:
                    if pending:
                        pending.append(chunk[start:nl])
                        line = b"".join(pending)
                        pending.clear()
                        pending_len = 0
                    else:
                        line = chunk[start:nl]
                    if skipping:
                        skipping = False
                    elif len(line) > self._max_line:
                        self._overlong()
                    else:
                        self._on_line(line)
                    start = nl + 1
                    nl = chunk.find(b"\n", start)
                if start < len(chunk) and not skipping:
                    pending.append(chunk[start:])
                    pending_len += len(chunk) - start
                    if pending_len > self._max_line:
                        pending.clear()
                        pending_len = 0
                        skipping = True
                        self._overlong()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken pipe object must not kill the keeper
            log.warning("reading agent stdout failed", extra={"error": repr(exc)})
        if pending and not skipping:
            self._on_line(b"".join(pending))  # a last line without its newline still counts
        code: int | None = proc.returncode
        if code is None:
            with contextlib.suppress(asyncio.TimeoutError):
                code = await asyncio.wait_for(proc.wait(), self._exit_grace)
        self._exit_code = code
        reason = (
            f"the agent exited with code {code}"
            if code is not None
            else "the agent closed its stdout"
        )
        self._reader = None
        self.ready = False
        self._dead = reason
        self._fail_all(reason, code)

    def _oldest_open(self) -> _Turn | None:
        q = self._queue
        while q:
            turn = q[0]
            if turn.open:
                return turn
            q.popleft()
        return None

    def _on_line(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._text:
            turn = self._oldest_open()
            text = unescape_text(line.decode("utf-8", "replace"))
            out = output_from_text(text, turn.msg if turn is not None else None)
            self._output(turn, out, False)
            return
        if not line.strip():
            return  # blank lines carry nothing in waggle format (a stray print())
        turn = None
        try:
            value: Any = orjson.loads(line)
            is_json = True
        except orjson.JSONDecodeError:
            value, is_json = None, False
        if is_json and looks_like_waggle(value):
            cid = value.get("correlationId")
            if type(cid) is str:
                turn = self._by_id.get(cid)
        if turn is None:
            turn = self._oldest_open()
        answering = turn.msg if turn is not None else None
        try:
            if is_json:
                out = output_from_json(value, answering)
            else:
                out = output_from_text(line.decode("utf-8", "replace"), answering)
        except InvalidMessage as exc:
            self.protocol_errors += 1
            log.warning("agent wrote an invalid Waggle message", extra={"error": str(exc)})
            if turn is not None:
                self._finish(
                    turn, AgentProtocolError(f"the agent wrote an invalid Waggle message: {exc}")
                )
            return
        self._output(turn, out, out.more)

    def _output(self, turn: _Turn | None, out: Message, more: bool) -> None:
        if turn is None:
            self._late(out)
            return
        turn.outputs.append(out)
        if not more:
            self._finish(turn, None)

    def _late(self, out: Message) -> None:
        """A line no open turn takes: it belongs to the message it names, else the last one."""
        recent = self._recent
        owner = recent.get(out.correlation_id or "") if recent else None
        if owner is None and recent:
            owner = recent[next(reversed(recent))]
        if owner is None or self.on_late is None:
            self.unsolicited(out)
            return
        if out.correlation_id is None:
            out.correlation_id = owner.id
        try:
            self.on_late(owner, out)
        except Exception:  # a broken callback must not take the reader down with it
            log.exception("on_late callback failed")

    def _overlong(self) -> None:
        self.protocol_errors += 1
        turn = self._oldest_open()
        msg = f"the agent wrote a line longer than {self._max_line} bytes"
        log.warning(msg)
        if turn is not None:
            self._finish(turn, AgentProtocolError(msg))

    def _finish(self, turn: _Turn, error: Exception | None) -> None:
        turn.open = False
        if self._by_id.get(turn.msg.id) is turn:
            del self._by_id[turn.msg.id]
        if turn.timer is not None:
            turn.timer.cancel()
            turn.timer = None
        fut = turn.future
        if not fut.done():
            if error is None:
                fut.set_result(turn.outputs)
            else:
                fut.set_exception(error)
        else:  # a zombie: its caller has gone, keep what it said anyway
            for out in turn.outputs:
                self.unsolicited(out)

    def _fail_all(self, reason: str, code: int | None) -> None:
        for turn in self._queue:
            if turn.timer is not None:
                turn.timer.cancel()
                turn.timer = None
            turn.open = False
            if not turn.future.done():
                turn.future.set_exception(AgentCrashed(reason, code))
        self._queue.clear()
        self._by_id.clear()
