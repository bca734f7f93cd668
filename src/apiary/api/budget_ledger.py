"""The LLM budget ledger of one Cell: what its cell, hives and sessions used and hold, in tokens
and estimated USD — and the arithmetic of reserving and settling a call against it.

Why one object per Cell: a reservation must check and hold room in *every* scope that applies
(Cell → Hive → Session) at once, with many drones on many nodes asking concurrently. The store's
one-key transaction (``Store.transact``: on SQLite one writer, on PostgreSQL the row lock every
write takes) makes "read the ledger, check every scope, add the hold" atomic with no lock of our
own, so 50 concurrent calls against a budget for 10 let exactly 10 through. The object is
bookkeeping, not an API kind: it is read through ``GET …/llmbudget`` only.

A reservation holds ``prompt + completion`` tokens (and their price) in each scope until the call
is settled with what the provider reported; a hold whose node never settles it (a node that
died) expires after :data:`HOLD_SECONDS`. Sessions are kept while they hold something or were
touched recently, at most :data:`MAX_SESSIONS` per Cell (the least recently used go first).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from apiary.telemetry.prices import Price, Prices

Obj = dict[str, Any]

KIND = "LlmBudgetLedger"
NAME = "llm"
HOLD_SECONDS = 900.0
"""A hold not settled within this (the gateway's longest call is 600 s) is dropped."""
MAX_SESSIONS = 2000
MICRO = 1e-6
USD_SLACK = 1e-9
"""Dollars summed in floating point are off by ~1e-17 per step; a budget of $0.15 for calls of
$0.015 must still take 10 of them."""


@dataclass(frozen=True)
class Limit:
    """What a scope may use in all: tokens and/or USD (None: no bound)."""

    tokens: int | None = None
    usd: float | None = None

    @property
    def bounded(self) -> bool:
        return self.tokens is not None or self.usd is not None


def _number(value: Any, *, whole: bool) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(int(value)) if whole else float(value)


def limit_of(budget: Any, *, session: bool = False) -> Limit:
    """The :class:`Limit` of a ``spec.budget`` (``perSession`` of it with ``session``)."""
    if not isinstance(budget, dict):
        return Limit()
    if session:
        budget = budget.get("perSession")
        if not isinstance(budget, dict):
            return Limit()
    tokens = _number(budget.get("tokens"), whole=True)
    return Limit(None if tokens is None else int(tokens), _number(budget.get("usd"), whole=False))


def tightest(*limits: Limit) -> Limit:
    tokens = [x.tokens for x in limits if x.tokens is not None]
    usd = [x.usd for x in limits if x.usd is not None]
    return Limit(min(tokens) if tokens else None, min(usd) if usd else None)


def pauses(cell: Obj | None, hive: Obj | None) -> bool:
    """Whether an exhausted budget holds the call (``onExhausted: pause``: the Hive's, else the
    Cell's) instead of refusing it."""
    for obj in (hive, cell):
        budget = ((obj or {}).get("spec") or {}).get("budget")
        said = budget.get("onExhausted") if isinstance(budget, dict) else None
        if said in ("fail", "pause"):
            return bool(said == "pause")
    return False


def replay_from(
    cell: Obj | None, hive: Obj | None, session: Obj | None = None
) -> tuple[str | None, str]:
    """(the session whose recorded calls answer, ``recorded`` or ``mixed``): the Session's
    ``spec.replay`` first, else ``spec.gateway: {mode: replay, replayFrom}`` of the Hive, else of
    the Cell; (None, ``live``) when calls go to the provider."""
    replay = ((session or {}).get("spec") or {}).get("replay")
    if isinstance(replay, dict) and isinstance(replay.get("session"), str):
        mode = replay.get("mode") if replay.get("mode") in ("recorded", "mixed") else "live"
        return (replay["session"] if mode != "live" else None), str(mode)
    for obj in (hive, cell):
        gateway = ((obj or {}).get("spec") or {}).get("gateway")
        if isinstance(gateway, dict) and gateway.get("mode") in ("live", "replay"):
            source = gateway.get("replayFrom")
            if gateway["mode"] == "replay" and source:
                return str(source), "recorded"
            return None, "live"
    return None, "live"


def scope_limits(cell: Obj | None, hive: Obj | None, hive_name: str | None,
                 session: str | None) -> dict[str, Limit]:  # fmt: skip
    """Every scope a call of ``hive_name``'s ``session`` counts in, with its limit.

    The session's is the tightest of the Hive's and the Cell's ``budget.perSession`` and of the
    ``tokenBudgetPerSession`` guardrail of the Hive and of the Cell's defaults."""
    cell_spec = (cell or {}).get("spec") or {}
    hive_spec = (hive or {}).get("spec") or {}
    scopes = {"cell": limit_of(cell_spec.get("budget"))}
    if hive_name:
        scopes[f"hive/{hive_name}"] = limit_of(hive_spec.get("budget"))
    if session:
        guard = [
            (hive_spec.get("guardrails") or {}).get("tokenBudgetPerSession"),
            ((cell_spec.get("defaults") or {}).get("guardrails") or {}).get(
                "tokenBudgetPerSession"
            ),
        ]
        numbers = [_number(g, whole=True) for g in guard]
        from_guardrails = [Limit(int(g)) for g in numbers if g is not None]
        scopes[f"session/{session}"] = tightest(
            limit_of(hive_spec.get("budget"), session=True),
            limit_of(cell_spec.get("budget"), session=True),
            *from_guardrails,
        )
    return scopes


def cost(price: Price | None, prompt: int, completion: int) -> float:
    if price is None:
        return 0.0
    return (prompt * price.input + completion * price.output) * MICRO


def new_ledger(cell: str) -> Obj:
    return {"apiVersion": "apiary.io/v1", "kind": KIND,
            "metadata": {"name": NAME, "namespace": cell},
            "spec": {}, "status": {"scopes": {}, "holds": {}}}  # fmt: skip


def _entry(scopes: Obj, name: str) -> Obj:
    entry: Obj = scopes.setdefault(name, {})
    for key in ("tokens", "usd", "heldTokens", "heldUsd"):
        entry.setdefault(key, 0)
    return entry


def _tidy(status: Obj, now: float) -> None:
    """Drop expired holds (releasing what they held) and the least recent idle sessions."""
    scopes, holds = status["scopes"], status["holds"]
    for hold_id, hold in list(holds.items()):
        if hold["expires"] <= now:
            release(status, hold_id)
    sessions = [(e.get("at", 0), n) for n, e in scopes.items() if n.startswith("session/")]
    if len(sessions) > MAX_SESSIONS:
        for _, name in sorted(sessions)[: len(sessions) - MAX_SESSIONS]:
            if not scopes[name]["heldTokens"]:
                del scopes[name]


def release(status: Obj, hold_id: str | None) -> None:
    hold = status["holds"].pop(hold_id, None) if hold_id else None
    if hold is None:
        return
    for name in hold["scopes"]:
        entry = status["scopes"].get(name)
        if entry is not None:
            entry["heldTokens"] = max(0, entry["heldTokens"] - hold["tokens"])
            entry["heldUsd"] = max(0.0, entry["heldUsd"] - hold["usd"])


@dataclass
class Ask:
    """One call to reserve: its prompt (estimated) and the completion it may produce."""

    prompt: int
    completion: int | None
    """``max_tokens`` as asked; None: as many as the budgets leave."""
    min_completion: int
    price: Price | None


@dataclass
class Granted:
    hold: str | None
    completion: int | None
    """The completion the call may have (``max_tokens`` to send); None: unbounded."""
    refused: str | None = None
    scope: str | None = None


def _room(entry: Obj, limit: Limit, ask: Ask) -> tuple[float, str] | None:
    """The most completion tokens ``limit`` leaves after ``ask``'s prompt, and why."""
    best: tuple[float, str] | None = None
    if limit.tokens is not None:
        total = limit.tokens + int(entry.get("raisedTokens") or 0)
        left = total - entry["tokens"] - entry["heldTokens"]
        best = (left - ask.prompt, f"{max(0, left)} of its {total} tokens left")
    if limit.usd is not None:
        raised = float(entry.get("raisedUsd") or 0.0)
        left_usd = limit.usd + raised - entry["usd"] - entry["heldUsd"] + USD_SLACK
        price = ask.price
        room = math.inf
        if price is not None and price.output > 0:
            room = math.floor((left_usd - ask.prompt * price.input * MICRO) /
                              (price.output * MICRO))  # fmt: skip
        elif price is not None and left_usd < ask.prompt * price.input * MICRO:
            room = -1
        why = f"${max(0.0, left_usd):.6f} of its ${limit.usd + raised:g} left"
        if best is None or room < best[0]:
            best = (room, why)
    return best


def reserve(status: Obj, limits: dict[str, Limit], ask: Ask, now: float) -> Granted:
    """Hold room for ``ask`` in every scope, or refuse naming the scope that has none."""
    _tidy(status, now)
    scopes = status["scopes"]
    allowed = math.inf if ask.completion is None else float(ask.completion)
    for name, limit in limits.items():
        entry = _entry(scopes, name)
        entry["at"] = now
        if not limit.bounded:
            continue
        found = _room(entry, limit, ask)
        assert found is not None
        room, why = found
        if room < max(ask.min_completion, 0) or room < 0:
            need = f"{ask.prompt} prompt tokens" + (
                f" + at least {ask.min_completion}" if ask.min_completion else ""
            )
            return Granted(None, None, f"{name.replace('/', ' ', 1)} has {why}; this call "
                           f"needs {need}", name)  # fmt: skip
        allowed = min(allowed, room)
    completion = None if allowed == math.inf else int(allowed)
    tokens = ask.prompt + (completion or 0)
    usd = cost(ask.price, ask.prompt, completion or 0)
    hold_id = uuid.uuid4().hex
    status["holds"][hold_id] = {"scopes": list(limits), "tokens": tokens, "usd": usd,
                                "expires": now + HOLD_SECONDS}  # fmt: skip
    for name in limits:
        entry = scopes[name]
        entry["heldTokens"] += tokens
        entry["heldUsd"] += usd
    return Granted(hold_id, completion)


def raise_limit(status: Obj, scope: str, tokens: int, usd: float) -> list[str]:
    """Add ``tokens``/``usd`` to what ``scope`` may use; the sessions that waited on it."""
    entry = _entry(status["scopes"], scope)
    entry["raisedTokens"] = int(entry.get("raisedTokens") or 0) + tokens
    entry["raisedUsd"] = float(entry.get("raisedUsd") or 0.0) + usd
    waiting = status.setdefault("waiting", {})
    freed = [s for s, w in waiting.items() if w.get("scope") == scope or scope == "cell"
             or (scope.startswith("hive/") and w.get("hive") == scope[5:])]  # fmt: skip
    for session in freed:
        del waiting[session]
    return freed


def wait(status: Obj, session: str | None, hive: str | None, granted: Granted, now: float) -> None:
    """Note a session whose call waits for ``granted.scope`` to be raised."""
    if session:
        status.setdefault("waiting", {})[session] = {
            "scope": granted.scope,
            "hive": hive,
            "since": now,
            "message": granted.refused,
        }


def settle(status: Obj, hold_id: str | None, names: list[str], prompt: int, completion: int,
           price: Price | None, now: float) -> None:  # fmt: skip
    """Release the hold and count what the call really used in each scope of ``names``."""
    release(status, hold_id)
    usd = cost(price, prompt, completion)
    for name in names:
        entry = _entry(status["scopes"], name)
        entry["tokens"] += prompt + completion
        entry["promptTokens"] = int(entry.get("promptTokens") or 0) + prompt
        entry["completionTokens"] = int(entry.get("completionTokens") or 0) + completion
        entry["usd"] += usd
        entry["at"] = now
    _tidy(status, now)


def usage_view(status: Obj) -> Obj:
    """The ledger as ``GET …/llmbudget`` shows it: per scope ``tokens`` and ``usd`` used, and
    what calls in flight hold."""
    out: Obj = {"cell": {}, "hives": {}, "sessions": {}}
    for name, entry in sorted((status.get("scopes") or {}).items()):
        view = {"tokens": entry.get("tokens", 0), "usd": round(entry.get("usd", 0.0), 9),
                "heldTokens": entry.get("heldTokens", 0),
                "heldUsd": round(entry.get("heldUsd", 0.0), 9)}  # fmt: skip
        kind, _, rest = name.partition("/")
        if kind == "cell":
            out["cell"] = view
        else:
            out["hives" if kind == "hive" else "sessions"][rest] = view
        for key in ("raisedTokens", "raisedUsd"):
            if entry.get(key):
                view[key] = entry[key]
    out["waiting"] = dict(status.get("waiting") or {})
    return out


def prices_for(base: Prices, cell: Obj | None) -> Prices:
    """The server's price table with the Cell's ``spec.prices`` over it."""
    own = ((cell or {}).get("spec") or {}).get("prices")
    if not isinstance(own, dict) or not own:
        return base
    from apiary.telemetry.prices import parse_prices

    return Prices({**base.table, **parse_prices(own, "the Cell's spec.prices")})


__all__ = [
    "KIND",
    "NAME",
    "Ask",
    "Granted",
    "Limit",
    "reserve",
    "scope_limits",
    "settle",
    "usage_view",
]
