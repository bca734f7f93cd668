"""What LLM tokens cost, for the ``apiary_llm_cost_usd_total`` estimate (docs/observability.md).

**Estimates.** :data:`BUILT_IN` holds the providers' published list prices, in US dollars per
million tokens (input, output), as of :data:`PRICED_ON`: the standard tier, without batch or
prompt-caching discounts, and for models whose price rises with the prompt's length the price of
the shorter prompts. Prices change; the provider's invoice is the truth. To correct or extend
the table, point ``APIARY_LLM_PRICES`` at a YAML (or JSON) file of the same shape, read once when
apiaryd starts; its entries replace the built-in ones of the same name and add others::

    # USD per 1M tokens
    gpt-4o-mini: {input: 0.15, output: 0.60}
    llama3.1:8b: {input: 0, output: 0}      # a model of our own: tokens count, cost nothing

A model name matches an entry with the same name, else the longest entry it starts with followed
by ``-`` (``gpt-4o-mini-2024-07-18`` is ``gpt-4o-mini``, ``claude-3-5-sonnet-20241022`` is
``claude-3-5-sonnet``), trying the name after a ``provider/`` prefix too (``openai/gpt-4o``). A
model that matches nothing costs nothing — its tokens are counted all the same.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from apiary.errors import Invalid

PRICED_ON = "2025-06"
"""When :data:`BUILT_IN` was taken from the providers' price pages."""

ENV = "APIARY_LLM_PRICES"
"""The environment variable naming a price file that overrides and extends :data:`BUILT_IN`."""


class Price(NamedTuple):
    """US dollars per million tokens."""

    input: float
    output: float

    def of(self, prompt: int, completion: int) -> float:
        return (prompt * self.input + completion * self.output) / 1_000_000


BUILT_IN: dict[str, Price] = {
    # OpenAI
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "o1": Price(15.00, 60.00),
    "o1-mini": Price(1.10, 4.40),
    "o3": Price(2.00, 8.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
    "text-embedding-ada-002": Price(0.10, 0.0),
    # Anthropic
    "claude-opus-4": Price(15.00, 75.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-3-5-sonnet": Price(3.00, 15.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-3-opus": Price(15.00, 75.00),
    "claude-3-haiku": Price(0.25, 1.25),
    # Google (prompts up to 200k tokens for 2.5 Pro, 128k for 1.5)
    "gemini-2.5-pro": Price(1.25, 10.00),
    "gemini-2.5-flash": Price(0.30, 2.50),
    "gemini-2.0-flash": Price(0.10, 0.40),
    "gemini-1.5-pro": Price(1.25, 5.00),
    "gemini-1.5-flash": Price(0.075, 0.30),
    # DeepSeek (standard hours), Mistral
    "deepseek-chat": Price(0.27, 1.10),
    "deepseek-reasoner": Price(0.55, 2.19),
    "mistral-large": Price(2.00, 6.00),
    "mistral-small": Price(0.10, 0.30),
}
"""Estimates: list prices in USD per 1M (input, output) tokens as of :data:`PRICED_ON`."""

_CACHE_LIMIT = 1024


class Prices:
    """A price table and the name matching of the module docstring (results cached)."""

    def __init__(self, table: Mapping[str, Price] | None = None) -> None:
        self.table: dict[str, Price] = dict(BUILT_IN if table is None else table)
        self._found: dict[str, Price | None] = {}

    def of(self, model: str) -> Price | None:
        """The price of ``model``, None when it matches no entry."""
        try:
            return self._found[model]
        except KeyError:
            pass
        found = self._match(model)
        if model.rpartition("/")[2] != model and found is None:
            found = self._match(model.rpartition("/")[2])
        if len(self._found) >= _CACHE_LIMIT:
            self._found.clear()
        self._found[model] = found
        return found

    def _match(self, name: str) -> Price | None:
        exact = self.table.get(name)
        if exact is not None or not name:
            return exact
        cut = name.rfind("-")
        while cut > 0:  # the longest entry the name starts with, at a "-"
            hit = self.table.get(name[:cut])
            if hit is not None:
                return hit
            cut = name.rfind("-", 0, cut)
        return None


def usd(cost: float) -> float:
    """An estimated cost as Apiary shows it: to the nano-dollar, so a sum of floats reads as the
    figure a person would work out (0.000022, not 0.000022000000000000003)."""
    return round(cost, 9)


def parse_prices(data: Any, where: str = "the price table") -> dict[str, Price]:
    """``{model: {input: USD per 1M, output: USD per 1M}}`` as :class:`Price` entries."""
    if not isinstance(data, dict):
        raise Invalid(f"{where}: expected a mapping of model name to {{input, output}}")
    out: dict[str, Price] = {}
    for model, entry in data.items():
        if not isinstance(entry, dict) or set(entry) - {"input", "output"}:
            raise Invalid(f"{where}: {model!r} must be {{input: USD, output: USD}} per 1M tokens")
        values = [entry.get("input", 0), entry.get("output", 0)]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise Invalid(f"{where}: {model!r}: prices are numbers (USD per 1M tokens)")
        if min(values) < 0:
            raise Invalid(f"{where}: {model!r}: prices must not be negative")
        out[str(model)] = Price(float(values[0]), float(values[1]))
    return out


def load_prices(path: str | os.PathLike[str]) -> Prices:
    """The built-in table with the entries of the YAML/JSON file at ``path`` over it."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise Invalid(f"{ENV}={path}: cannot read it: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Invalid(f"{ENV}={path}: not YAML: {exc}") from None
    return Prices({**BUILT_IN, **parse_prices(data or {}, f"{ENV}={path}")})


def prices_from_env(env: Mapping[str, str] | None = None) -> Prices:
    """:func:`load_prices` of ``$APIARY_LLM_PRICES`` when set, else the built-in table."""
    path = (os.environ if env is None else env).get(ENV, "")
    return load_prices(path) if path else Prices()


__all__ = [
    "BUILT_IN", "ENV", "PRICED_ON", "Price", "Prices", "load_prices", "prices_from_env", "usd",
]  # fmt: skip
