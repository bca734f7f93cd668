"""``apiaryd``: the control plane in one process, no flags needed.

    apiaryd [--data-dir DIR] [--host H] [--port 8080] [--store URL] [--max-body-bytes N]
            [--log-level info] [--changelog-retention N] [--secret-key-file F]
            [--no-local-node | --node-process]
    apiaryd node --server URL --token T [--name N]     # a node agent alone, on a worker machine

Embedded SQLite at ``<data-dir>/apiary.db`` by default; logs
``apiaryd listening on http://H:P (data dir D)`` (with ``url``, ``host``, ``port`` and
``data_dir`` as keys) when ready. Every line on stderr is a log line: JSON when stderr is not a
terminal, console text on one (``--log-format`` overrides; :mod:`apiary.logging`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from apiary import __version__
from apiary.errors import ApiaryError
from apiary.logging import FORMATS, configure_logging, default_format, get_logger
from apiary.loop import run as run_loop
from apiary.server.daemon import Daemon
from apiary.server.settings import (
    CombConfig,
    ControllerSettings,
    HttpSettings,
    LoggingSettings,
    MessagingSettings,
    RuntimeSettings,
    SecuritySettings,
    Settings,
    StoreConfig,
    default_data_dir,
    default_tiers,
)
from apiary.telemetry.tracing import init_tracing

_LEVELS = ("debug", "info", "warning", "error")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="apiaryd",
        description="Apiary control plane. `apiaryd node --help`: a node agent alone.",
    )
    p.add_argument("--version", action="version", version=f"apiaryd {__version__}")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="state directory (env APIARY_DATA_DIR, default ~/.local/share/apiary)",
    )
    p.add_argument("--host", help="listen address (env APIARY_HOST, default 127.0.0.1)")
    p.add_argument(
        "--port", type=_port, help="listen port; 0 = any free port (env APIARY_PORT, default 8080)"
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="store URL: sqlite:///path, postgresql://…, "
        "memory:// (env APIARY_STORE, default sqlite in the data dir)",
    )
    p.add_argument(
        "--max-body-bytes", type=_positive_int, help="request body limit (default 1048576)"
    )
    p.add_argument(
        "--max-message-bytes",
        type=_positive_int,
        help="largest session message payload (default 262144); larger is answered with 413",
    )
    p.add_argument("--log-level", choices=_LEVELS, help="env APIARY_LOG_LEVEL, default info")
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        help="env APIARY_LOG_FORMAT; default json, or console when stderr is a terminal",
    )
    p.add_argument(
        "--changelog-retention",
        type=_positive_int,
        help="change-log entries kept for watches (default 100000)",
    )
    p.add_argument(
        "--compact-interval",
        type=_seconds,
        help="seconds between change-log compactions (default 5)",
    )
    p.add_argument(
        "--bookmark-interval", type=_seconds, help="seconds between watch BOOKMARKs (default 15)"
    )
    p.add_argument(
        "--resync-interval",
        type=_seconds,
        help="seconds between full controller passes (default 30)",
    )
    p.add_argument(
        "--bus",
        metavar="URL",
        help="message bus: memory:// (default) or nats://host:4222 (env APIARY_BUS)",
    )
    p.add_argument(
        "--journal",
        metavar="URL",
        help="session journal (env APIARY_JOURNAL; default sqlite in the data dir, "
        "or the store URL when it is PostgreSQL)",
    )
    p.add_argument(
        "--comb",
        metavar="URL",
        help="session and long-term memory: sqlite:///path, postgresql://…, redis://… (env "
        "APIARY_COMB; default sqlite in the data dir, or the store URL when it is PostgreSQL)",
    )
    p.add_argument(
        "--comb-session-bytes",
        type=_positive_int,
        help="memory one session may hold in its comb (default 1048576)",
    )
    p.add_argument(
        "--no-local-node",
        action="store_true",
        help="run no node agent in this process (drones run on `apiaryd node` machines)",
    )
    p.add_argument(
        "--node-process",
        action="store_true",
        help="run the local node in a child process of its own, on another core than the "
        "router and API (env APIARY_NODE_PROCESS=1; docs/apiaryd.md)",
    )
    p.add_argument("--node-name", help="the local node's name (default: the host name)")
    p.add_argument("--node-cpu", type=_positive_int, help="millicores the local node offers")
    p.add_argument("--node-memory", type=_positive_int, help="bytes the local node offers")
    p.add_argument(
        "--lease-seconds", type=_seconds, help="node lease before drones move (default 10)"
    )
    p.add_argument(
        "--drone-user",
        metavar="UID[:GID]",
        help="who the local node's drones run as when apiaryd is root and the AgentSpec sets no "
        "securityContext.runAsUser (env APIARY_DRONE_USER; default 65534:65534, nobody)",
    )
    p.add_argument(
        "--secret-key-file",
        type=Path,
        help="base64 AES-256 key for Secrets "
        "(default <data-dir>/secret.key; env APIARY_SECRET_KEY wins)",
    )
    return p


def parse_user(value: str) -> tuple[int, int]:
    """``UID[:GID]`` as numbers (a gid left out is the uid); names are not looked up."""
    uid_text, _, gid_text = value.partition(":")
    try:
        uid = int(uid_text)
        gid = int(gid_text) if gid_text else uid
    except ValueError:
        raise ValueError("use numbers: UID or UID:GID") from None
    if not (0 <= uid < 2**31 and 0 <= gid < 2**31):
        raise ValueError("uid and gid must be between 0 and 2147483647")
    return uid, gid


def settings_from(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Flags, then env, then defaults. Bad values exit with a usage error (code 2)."""
    env = os.environ if env is None else env
    parser = build_parser()
    a = parser.parse_args(argv)

    def pick(flag: object, name: str, default: object, convert: type = str) -> object:
        if flag is not None:
            return flag
        raw = env.get(name)
        if raw in (None, ""):
            return default
        try:
            return convert(raw)
        except ValueError:
            parser.error(f"environment variable {name}={raw!r} is not a valid {convert.__name__}")

    port = pick(a.port, "APIARY_PORT", 8080, int)
    assert isinstance(port, int)
    if not 0 <= port <= 65535:
        parser.error(f"APIARY_PORT={port} is not a port number (0-65535)")
    level = str(pick(a.log_level, "APIARY_LOG_LEVEL", "info")).lower()
    if level not in _LEVELS:
        parser.error(f"APIARY_LOG_LEVEL={level!r}: use one of {', '.join(_LEVELS)}")
    fmt = str(pick(a.log_format, "APIARY_LOG_FORMAT", default_format())).lower()
    if fmt not in FORMATS:
        parser.error(f"APIARY_LOG_FORMAT={fmt!r}: use one of {', '.join(FORMATS)}")
    data_dir = (
        a.data_dir.expanduser()
        if a.data_dir
        else (
            Path(env["APIARY_DATA_DIR"]).expanduser()
            if env.get("APIARY_DATA_DIR")
            else default_data_dir()
        )
    )
    http = HttpSettings(host=str(pick(a.host, "APIARY_HOST", "127.0.0.1")), port=port)
    if a.max_body_bytes:
        http.max_body_bytes = a.max_body_bytes
    if a.max_message_bytes:
        http.max_message_bytes = a.max_message_bytes
    if a.bookmark_interval:
        http.bookmark_interval = a.bookmark_interval
    store = StoreConfig(url=pick(a.store, "APIARY_STORE", None))  # type: ignore[arg-type]
    if a.changelog_retention:
        store.changelog_retention = a.changelog_retention
    if a.compact_interval:
        store.compact_interval = a.compact_interval
    controllers = ControllerSettings()
    if a.resync_interval:
        controllers.resync_interval = a.resync_interval
    runtime = RuntimeSettings(
        local_node=not a.no_local_node and env.get("APIARY_LOCAL_NODE", "1") not in ("0", "false"),
        node_process=a.node_process or env.get("APIARY_NODE_PROCESS", "0") in ("1", "true"),
        node_name=a.node_name,
        node_cpu=a.node_cpu,
        node_memory=a.node_memory,
    )
    if runtime.node_process and not runtime.local_node:
        parser.error("--node-process runs the local node apart: it cannot go with no local node")
    if a.lease_seconds:
        runtime.lease_seconds = a.lease_seconds
    drone_user = a.drone_user or env.get("APIARY_DRONE_USER")
    if drone_user:
        try:
            runtime.drone_uid, runtime.drone_gid = parse_user(drone_user)
        except ValueError as exc:
            parser.error(f"--drone-user {drone_user!r}: {exc}")
    messaging = MessagingSettings(
        journal_url=pick(a.journal, "APIARY_JOURNAL", None),  # type: ignore[arg-type]
        bus_url=str(pick(a.bus, "APIARY_BUS", "memory://")),
    )
    comb = CombConfig(url=pick(a.comb, "APIARY_COMB", None))  # type: ignore[arg-type]
    if a.comb_session_bytes:
        comb.max_session_bytes = a.comb_session_bytes
    try:
        tiers = default_tiers(env)
    except ValueError as exc:
        parser.error(str(exc))
    return Settings(
        tiers=tiers,
        comb=comb,
        messaging=messaging,
        runtime=runtime,
        data_dir=data_dir,
        http=http,
        store=store,
        security=SecuritySettings(
            secret_key_file=a.secret_key_file, secret_key=env.get("APIARY_SECRET_KEY") or None
        ),
        logging=LoggingSettings(level=level, json=fmt != "console"),
        controllers=controllers,
    )


def _run(coro_main: Daemon) -> None:
    run_loop(coro_main.run())


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["node"]:
        from apiary.node.main import main as node_main

        node_main(args[1:])
        return
    settings = settings_from(args)
    configure_logging(json=settings.logging.json, level=settings.logging.level)
    init_tracing("apiaryd")  # OTEL_* (docs/observability.md); off without
    try:
        _run(Daemon(settings))
    except (ApiaryError, OSError) as exc:  # bad configuration: a clear line, not a traceback
        message = exc.message if isinstance(exc, ApiaryError) else str(exc)
        get_logger("apiary.daemon").error("apiaryd: error", error=message)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
