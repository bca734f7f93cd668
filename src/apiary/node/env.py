"""A drone's environment: literal values and ``valueFrom.secretKeyRef``, resolved via the API."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from apiary.errors import NotFound

SecretReader = Callable[[str], Awaitable[dict[str, Any]]]
"""Reads a Secret of the drone's cell by name, with its data revealed (base64 values)."""


class EnvError(Exception):
    """The environment cannot be built; ``reason`` goes to the drone status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def resolve_env(
    entries: list[dict[str, Any]] | None, read_secret: SecretReader, field: str = "runtime.env"
) -> dict[str, str]:
    """``runtime.env`` (or another list of the same shape, at ``field``: a stdio MCP server's
    ``mcpServers[0].env``) as a plain mapping. A missing Secret or key is an :class:`EnvError`
    naming the env entry (``runtime.env[0].valueFrom.secretKeyRef``), so the status tells what
    to create. Each Secret is read once per call."""
    env: dict[str, str] = {}
    secrets: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries or []):
        name = str(entry.get("name", ""))
        if "value" in entry and entry["value"] is not None:
            env[name] = str(entry["value"])
            continue
        ref = ((entry.get("valueFrom") or {}).get("secretKeyRef")) or {}
        if not ref:
            env[name] = ""
            continue
        where = f"{field}[{i}].valueFrom.secretKeyRef"
        secret_name, key = str(ref.get("name", "")), str(ref.get("key", ""))
        if secret_name not in secrets:
            try:
                secrets[secret_name] = await read_secret(secret_name)
            except NotFound:
                if ref.get("optional"):
                    continue
                raise EnvError(
                    "SecretNotFound", f"{where}: Secret {secret_name!r} not found (env {name})"
                ) from None
        data = secrets[secret_name].get("data") or {}
        if key not in data:
            if ref.get("optional"):
                continue
            raise EnvError(
                "SecretKeyNotFound",
                f"{where}: Secret {secret_name!r} has no key {key!r} (env {name})",
            )
        try:
            env[name] = base64.b64decode(str(data[key]), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise EnvError(
                "SecretUnreadable",
                f"{where}: Secret {secret_name!r} key {key!r} is not base64 text",
            ) from None
    return env
