"""The budgets above one drone — its Cell's, its Hive's, its session's — reserved through the API.

A drone's own budgets (per message, per minute) live in its :class:`~apiary.gateway.budget.
DroneMeter`; the others are shared by drones on many nodes, so they are held where every node
sees the same numbers: apiaryd's ledger (:mod:`apiary.api.budgets`), one atomic store
transaction per reservation. Before a call the gateway reserves its maximum (prompt estimate +
``max_tokens``); apiaryd answers how many completion tokens every scope leaves (the call's
``max_tokens`` is clamped to it) or refuses naming the scope; after the call the gateway settles
what the provider reported, which also keeps each scope's usage and estimated cost.

A Cell, Hive and session without any budget answer ``bounded: false``; the gateway then skips
reserving for that hive for :attr:`ApiBudgets.unbounded_ttl` seconds (a budget set meanwhile
applies within that) but still settles every call, so usage is counted everywhere.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

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


class SharedBudgets(Protocol):
    async def reserve(
        self, cell: str, hive: str | None, session: str | None, model: str, prompt: int,
        completion: int | None, min_completion: int,
    ) -> SharedHold: ...  # fmt: skip

    async def settle(self, held: SharedHold, prompt: int, completion: int, model: str) -> None: ...


class ApiBudgets:
    """:class:`SharedBudgets` through apiaryd's ``/api/v1/cells/{cell}/llmbudget``."""

    def __init__(self, client: AsyncApiClient, *, unbounded_ttl: float = 5.0) -> None:
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
        if not got.get("bounded"):
            self._unbounded[(cell, hive)] = time.monotonic() + self.unbounded_ttl
        held.hold = got.get("hold") if isinstance(got.get("hold"), str) else None
        granted = got.get("completion")
        held.completion = granted if isinstance(granted, int) else completion
        return held

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
