"""HTTP client for the Apiary REST API, used by ``apiaryctl`` and the node agent.

Everything that talks to the control plane goes through here so that both sides of the wire agree
on paths, auth and errors: a failed call raises the :mod:`apiary.errors` class matching the
server's structured error body (details kept), and an unreachable server raises
:class:`~apiary.errors.Unavailable` with a hint on how to start it. :class:`ApiClient` (sync) and
:class:`AsyncApiClient` share all logic except the I/O itself.
"""

from __future__ import annotations

from apiary.client.aio import AsyncApiClient
from apiary.client.config import (
    DEFAULT_CELL,
    DEFAULT_SERVER,
    config_path,
    current_context,
    data_dir,
    is_local,
    load_config,
    load_config_file,
    normalize_server,
    resolve_token,
)
from apiary.client.sync import ApiClient
from apiary.client.wire import (
    SERVER_MANAGED_METADATA,
    ApiResponse,
    ApplyResult,
    Call,
    WatchTimeout,
    error_from_response,
    is_secret,
    name_and_cell,
    normalized,
    parse_warnings,
    resolve_kind,
    selector_string,
)

__all__ = [
    "DEFAULT_CELL",
    "DEFAULT_SERVER",
    "SERVER_MANAGED_METADATA",
    "ApiClient",
    "ApiResponse",
    "ApplyResult",
    "AsyncApiClient",
    "Call",
    "WatchTimeout",
    "config_path",
    "current_context",
    "data_dir",
    "error_from_response",
    "is_local",
    "is_secret",
    "load_config",
    "load_config_file",
    "name_and_cell",
    "normalize_server",
    "normalized",
    "parse_warnings",
    "resolve_kind",
    "resolve_token",
    "selector_string",
]
