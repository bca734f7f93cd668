"""The budgets above one drone — its Cell's, its Hive's, its session's — reserved through the API.

A drone's own budgets (per message, per minute) live in its :class:`~apiary.gateway.budget.
DroneMeter`; the others are shared by drones on many nodes, so they are held where every node
sees the same numbers: apiaryd's ledger (:mod:`apiary.api.budgets`), one atomic store
transaction per reservation. Before a call the gateway reserves its maximum (prompt estimate +
``max_tokens``); apiaryd answers how many completion tokens every scope leaves (the call's
``max_tokens`` is clamped to it) or refuses naming the scope; after the call the gateway settles
what the provider reported, which also keeps each scope's usage and estimated cost.

Every call is reserved and settled, budgets or not: the ledger counts all usage, and the answer
also says whether the hive replays a recorded session (``replayFrom``,
:mod:`apiary.api.cassettes`), so a mode set on a Hive applies to its next call. A caller may
skip asking for scopes found unbounded for :attr:`ApiBudgets.unbounded_ttl` seconds (0 by
default: never skip). The same client records each exchange in the session's journal and looks
recorded ones up when replaying.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from apiary.client import AsyncApiClient
from apiary.errors import ApiaryError
from apiary.gateway.budget import GatewayRefusal

log = logging.getLogger("apiary.gateway")


class BudgetPaused(GatewayRefusal):
    """A scope is used up and its ``onExhausted`` is ``pause``: hold the call and ask again."""


@dataclass
class SharedHold:
    """What a reservation holds in the shared scopes (settled after the call)."""

    cell: str
    hive: str | None
    session: str | None
    model: str
    hold: str | None
    completion: int | None
    """The completion tokens the shared scopes leave the call (None: unbounded)."""
    replay_from: str | None = None
    """The session whose recorded calls answer this one (``spec.gateway.mode: replay``)."""
    replay_mode: str = "recorded"
    """``recorded``: only recorded answers; ``mixed``: the provider when none matches."""


class SharedBudgets(Protocol):
    async def reserve(
        self, cell: str, hive: str | None, session: str | None, model: str, prompt: int,
        completion: int | None, min_completion: int,
    ) -> SharedHold: ...  # fmt: skip

    async def settle(self, held: SharedHold, prompt: int, completion: int, model: str) -> None: ...

    async def record(self, cell: str, session: str, call: dict[str, Any]) -> None: ...

    async def lookup(self, cell: str, source: str, call: dict[str, Any]) -> dict[str, Any]: ...


class ApiBudgets:
    """:class:`SharedBudgets` through apiaryd's ``/api/v1/cells/{cell}/llmbudget``."""

    def __init__(self, client: AsyncApiClient, *, unbounded_ttl: float = 0.0) -> None:
        self.client = client
        self.unbounded_ttl = unbounded_ttl
        self._unbounded: dict[tuple[str, str | None], float] = {}

    async def reserve(
        self, cell: str, hive: str | None, session: str | None, model: str, prompt: int,
        completion: int | None, min_completion: int,
    ) -> SharedHold:  # fmt: skip
        held = SharedHold(cell, hive, session, model, None, completion)
        if self._unbounded.get((cell, hive), 0.0) > time.monotonic():
            return held
        body = {"hive": hive, "session": session, "model": model, "prompt": prompt,
                "completion": completion, "minCompletion": min_completion}  # fmt: skip
        try:
            answer = await self.client.request(
                "POST", f"/api/v1/cells/{cell}/llmbudget/reserve", json_body=body
            )
        except ApiaryError as exc:
            raise GatewayRefusal(
                503, "budget_unavailable",
                f"the Cell's LLM budgets could not be checked (apiaryd: {exc.message}); "
                "try again",
            ) from None  # fmt: skip
        got = answer.body if isinstance(answer.body, dict) else {}
        if got.get("refused"):
            kind = BudgetPaused if got.get("pause") else GatewayRefusal
            raise kind(
                429, "budget_exceeded", f"token budget exceeded: {got['refused']}",
                code="budget_exceeded",
            )  # fmt: skip
        held.replay_from = got.get("replayFrom") if isinstance(got.get("replayFrom"), str) else None
        held.replay_mode = str(got.get("replayMode") or "recorded")
        if not got.get("bounded") and held.replay_from is None:
            self._unbounded[(cell, hive)] = time.monotonic() + self.unbounded_ttl
        held.hold = got.get("hold") if isinstance(got.get("hold"), str) else None
        granted = got.get("completion")
        held.completion = granted if isinstance(granted, int) else completion
        return held

    async def record(self, cell: str, session: str, call: dict[str, Any]) -> None:
        """Put one exchange in the session's journal (its cassette); a failure is logged."""
        name = session.rsplit("/", 1)[-1]
        try:
            await self.client.request(
                "POST", f"/api/v1/cells/{cell}/sessions/{name}/llm-calls", json_body=call
            )
        except ApiaryError as exc:
            log.warning("could not record an LLM call", extra={"cell": cell, "error": exc.message})

    async def lookup(self, cell: str, source: str, call: dict[str, Any]) -> dict[str, Any]:
        """The recorded answer of ``call`` in ``source``'s cassette (``response``), or why
        there is none (``missing``)."""
        try:
            answer = await self.client.request(
                "POST", f"/api/v1/cells/{cell}/llmcalls/lookup", json_body={"from": source, **call}
            )
        except ApiaryError as exc:
            raise GatewayRefusal(
                503, "replay_unavailable", f"the recorded calls could not be read: {exc.message}"
            ) from None
        return dict(answer.body) if isinstance(answer.body, dict) else {}

    async def settle(self, held: SharedHold, prompt: int, completion: int, model: str) -> None:
        body = {"hold": held.hold, "hive": held.hive, "session": held.session,
                "model": model or held.model, "prompt": prompt,
                "completion": completion}  # fmt: skip
        try:
            await self.client.request(
                "POST", f"/api/v1/cells/{held.cell}/llmbudget/settle", json_body=body
            )
        except ApiaryError as exc:  # the hold expires on its own; the usage is lost
            log.warning(
                "could not settle an LLM call's budget hold",
                extra={"cell": held.cell, "hold": held.hold, "error": exc.message},
            )


__all__ = ["ApiBudgets", "BudgetPaused", "SharedBudgets", "SharedHold"]
