"""What a hop's LLM calls cost, priced once, when the router journals the hop.

The gateway counts an agent's tokens by the model that answered each call (``Outcome.models``);
the router writes them on the hop's entry and prices them with the Cell's price table — the
server's (``APIARY_LLM_PRICES`` over the built-in one) with the Cell's ``spec.prices`` over it,
as the budget ledger prices the same calls. Priced at record time rather than when read, so the
journal's running sum gives a session's cost in one row read, and a later price change does not
rewrite what a past hop was estimated to cost (the ledger settled it at the old price too).

The router may not import the API layer that owns the Cell-prices rule, so the daemon hands it
in (:class:`CellPrices`'s ``resolve``). Only hops whose outcome names models pay for any of
this: one store read per Cell every ``ttl`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from apiary.errors import ApiaryError
from apiary.journal import Entry
from apiary.store import Store
from apiary.telemetry.prices import Prices

Obj = dict[str, Any]
MAX_CELLS = 1024


def hop_cost(models: Iterable[tuple[str, int, int]], prices: Prices) -> float:
    """USD of ``(model, prompt, completion)`` calls; a model with no price costs nothing."""
    total = 0.0
    for model, prompt, completion in models:
        price = prices.of(model)
        if price is not None:
            total += price.of(prompt, completion)
    return total


def price_entries(entries: Iterable[Entry], prices: Prices) -> None:
    """Set ``cost_usd`` on the entries that carry per-model usage."""
    for e in entries:
        if e.models:
            e.cost_usd = hop_cost(e.models, prices)


@dataclass
class CellPrices:
    """A Cell's price table, read from the store at most every ``ttl`` seconds per Cell.

    ``resolve`` turns the Cell object (None when it cannot be read) into its table; the daemon
    passes the budget ledger's rule. A Cell that cannot be read is priced by ``resolve(None)``
    (the server's table) rather than failing the hop: the cost is an estimate, routing is not."""

    store: Store
    resolve: Callable[[Obj | None], Prices]
    ttl: float = 5.0
    clock: Callable[[], float] = time.monotonic
    cache: dict[str, tuple[Prices, float]] = field(default_factory=dict)

    async def __call__(self, cell: str) -> Prices:
        hit = self.cache.get(cell)
        now = self.clock()
        if hit is not None and now - hit[1] < self.ttl:
            return hit[0]
        obj: Obj | None
        try:
            obj = await self.store.get("Cell", "", cell)  # Cells are cluster-scoped
        except ApiaryError:
            obj = None
        try:
            prices = self.resolve(obj)
        except ApiaryError:  # a bad spec.prices (validated on write, so hardly ever)
            prices = self.resolve(None)
        if len(self.cache) >= MAX_CELLS:
            self.cache.clear()
        self.cache[cell] = (prices, now)
        return prices


__all__ = ["CellPrices", "hop_cost", "price_entries"]
