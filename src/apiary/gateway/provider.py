"""Where a drone's LLM calls go: ``spec.llm`` of its AgentSpec and the Secret it names.

The node reads both through the API (the Secret with ``reveal=true``, as for ``runtime.env``), so
the provider's key lives in this process only; the agent's environment never holds it. Answers
are cached for ``ttl`` seconds: a call does not cost API round trips, and a rotated key or a
changed model is picked up within the TTL.

``spec.llm`` is taken from the Drone's spec, where the controllers put the AgentSpec's over its
Cell's default ``spec.llm`` (:mod:`apiary.resources.llm`), else from the AgentSpec the drone was
made from (``spec.agentSpec``).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from apiary.errors import ApiaryError, NotFound
from apiary.gateway.budget import GatewayRefusal

Obj = dict[str, Any]
Reader = Callable[[str, str, str], Awaitable[Obj]]
"""(kind, cell, name) → the object; Secrets revealed."""

DEFAULT_BASE_URL = "https://api.openai.com/v1"


DEFAULT_BASE_URLS = {
    "openai": DEFAULT_BASE_URL,
    "anthropic": "https://api.anthropic.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}
"""The base URL of each API when the Secret has none."""

DEFAULT_KEY_HEADERS = {"openai": "Authorization", "anthropic": "x-api-key",
                       "gemini": "x-goog-api-key"}  # fmt: skip
"""The header each API takes its key in, unless ``spec.llm.provider.apiKeyHeader`` says."""


@dataclass(frozen=True)
class Provider:
    base_url: str
    api_key: str | None
    model: str | None
    api: str = "openai"
    """``openai``, ``anthropic`` or ``gemini``: the shape of the provider's API."""
    key_header: str = "Authorization"

    def url(self, path: str) -> str:
        """``base_url`` + ``path``, keeping a query of the base URL after the path (Azure's
        ``?api-version=…``)."""
        base, sep, query = self.base_url.partition("?")
        return base.rstrip("/") + path + (sep + query if sep else "")

    def headers(self) -> dict[str, str]:
        if not self.api_key:
            return {}
        if self.key_header.lower() == "authorization":
            return {"Authorization": f"Bearer {self.api_key}"}
        return {self.key_header: self.api_key}


def _unconfigured(message: str) -> GatewayRefusal:
    return GatewayRefusal(503, "gateway_misconfigured", message)


class Providers:
    """Resolves and caches the :class:`Provider` of each drone."""

    def __init__(
        self, read: Reader, *, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.read = read
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[tuple[str, str, str], tuple[float, Obj]] = {}

    async def _get(self, kind: str, cell: str, name: str) -> Obj:
        key = (kind, cell, name)
        hit = self._cache.get(key)
        now = self.clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        obj = await self.read(kind, cell, name)
        self._cache[key] = (now + self.ttl, obj)
        return obj

    async def llm_spec(self, cell: str, drone_spec: Obj) -> Obj:
        llm = drone_spec.get("llm")
        if isinstance(llm, dict):
            return llm
        agentspec = drone_spec.get("agentSpec")
        if not agentspec:
            raise GatewayRefusal(404, "llm_not_configured", "this drone has no AgentSpec")
        try:
            spec = (await self._get("AgentSpec", cell, str(agentspec))).get("spec") or {}
        except NotFound:
            raise GatewayRefusal(
                404, "llm_not_configured", f"AgentSpec {agentspec!r} no longer exists"
            ) from None
        except ApiaryError as exc:
            raise GatewayRefusal(
                503, "gateway_unavailable", f"cannot read AgentSpec: {exc}"
            ) from exc
        llm = spec.get("llm")
        if not isinstance(llm, dict):
            raise GatewayRefusal(
                404, "llm_not_configured",
                f"AgentSpec {agentspec!r} has no spec.llm, nor has its Cell: add "
                "spec.llm.provider.secretRef to either",
            )  # fmt: skip
        return llm

    async def resolve(self, cell: str, drone_spec: Obj) -> Provider:
        llm = await self.llm_spec(cell, drone_spec)
        where = "spec.llm.provider.secretRef"
        if not isinstance(llm.get("provider"), dict):
            raise _unconfigured("spec.llm.provider: neither the AgentSpec nor its Cell's spec.llm "
                                "names a provider")  # fmt: skip
        ref = (llm.get("provider") or {}).get("secretRef") or {}
        name = ref.get("name")
        if not isinstance(name, str) or not name:
            raise _unconfigured(f"{where}.name is required")
        try:
            secret = await self._get("Secret", cell, name)
        except NotFound:
            raise _unconfigured(f"{where}: Secret {name!r} not found in cell {cell!r}") from None
        except ApiaryError as exc:
            raise GatewayRefusal(503, "gateway_unavailable", f"cannot read Secret: {exc}") from exc
        data = secret.get("data") or {}

        def value(key: str) -> str | None:
            raw = data.get(key)
            if raw is None:
                return None
            try:
                return base64.b64decode(str(raw), validate=True).decode().strip()
            except (binascii.Error, UnicodeDecodeError):
                raise _unconfigured(
                    f"{where}: Secret {name!r} key {key!r} is not base64 text"
                ) from None

        provider = llm.get("provider") or {}
        api = str(provider.get("api") or "openai")
        if api not in DEFAULT_BASE_URLS:
            raise _unconfigured(f"spec.llm.provider.api {api!r} is not one of openai, anthropic, "
                                "gemini")  # fmt: skip
        base_url = value(str(ref.get("baseUrlKey") or "baseUrl")) or DEFAULT_BASE_URLS[api]
        if not base_url.startswith(("http://", "https://")):
            raise _unconfigured(
                f"{where}: Secret {name!r} key {ref.get('baseUrlKey') or 'baseUrl'!r} must be an "
                f"http(s) URL, got {base_url[:60]!r}"
            )
        api_key = value(str(ref.get("apiKeyKey") or "apiKey")) or None
        model = llm.get("model")
        header = str(provider.get("apiKeyHeader") or DEFAULT_KEY_HEADERS[api])
        return Provider(base_url, api_key, str(model) if model else None, api, header)


__all__ = ["DEFAULT_BASE_URL", "DEFAULT_BASE_URLS", "DEFAULT_KEY_HEADERS", "Provider", "Providers"]
