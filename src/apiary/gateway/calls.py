"""One LLM call's budget: reserved before it goes to the provider, settled when it is over.

Reserve-then-settle (issue 15.2): before a call the gateway holds its maximum cost — the prompt's
tokens (an estimate, :func:`estimate_prompt`) plus the completion it may produce — against every
scope that applies, the drone's own first (the message's per-request and session budgets, the
drone's per-minute window: :meth:`DroneMeter.reserve`), then the shared ones (Cell → Hive →
Session, through apiaryd: :mod:`apiary.gateway.shared`). What is left in the tightest scope caps
the call's ``max_tokens`` (or ``max_completion_tokens`` / ``max_output_tokens``), so concurrent
calls cannot together overshoot a budget: each only gets what the others left. A call that would
not fit its prompt plus one completion token is refused with a 429. When the call is over, the
holds are released and what the provider reported is counted (also for streams, from their
final usage chunk, and for calls the provider refused: nothing).

**Estimate.** No tokenizer is used (none ships with Apiary, and a provider's own tokenizer is
not installed or, like tiktoken's, downloads its tables on first use): prompt tokens are
estimated as a quarter of the characters of the messages' text (and of tools, instructions),
plus 4 per message and 3 for the reply, as OpenAI documents its per-message overhead. Where the
estimate falls short of the provider's count, a budget can be passed by that difference only —
the completion, the larger and unknown part, is capped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from apiary.gateway.budget import DroneMeter, GatewayRefusal, Tally
from apiary.gateway.shared import BudgetPaused, SharedBudgets, SharedHold

CHARS_PER_TOKEN = 4
PAUSE_POLL = 0.5
"""Seconds between asks while a paused call waits for its budget to be raised."""
_SETTLING: set[asyncio.Future[None]] = set()
TOKENS_PER_MESSAGE = 4
REPLY_TOKENS = 3


def estimate(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def prompt_text(body: dict[str, Any]) -> str:
    """The text of a request's messages or input, for the estimate when usage is missing."""
    parts: list[str] = []
    for m in body.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        parts.append(content if isinstance(content, str) else orjson.dumps(content).decode())
    given = body.get("input")
    if given is not None:
        parts.append(_text(given))
    return "".join(parts)


def estimate_prompt(body: dict[str, Any]) -> int:
    """Tokens the request's prompt will be counted as, estimated (module docstring)."""
    messages = body.get("messages")
    n = len(messages) if isinstance(messages, list) else 0
    extra = _text(body.get("tools")) + _text(body.get("instructions")) + _text(body.get("system"))
    overhead = TOKENS_PER_MESSAGE * n + (REPLY_TOKENS if n else 0)
    return estimate(prompt_text(body) + extra) + overhead


@dataclass
class Budgeted:
    """What a call holds: in the drone's meter and in the shared scopes."""

    tally: Tally
    local: int
    shared: SharedHold | None
    settled: bool = False


def completion_key(body: dict[str, Any], keys: tuple[str, ...]) -> str:
    """Which of ``keys`` caps the completion: the one the request uses, else the first."""
    return next((k for k in keys if body.get(k) is not None), keys[0])


async def reserve(
    meter: DroneMeter, shared: SharedBudgets | None, tally: Tally, body: dict[str, Any],
    *, cell: str, hive: str | None, keys: tuple[str, ...] | None,
) -> Budgeted:  # fmt: skip
    """Hold the call's maximum cost everywhere and cap its completion in ``body`` to what is
    left; ``keys`` None: a call without completion (embeddings)."""
    prompt = estimate_prompt(body)
    key = completion_key(body, keys) if keys else None
    asked = body.get(key) if key else 0
    if isinstance(asked, bool) or not isinstance(asked, int) or asked < 0:
        asked = None
    least = 1 if keys else 0
    allowed, local = meter.reserve(tally, prompt, asked, least)
    held = None
    if shared is not None:
        model = body.get("model")
        try:
            while True:
                try:
                    held = await shared.reserve(
                        cell, hive, tally.session, model if isinstance(model, str) else "",
                        prompt, allowed, least,
                    )  # fmt: skip
                    break
                except BudgetPaused:
                    # onExhausted: pause — the call (and its message) waits, nothing is sent,
                    # until the budget is raised or the message is given up.
                    if tally not in meter.tallies.values():
                        raise
                    await asyncio.sleep(PAUSE_POLL)
        except GatewayRefusal as exc:
            meter.settle(tally, local, 0, 0)
            if exc.status == 429:
                tally.mark(exc.message.removeprefix("token budget exceeded: "), meter.stop_grace)
            raise
        allowed = held.completion
    if key is not None and allowed is not None and (asked is None or allowed < asked):
        body[key] = allowed
    return Budgeted(tally, local, held)


async def settle(
    meter: DroneMeter, shared: SharedBudgets | None, budgeted: Budgeted, prompt: int,
    completion: int, model: str = "",
) -> None:  # fmt: skip
    """Release the call's holds and count what it used (once; a refused call used nothing)."""
    if budgeted.settled:
        return
    budgeted.settled = True
    meter.settle(budgeted.tally, budgeted.local, prompt, completion, model)
    if shared is not None and budgeted.shared is not None:
        # Shielded: a stream the agent hung up on is settled all the same.
        task = asyncio.ensure_future(
            shared.settle(budgeted.shared, max(0, prompt), max(0, completion), model)
        )
        _SETTLING.add(task)
        task.add_done_callback(_SETTLING.discard)
        await asyncio.shield(task)


__all__ = ["Budgeted", "estimate", "estimate_prompt", "prompt_text", "reserve", "settle"]
