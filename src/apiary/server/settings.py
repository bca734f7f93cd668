"""apiaryd's settings: nested dataclasses, one docstring per field, built from flags and env.

Precedence: command-line flag, then environment variable, then the default here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from apiary.api.fairness import OverloadLimits
from apiary.resources.limits import AdmissionLimits
from apiary.resources.tiers import TierMap


def default_data_dir() -> Path:
    env = os.environ.get("APIARY_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "apiary"


def default_tiers(env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The server's tier map from ``APIARY_TIERS`` (JSON, the shape of a Cell's ``spec.tiers``:
    ``{"simple": {"model": "gpt-4o-mini", "maxTokens": 1024}, ...}``); ``{}`` when unset.
    Raises ValueError naming the variable when it is not such a map."""
    raw = (os.environ if env is None else env).get("APIARY_TIERS")
    if not raw:
        return {}
    try:
        parsed = TierMap.model_validate(orjson.loads(raw))
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"APIARY_TIERS is not a tier map: {why}") from None
    except ValueError as exc:  # orjson.JSONDecodeError
        raise ValueError(f"APIARY_TIERS is not JSON: {exc}") from None
    return parsed.model_dump(exclude_none=True)


@dataclass
class HttpSettings:
    host: str = "127.0.0.1"
    """Address to listen on (env ``APIARY_HOST``)."""

    port: int = 8080
    """TCP port; 0 picks a free one and prints it in the ready line (env ``APIARY_PORT``)."""

    max_body_bytes: int = 1 << 20
    """Largest request body; more is answered with 413."""

    max_message_bytes: int = 256 << 10
    """Largest session message payload; more is answered with 413."""

    bookmark_interval: float = 15.0
    """Seconds between BOOKMARK lines on idle watch streams."""

    graceful_timeout: float = 5.0
    """Seconds in-flight requests get to finish at shutdown."""


@dataclass
class StoreConfig:
    url: str | None = None
    """Store URL (env ``APIARY_STORE``); None means ``sqlite:///<data-dir>/apiary.db``."""

    changelog_retention: int = 100_000
    """Change-log entries kept for watches; a watch from an older version gets 410."""

    compact_interval: float = 5.0
    """Seconds between change-log compactions."""


@dataclass
class SecuritySettings:
    secret_key_file: Path | None = None
    """File holding the base64 AES-256 key for Secrets; default ``<data-dir>/secret.key``
    (created on first start). Env ``APIARY_SECRET_KEY`` (comma-separated for rotation) wins."""

    secret_key: str | None = field(default=None, repr=False)
    """The key itself, from ``APIARY_SECRET_KEY``; never printed."""


@dataclass
class LoggingSettings:
    level: str = "info"
    """debug, info, warning or error (env ``APIARY_LOG_LEVEL``)."""

    json: bool = True
    """One JSON object per line (env ``APIARY_LOG_FORMAT=json|console``)."""


@dataclass
class ControllerSettings:
    resync_interval: float = 30.0
    """Seconds between full passes of the in-process controllers (watches do the rest)."""


@dataclass
class RuntimeSettings:
    local_node: bool = True
    """Run a node agent inside apiaryd (embedded mode); ``--no-local-node`` for a control plane
    whose drones run only on ``apiaryd node`` machines."""

    node_process: bool = False
    """Run that local node in a child process of its own (``--node-process``, env
    ``APIARY_NODE_PROCESS=1``) instead of on apiaryd's event loop: the drones' relays then run
    on another core than the router, journal and API (:mod:`apiary.server.nodeproc`)."""

    node_name: str | None = None
    """The local node's name (default: the host name as a DNS-1123 label)."""

    node_cpu: int | None = None
    """CPU millicores the local node offers (default: cores x 1000)."""

    node_memory: int | None = None
    """Memory bytes the local node offers (default: the machine's memory)."""

    lease_seconds: float = 10.0
    """Node lease: drones of a node silent this long are placed elsewhere."""

    drone_uid: int = 65534
    """uid the local node's drones run as when apiaryd is root and their AgentSpec names no
    ``securityContext.runAsUser`` (``nobody``; docs/security.md)."""

    drone_gid: int = 65534
    """gid that goes with :attr:`drone_uid` (``nogroup``)."""


@dataclass
class MessagingSettings:
    journal_url: str | None = None
    """Session journal URL (env ``APIARY_JOURNAL``); None: ``sqlite:///<data-dir>/journal.db``,
    or the store's URL when the store is PostgreSQL."""

    bus_url: str = "memory://"
    """Message bus URL (env ``APIARY_BUS``): ``memory://`` in-process, ``nats://host:4222``."""


@dataclass
class CombConfig:
    url: str | None = None
    """Comb URL (env ``APIARY_COMB``): ``sqlite://``, ``postgresql://``, ``redis://``, ``memory://``.
    None: the store's database when the store is PostgreSQL, ``memory://`` with a memory store,
    else ``sqlite:///<data-dir>/comb.db``."""

    max_session_bytes: int = 1 << 20
    """Bytes of keys and values one session's memory may hold; more is refused with 413."""

    sweep_interval: float = 60.0
    """Seconds between sweeps that delete expired keys (reads never see them anyway)."""


@dataclass
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    """Where the SQLite database, admin token and secret key live (env ``APIARY_DATA_DIR``)."""

    http: HttpSettings = field(default_factory=HttpSettings)
    store: StoreConfig = field(default_factory=StoreConfig)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    controllers: ControllerSettings = field(default_factory=ControllerSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    messaging: MessagingSettings = field(default_factory=MessagingSettings)
    comb: CombConfig = field(default_factory=CombConfig)
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    """What one object may ask for (size, stages per Hive, replicas per stage, nesting,
    annotations); a Cell's ``resourceQuota`` may lower some of them (docs/api.md, Limits)."""
    tiers: dict[str, dict[str, Any]] = field(default_factory=default_tiers)
    """The server's task tier map (env ``APIARY_TIERS``, JSON): per tier (``simple``,
    ``standard``, ``complex``) the ``model`` and ``maxTokens`` of its drones' chat completions
    and its scheduling ``priority`` (low|normal|high). A Cell's ``spec.tiers`` overrides it
    field by field; what neither sets is the built-in map — priorities low/normal/high, no
    model, no cap (:mod:`apiary.resources.tiers`, docs/gateway.md "Task tiers")."""
    overload: OverloadLimits = field(default_factory=OverloadLimits)
    """Requests in flight at once per principal and lane (64 short per principal, 256 in all;
    64 per node token in the nodes' own lane; 128 long-running per principal, 2048 in all);
    over → 429 with ``Retry-After`` (docs/api.md, Overload)."""

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.data_dir / 'apiary.db'}"

    @property
    def comb_url(self) -> str:
        if self.comb.url:
            return self.comb.url
        if self.store_url.startswith(("postgresql:", "postgres:")):
            return self.store_url
        if self.store_url.startswith("memory:"):
            return "memory://"
        return f"sqlite:///{self.data_dir / 'comb.db'}"

    @property
    def journal_url(self) -> str:
        if self.messaging.journal_url:
            return self.messaging.journal_url
        if self.store_url.startswith(("postgresql:", "postgres:")):
            return self.store_url
        if self.store_url.startswith("memory:"):
            return "memory://"
        return f"sqlite:///{self.data_dir / 'journal.db'}"
