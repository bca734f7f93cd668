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


CONTEXT_KEYS = ("server", "cell", "token")


def load_config_file(path: Path | None = None) -> Obj:
    """The config file as written: ``server``/``cell``/``token``, and optionally ``contexts``
    (``{name: {server, cell, token}}``) with ``current-context``; missing file: ``{}``."""
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
    contexts = raw.get("contexts")
    if contexts is not None and not (
        isinstance(contexts, dict) and all(isinstance(c, dict) for c in contexts.values())
    ):
        raise errors.BadRequest(f"config file {p}: contexts must map names to server/cell/token")
    return dict(raw)


def current_context(raw: Obj, path: Path | None = None) -> str | None:
    """``$APIARY_CONTEXT``, else the file's ``current-context``; one that is not in the file
    is an error (a typo must not silently fall back to another server)."""
    name = os.environ.get("APIARY_CONTEXT") or raw.get("current-context") or None
    if name is None:
        return None
    contexts = raw.get("contexts") or {}
    if str(name) not in contexts:
        known = ", ".join(map(str, contexts)) or "none"
        where = path or config_path()
        raise errors.BadRequest(f"no context {str(name)!r} in {where} (contexts: {known})")
    return str(name)


def load_config(path: Path | None = None) -> dict[str, str]:
    """What the config file says to use: its ``server``/``cell``/``token``, overlaid by the
    current context's (``$APIARY_CONTEXT`` or ``current-context``); missing file: ``{}``."""
    raw = load_config_file(path)
    flat = {str(k): str(v) for k, v in raw.items() if k in CONTEXT_KEYS and v is not None}
    name = current_context(raw, path)
    if name is not None:
        chosen = (raw.get("contexts") or {})[name]
        flat.update({str(k): str(v) for k, v in chosen.items() if v is not None})
    return flat


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
