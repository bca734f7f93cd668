"""Where the client finds its server and token: the config file, the environment, the local
data dir of an embedded apiaryd."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from apiary import errors
from apiary.resources import yaml_bounds

Obj = dict[str, Any]
DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_CELL = "default"


def config_path() -> Path:
    """``$APIARY_CONFIG``, else ``~/.config/apiary/config.yaml`` (honouring XDG_CONFIG_HOME)."""
    explicit = os.environ.get("APIARY_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "apiary" / "config.yaml"


def load_config(path: Path | None = None) -> dict[str, str]:
    """The config file's ``server``/``cell``/``token``; a missing file is an empty config."""
    p = path or config_path()
    try:
        raw = yaml_bounds.load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise errors.BadRequest(f"cannot read config file {p}: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise errors.BadRequest(f"config file {p}: must be a mapping of server/cell/token")
    return {str(k): str(v) for k, v in raw.items() if v is not None}


def data_dir() -> Path:
    """Where a local ``apiaryd`` keeps its data: ``$APIARY_DATA_DIR`` or ~/.local/share/apiary."""
    explicit = os.environ.get("APIARY_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "apiary"


def is_local(server: str) -> bool:
    host = urlsplit(server).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def resolve_token(server: str, token: str | None = None) -> str | None:
    """Explicit token, else $APIARY_TOKEN, else the config file, else a local admin.token."""
    if token:
        return token
    env = os.environ.get("APIARY_TOKEN")
    if env:
        return env
    configured = load_config().get("token")
    if configured:
        return configured
    if is_local(server):
        try:
            return (data_dir() / "admin.token").read_text(encoding="utf-8").strip() or None
        except OSError:
            return None
    return None


def normalize_server(server: str | None) -> str:
    s = (server or DEFAULT_SERVER).strip().rstrip("/")
    return s if "://" in s else f"http://{s}"
