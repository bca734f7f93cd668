"""Each Cell's and Hive's ``status.usage``: what their LLM calls used, from the budget ledger.

``{promptTokens, completionTokens, totalTokens, costUsd}`` — the camelCase names of a Session's
``status.usage`` plus the estimated cost — copied from apiaryd's per-Cell ledger
(:mod:`apiary.api.budget_ledger`), which every gateway call settles into. Why not write them
where the call is settled: that is once per LLM call, and a status write changes the object's
resourceVersion, which would make the reconcilers' conditioned writes of a busy Hive conflict and
fill the watch with changes nobody needs. So the ledger stays the one place a call touches, and
this level-triggered pass copies it onto the objects coalesced: at most once per
``usage.llm_min_interval`` (a burst of calls is one pass), only where the figures changed, with
the object's resourceVersion (a conflict is the next pass's). The Queen runs a pass when a
ledger changes and every ``usage.period``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from apiary.controllers.meta import Obj
from apiary.errors import Conflict, NotFound
from apiary.store import Store

log = logging.getLogger("apiary.controllers.llmusage")

KIND = "LlmBudgetLedger"
"""The ledger's kind (:data:`apiary.api.budget_ledger.KIND`; the controllers import no API)."""


def usage_of(entry: Any) -> dict[str, Any]:
    """``status.usage`` of one ledger scope (``tokens``, ``usd``, ``promptTokens``, …)."""
    entry = entry if isinstance(entry, dict) else {}
    total = int(entry.get("tokens") or 0)
    prompt = int(entry.get("promptTokens") or 0)
    completion = int(entry.get("completionTokens") or 0)
    if prompt + completion != total:  # counted before the ledger split them: all as prompt
        prompt = max(0, total - completion)
    return {
        "promptTokens": prompt,
        "completionTokens": completion,
        "totalTokens": total,
        "costUsd": round(float(entry.get("usd") or 0.0), 6),
    }


class LlmUsageController:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def run_once(self) -> dict[str, dict[str, Any]]:
        """One pass; returns the ``status.usage`` written, by ``cell`` or ``cell/hive``."""
        written: dict[str, dict[str, Any]] = {}
        for ledger in (await self.store.list(KIND)).items:
            cell = ledger["metadata"].get("namespace") or ""
            scopes = (ledger.get("status") or {}).get("scopes") or {}
            for scope, entry in scopes.items():
                if scope == "cell":
                    kind, namespace, name, label = "Cell", "", cell, cell
                elif scope.startswith("hive/"):
                    kind, namespace, name = "Hive", cell, scope[5:]
                    label = f"{cell}/{name}"
                else:
                    continue
                usage = usage_of(entry)
                if await self._write(kind, namespace, name, usage):
                    written[label] = usage
        return written

    async def _write(self, kind: str, namespace: str, name: str, usage: dict[str, Any]) -> bool:
        try:
            obj: Obj = await self.store.get(kind, namespace, name)
        except NotFound:
            return False  # a deleted Hive's figures stay in the ledger only
        if (obj.get("status") or {}).get("usage") == usage:
            return False
        body = copy.deepcopy(obj)
        body["status"] = {**(obj.get("status") or {}), "usage": usage}
        try:
            await self.store.update(body, subresource="status")  # conditioned on the rv read
        except (Conflict, NotFound):
            log.debug("object changed before its LLM usage was written; next pass",
                      extra={"kind": kind, "cell": namespace or name, "object": name})  # fmt: skip
            return False
        return True


__all__ = ["LlmUsageController", "usage_of"]
