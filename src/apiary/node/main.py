"""``apiaryd node``: a node agent alone, on a worker machine, talking to the control plane's API.

    apiaryd node --server URL --token-file PATH [--name N] [--data-dir D] [--cpu MILLICORES]
                 [--memory BYTES] [--lease-seconds S] [--log-level L] [--log-format json|console]

The node's token (``apiaryctl token create NAME --node N``) comes from ``--token-file`` (or
``$APIARY_TOKEN_FILE``), else ``$APIARY_TOKEN``; ``--token T`` still works but puts the secret
on the command line, which every local user can read (``ps``, ``/proc/*/cmdline``): a warning
says so. Outbound connections only: what the node knows of its drones reaches ``/metrics``
through their ``status`` (docs/observability.md). SIGTERM/SIGINT stop its drones gracefully and
exit 0. Every stderr line is a log line, JSON unless stderr is a terminal (:mod:`apiary.logging`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from apiary.bus import open_bus
from apiary.client import AsyncApiClient
from apiary.errors import ApiaryError, BadRequest
from apiary.logging import ANNOUNCE, FORMATS, configure_logging, default_format, get_logger
from apiary.loop import run as run_loop
from apiary.node.agent import NodeAgent, NodeSettings, node_name_from_host
from apiary.telemetry.tracing import init_tracing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="apiaryd node", description="Run an Apiary node agent: drones placed here run here."
    )
    p.add_argument("--server", help="control plane URL (env APIARY_SERVER)")
    p.add_argument(
        "--token-file", type=Path, help="file holding the node's bearer token (env "
        "APIARY_TOKEN_FILE); preferred to --token",
    )  # fmt: skip
    p.add_argument(
        "--token", help="bearer token (env APIARY_TOKEN); visible to every local user in the "
        "process list: prefer --token-file",
    )  # fmt: skip
    p.add_argument(
        "--bus", help="message bus the control plane uses, e.g. nats://host:4222 (env APIARY_BUS); "
        "without one the node runs drones but takes no session traffic",
    )  # fmt: skip
    p.add_argument("--name", help="node name (default: the host name as a DNS-1123 label)")
    p.add_argument(
        "--data-dir", type=Path, help="state dir for drone logs and process records "
        "(default $APIARY_DATA_DIR/node-NAME or ~/.local/share/apiary/node-NAME)",
    )  # fmt: skip
    p.add_argument("--cpu", type=int, help="CPU millicores offered (default: cores x 1000)")
    p.add_argument("--memory", type=int, help="memory bytes offered (default: all)")
    p.add_argument("--lease-seconds", type=float, default=10.0, help="node lease (default 10)")
    p.add_argument("--heartbeat-seconds", type=float, default=2.0, help="renewal period")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument(
        "--log-format", choices=FORMATS,
        help="env APIARY_LOG_FORMAT; default json, or console when stderr is a terminal",
    )  # fmt: skip
    return p


log = get_logger("apiary.node")


def settings_from(
    argv: Sequence[str] | None,
) -> tuple[NodeSettings, str | None, str | None, str | None]:
    parser = build_parser()
    a = parser.parse_args(argv)
    ns = NodeSettings(lease_seconds=a.lease_seconds, heartbeat_seconds=a.heartbeat_seconds)
    if a.name:
        ns.name = node_name_from_host(a.name)
    if a.cpu:
        ns.cpu_millicores = a.cpu
    if a.memory:
        ns.memory_bytes = a.memory
    base = Path(os.environ.get("APIARY_DATA_DIR") or Path.home() / ".local/share/apiary")
    ns.state_dir = str((a.data_dir or base / f"node-{ns.name}").expanduser())
    fmt = (a.log_format or os.environ.get("APIARY_LOG_FORMAT") or default_format()).lower()
    if fmt not in FORMATS:
        parser.error(f"APIARY_LOG_FORMAT={fmt!r}: use one of {', '.join(FORMATS)}")
    configure_logging(json=fmt == "json", level=a.log_level)
    token = node_token(a.token, a.token_file, warn=log.warning)
    return ns, a.server, token, a.bus or os.environ.get("APIARY_BUS") or None


ARGV_WARNING = (
    "apiaryd node: warning: --token on the command line is readable by every local user "
    "(ps, /proc/PID/cmdline); use --token-file PATH or APIARY_TOKEN_FILE instead"
)


def _print(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def node_token(
    argv_token: str | None, token_file: Path | None, warn: Callable[[str], object] = _print
) -> str | None:
    """The token: ``--token-file``, else ``$APIARY_TOKEN_FILE``, else ``--token`` (with a
    warning through ``warn``: a log line once logging is set up), else None (the client falls
    back to ``$APIARY_TOKEN``)."""
    path = token_file or (Path(p) if (p := os.environ.get("APIARY_TOKEN_FILE")) else None)
    if path is not None:
        try:
            text = path.expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SystemExit(f"apiaryd node: cannot read the token file {path}: {exc}") from None
        if not text:
            raise SystemExit(f"apiaryd node: the token file {path} is empty")
        return text
    if argv_token:
        warn(ARGV_WARNING)
    return argv_token or None


async def run_node(
    settings: NodeSettings, server: str | None, token: str | None, bus_url: str | None = None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as opened:
        client = await opened.enter_async_context(AsyncApiClient(server, token))
        me = await client.whoami()  # a wrong token or unreachable server fails here, clearly
        if me.get("role") == "node" and me.get("node") != settings.name:
            raise BadRequest(
                f"the token speaks for node {me.get('node')!r}, not {settings.name!r}: start "
                f"with --name {me.get('node')} (or use that node's token)"
            )
        bus = await opened.enter_async_context(open_bus(bus_url)) if bus_url else None
        agent = NodeAgent(client, settings, bus)
        running = asyncio.create_task(agent.run(stop), name="node")
        registered = asyncio.create_task(agent.registered.wait(), name="node:registered")
        try:
            await asyncio.wait([running, registered], return_when=asyncio.FIRST_COMPLETED)
            if agent.registered.is_set():  # its Node is stored with a fresh lease and Ready:
                get_logger(ANNOUNCE).info(  # what scripts wait for before placing drones on it
                    f"apiaryd node {settings.name} joined {client.server}",
                    node=settings.name, server=client.server,
                )  # fmt: skip
            await running
        finally:
            for task in (registered, running):
                task.cancel()
            await asyncio.gather(registered, running, return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings, server, token, bus_url = settings_from(argv)
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a token file problem: a log line, not a bare one
            log.error(exc.code)
            raise SystemExit(1) from None
        raise
    init_tracing("apiary-node", node=settings.name)  # OTEL_* (docs/observability.md)
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    try:
        run_loop(run_node(settings, server, token, bus_url))
    except ApiaryError as exc:
        log.error("apiaryd node: error", error=exc.message)
        raise SystemExit(3 if exc.status in (401, 503) else 1) from None
    except KeyboardInterrupt:
        pass
