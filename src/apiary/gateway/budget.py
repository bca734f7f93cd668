"""Token budgets of one drone, enforced by the node — never trusted to the agent.

Every LLM call through the gateway is attributed to a *message in flight* on the drone (a
:class:`Tally`), because that is what the budgets are about:

* ``tokenBudgetPerRequest`` — tokens one message may use;
* the session's remaining budget — the router puts it in the Dispatch (``tokens_left``) when the
  hive has ``tokenBudgetPerSession``;
* ``tokenBudgetPerMinute`` — tokens the drone may use in any sliding 60 s window.

A call reserves its maximum cost first (:meth:`DroneMeter.reserve`: the prompt, estimated,
plus the completion it may have, capped to what is left) and settles what it used after
(:meth:`DroneMeter.settle`), so concurrent calls cannot together pass a budget; a call that
would not fit its prompt plus one completion token is refused. Only a provider counting more
prompt tokens than estimated, or ignoring ``max_tokens``, can end a message over its budget.
A refused call, or a message whose total ends over its budget, marks the tally ``exceeded``;
the worker reports the message as failed with ``TokenBudgetExceeded`` (not retried) and,
through :meth:`Tally.watch`, stops waiting for an agent that does not answer within
:attr:`DroneMeter.stop_grace` seconds of the refusal.

Calls that name no message in flight are refused: a token no message pays for would escape the
per-request and the session budgets. A call that names a session (``X-Apiary-Session-Id``) must be
for a message of that session in flight: a drone's LLM calls are for the sessions it holds only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

MAX_MODELS_PER_MESSAGE = 8
"""Models one message's tokens are told apart by; the calls of any more count as ``other``."""

EXCEEDED = "TokenBudgetExceeded"
"""The Outcome error reason of a message that ran out of tokens (router/policy.py NOT_RETRIED)."""


RETRIED = frozenset({408, 502, 503, 504})
"""Statuses of refusals worth trying again (the provider or the control plane was away); every
other refusal is final and says ``x-should-retry: false``, so the ``openai`` SDK raises it at once
instead of retrying until the message is no longer in flight (issue 15.1b)."""


class GatewayRefusal(Exception):
    """A call the gateway will not forward: an HTTP status and an OpenAI-shaped error body,
    ``{"error": {"message", "type", "param", "code"}}`` (``code`` a string, as OpenAI's)."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.code = code or type
        self.param = param
        self.headers = dict(headers or {})
        if status not in RETRIED:
            self.headers.setdefault("x-should-retry", "false")

    def body(self) -> dict[str, Any]:
        return openai_error(self.type, self.message, self.code, self.param)


def openai_error(
    type: str, message: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An error body as OpenAI's API answers one (what every OpenAI client parses)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code or type}}


class Tally:
    """What one message in flight has used, and what it may still use."""

    __slots__ = (
        "_cm",
        "bounded",
        "completion",
        "exceeded",
        "held",
        "limit",
        "message_id",
        "models",
        "prompt",
        "session",
        "session_left",
    )

    def __init__(
        self,
        message_id: str,
        limit: int | None,
        session_left: int | None,
        session: str | None = None,
    ) -> None:
        self.message_id = message_id
        self.session = session
        """The session the message belongs to (``cell/name``), when the worker knows it."""
        self.limit = limit
        self.session_left = session_left
        self.prompt = 0
        self.completion = 0
        self.held = 0
        """Tokens reserved by this message's calls in flight (:meth:`DroneMeter.reserve`)."""
        self.models: dict[str, tuple[int, int]] = {}
        """(prompt, completion) by the model that answered each call (the requested one when
        the provider named none): what the token and cost metrics are labelled with."""
        self.exceeded: str | None = None
        """Why the message ran out of tokens (the Outcome error message), once it has."""
        self.bounded = limit is not None or session_left is not None
        """Whether any budget applies; without one the worker need not watch the delivery."""
        self._cm: asyncio.Timeout | None = None

    @property
    def used(self) -> int:
        return self.prompt + self.completion

    @property
    def usage(self) -> tuple[int, int]:
        return (self.prompt, self.completion)

    def by_model(self) -> tuple[tuple[str, int, int], ...]:
        """:attr:`models` as an Outcome carries them: (model, prompt, completion)."""
        if not self.models:
            return ()
        return tuple((m, p, c) for m, (p, c) in self.models.items())

    def over(self) -> str | None:
        """Which budget has no room left (a sentence), else None."""
        if self.limit is not None and self.used >= self.limit:
            return (
                f"message {self.message_id} used {self.used} tokens of its per-request "
                f"budget of {self.limit}"
            )
        if self.session_left is not None and self.used >= self.session_left:
            return (
                f"message {self.message_id} used {self.used} tokens; the session had "
                f"{self.session_left} left of its budget"
            )
        return None

    def watch(self, cm: asyncio.Timeout | None) -> None:
        """The worker's ``asyncio.timeout(None)`` around the delivery: when the message runs
        out of tokens the deadline is set, so a runaway agent is not waited for forever."""
        self._cm = cm

    def mark(self, reason: str, grace: float) -> None:
        if self.exceeded is None:
            self.exceeded = reason
        cm = self._cm
        if cm is not None and cm.when() is None:
            with contextlib.suppress(RuntimeError):  # the delivery is over already
                cm.reschedule(asyncio.get_running_loop().time() + grace)


class DroneMeter:
    """The budgets and tallies of one drone; one per :class:`~apiary.node.runner.DroneRunner`.

    ``clock`` (monotonic seconds) is injectable for the per-minute window."""

    def __init__(
        self,
        *,
        per_request: int | None = None,
        per_minute: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        window: float = 60.0,
        stop_grace: float = 1.0,
    ) -> None:
        self.per_request = per_request
        self.per_minute = per_minute
        self.clock = clock
        self.window = window
        self.stop_grace = stop_grace
        """Seconds an agent may still take to answer after its message ran out of tokens."""
        self.tallies: dict[tuple[str, str], Tally] = {}
        """By (session, message id): message ids are scoped by session, so two messages in
        flight on one drone may share an id."""
        self._spent: deque[tuple[float, int]] = deque()
        self._spent_sum = 0
        self.held = 0
        """Tokens reserved by calls in flight, counted in the per-minute window until settled."""
        self.total = (0, 0)
        """(prompt, completion) tokens of every call since the drone started."""

    @classmethod
    def from_guardrails(cls, guardrails: Mapping[str, Any] | None, **kwargs: Any) -> DroneMeter:
        g = guardrails or {}

        def positive(key: str) -> int | None:
            value = g.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                return None
            return int(value)

        return cls(
            per_request=positive("tokenBudgetPerRequest"),
            per_minute=positive("tokenBudgetPerMinute"),
            **kwargs,
        )

    # ------------------------------------------------------------------- worker side

    def begin(
        self, message_id: str, tokens_left: int | None = None, *, session: str | None = None
    ) -> Tally:
        """A message (of ``session``) is handed to the agent; its calls are counted from now."""
        tally = Tally(message_id, self.per_request, tokens_left, session)
        if self.per_minute is not None:
            tally.bounded = True
        self.tallies[(session or "", message_id)] = tally
        return tally

    def end(self, message_id: str, *, session: str | None = None) -> Tally | None:
        """The message is done (answered, failed or given up); later calls for it are refused."""
        return self.tallies.pop((session or "", message_id), None)

    # ------------------------------------------------------------------ gateway side

    def pick(
        self, message_id: str | None, session: str | None = None, *, drone: str = "this drone"
    ) -> Tally:
        """The tally a call is for: the one named by ``X-Apiary-Message-Id``, else the only
        message in flight (of ``session``, the ``X-Apiary-Session-Id`` header, when named).

        A named session the drone holds no message of is a 403: the call would be spent on a
        session the drone has no business with."""
        tallies = list(self.tallies.values())
        if session:
            tallies = [t for t in tallies if _same_session(t.session, session)]
            if not tallies:
                raise GatewayRefusal(
                    403, "permission_error",
                    f"drone {drone} holds no message of session {session!r} "
                    "(X-Apiary-Session-Id): LLM calls are for the sessions it holds only",
                )  # fmt: skip
        if message_id:
            named = [t for t in tallies if t.message_id == message_id]
            if len(named) > 1:
                raise GatewayRefusal(
                    400, "invalid_request_error",
                    f"{len(named)} messages {message_id!r} of different sessions are in flight "
                    "on this drone: name the session in the X-Apiary-Session-Id header",
                )  # fmt: skip
            if not named:
                where = f" of session {session!r}" if session else ""
                raise GatewayRefusal(
                    409, "message_not_in_flight",
                    f"message {message_id!r} (X-Apiary-Message-Id){where} is not in flight on "
                    "this drone",
                )  # fmt: skip
            return named[0]
        if len(tallies) == 1:
            return tallies[0]
        if not tallies:
            raise GatewayRefusal(
                409, "message_not_in_flight",
                "no message is in flight on this drone: LLM calls are made while handling one",
            )  # fmt: skip
        raise GatewayRefusal(
            400, "invalid_request_error",
            f"{len(tallies)} messages are in flight on this drone: name the one this call "
            "is for in the X-Apiary-Message-Id header",
        )  # fmt: skip

    def minute_used(self) -> int:
        horizon = self.clock() - self.window
        spent = self._spent
        while spent and spent[0][0] <= horizon:
            self._spent_sum -= spent.popleft()[1]
        return self._spent_sum

    def admit(self, tally: Tally) -> None:
        """Raise a 429 :class:`GatewayRefusal` (and mark the message) when a budget is used up."""
        reason = tally.exceeded or tally.over()
        if reason is None and self.per_minute is not None:
            used = self.minute_used()
            if used >= self.per_minute:
                retry = max(1, int(self._spent[0][0] + self.window - self.clock()) + 1)
                reason = (
                    f"the drone used {used} tokens in the last {self.window:g}s, its "
                    f"per-minute budget is {self.per_minute}"
                )
                tally.mark(reason, self.stop_grace)
                raise GatewayRefusal(429, "budget_exceeded", reason, {"Retry-After": str(retry)})
        if reason is not None:
            tally.mark(reason, self.stop_grace)
            raise GatewayRefusal(429, "budget_exceeded", f"token budget exceeded: {reason}")

    def reserve(
        self, tally: Tally, prompt: int, completion: int | None, min_completion: int = 1
    ) -> tuple[int | None, int]:
        """Hold room for one call of ``prompt`` tokens (an estimate) and up to ``completion``
        (None: as many as the budgets leave) against the message's per-request and session
        budgets and the drone's per-minute window: (the completion the call may have — None
        when no budget bounds it —, the tokens held). Raises a 429 :class:`GatewayRefusal`
        (and marks the message) when less than ``min_completion`` would fit.

        Reserved before the call and settled after (:meth:`settle`), concurrent calls of one
        message cannot together overshoot its budgets: each only gets what is left."""
        self.admit(tally)
        rooms: list[tuple[int, str, bool]] = []  # (tokens left, which budget, per-minute)
        if tally.limit is not None:
            rooms.append((tally.limit - tally.used - tally.held,
                          f"message {tally.message_id} has {{left}} of its per-request budget "
                          f"of {tally.limit} tokens left", False))  # fmt: skip
        if tally.session_left is not None:
            rooms.append((tally.session_left - tally.used - tally.held,
                          f"message {tally.message_id}: the session had {tally.session_left} "
                          "left of its budget, {left} of them are left", False))  # fmt: skip
        if self.per_minute is not None:
            used = self.minute_used() + self.held
            rooms.append((self.per_minute - used,
                          f"the drone has {{left}} of its per-minute budget of "
                          f"{self.per_minute} tokens left", True))  # fmt: skip
        allowed = completion
        for left, why, minute in rooms:
            if left - prompt < min_completion:
                reason = why.format(left=max(0, left)) + (
                    f"; this call needs {prompt} prompt tokens (estimated) + {min_completion}"
                )
                tally.mark(reason, self.stop_grace)
                headers = {}
                if minute and self._spent:
                    wait = self._spent[0][0] + self.window - self.clock()
                    headers["Retry-After"] = str(max(1, int(wait) + 1))
                raise GatewayRefusal(
                    429, "budget_exceeded", f"token budget exceeded: {reason}", headers
                )
            allowed = left - prompt if allowed is None else min(allowed, left - prompt)
        hold = prompt + (allowed or 0)
        tally.held += hold
        self.held += hold
        return allowed, hold

    def settle(
        self, tally: Tally, hold: int, prompt: int, completion: int, model: str = ""
    ) -> None:
        """Release what :meth:`reserve` held for a call and count what it used."""
        tally.held = max(0, tally.held - hold)
        self.held = max(0, self.held - hold)
        self.charge(tally, prompt, completion, model)

    def charge(self, tally: Tally | None, prompt: int, completion: int, model: str = "") -> None:
        """Count a call the provider answered (with ``model``); a message that ends over budget
        is marked."""
        prompt, completion = max(0, prompt), max(0, completion)
        self.total = (self.total[0] + prompt, self.total[1] + completion)
        if prompt + completion:
            self._spent.append((self.clock(), prompt + completion))
            self._spent_sum += prompt + completion
        if tally is None:
            return
        tally.prompt += prompt
        tally.completion += completion
        if model and (prompt or completion):
            models = tally.models
            if model not in models and len(models) >= MAX_MODELS_PER_MESSAGE:
                model = "other"
            p, c = models.get(model, (0, 0))
            models[model] = (p + prompt, c + completion)
        if (tally.limit is not None and tally.used > tally.limit) or (
            tally.session_left is not None and tally.used > tally.session_left
        ):
            reason = tally.over()
            assert reason is not None
            tally.mark(reason, self.stop_grace)


def _same_session(held: str | None, named: str) -> bool:
    """A tally's session (``cell/name``, or unknown) against the one a call names (``cell/name``
    or the bare name, as the SDK has it from the message)."""
    if held is None:
        return False
    return held == named or ("/" not in named and held.rsplit("/", 1)[-1] == named)


async def until_exceeded(tally: Tally, delivery: Awaitable[list[T]]) -> list[T]:
    """Await the agent's answer to the tally's message, but give up (an empty answer) once the
    message ran out of tokens and the agent has not answered within the meter's grace — the
    agent got a 429 and keeps going. The caller reports ``tally.exceeded``."""
    cm = asyncio.timeout(None)
    try:
        async with cm:
            tally.watch(cm)
            return await delivery
    except TimeoutError:
        if cm.expired() and tally.exceeded is not None:
            return []
        raise
    finally:
        tally.watch(None)


__all__ = [
    "EXCEEDED",
    "RETRIED",
    "DroneMeter",
    "GatewayRefusal",
    "Tally",
    "openai_error",
    "until_exceeded",
]
