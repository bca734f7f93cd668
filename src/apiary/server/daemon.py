"""The control-plane process: one object that owns the store, the API and background tasks.

``Daemon.run()`` opens the store, bootstraps first-start state, serves HTTP under uvicorn and runs
the controllers under a :class:`Supervisor`; SIGTERM/SIGINT stop it gracefully (in-flight requests
finish, watch streams end, tasks are cancelled, the store is closed). The runtime issue adds the
node agent and more controllers with :meth:`Daemon.add_task`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import sys
from typing import Any, TextIO

import uvicorn

from apiary.api import ApiConfig, ReferenceResolver, api_state, create_app
from apiary.api.audit import AuditLog
from apiary.api.budget_ledger import prices_for
from apiary.api.budgets import server_prices
from apiary.api.comb import forget_deleted
from apiary.bus import Bus, open_bus
from apiary.comb import Comb, CombSettings, open_comb
from apiary.crypto import codec_from_config
from apiary.errors import ApiaryError
from apiary.journal import Journal, open_journal
from apiary.logging import ANNOUNCE, get_logger
from apiary.router import Router, SessionDirectory
from apiary.router.costs import CellPrices
from apiary.router.reconcile import StatusReconciler
from apiary.router.status import SessionStatusWriter
from apiary.server.bootstrap import ensure_default_cell, load_or_create_token, prepare_data_dir
from apiary.server.nodeproc import node_process_task
from apiary.server.notify import Notifier
from apiary.server.notify_metrics import NotifyMetrics
from apiary.server.runtime import (
    local_node_identity,
    local_node_task,
    queen_task,
    reap_local_orphans,
)
from apiary.server.settings import Settings
from apiary.server.supervisor import Supervisor, TaskFactory
from apiary.store import Store, StoreSettings, open_store
from apiary.telemetry.cluster import ClusterCollector
from apiary.telemetry.events import EventMetrics
from apiary.telemetry.scrape import install_metrics
from apiary.telemetry.taps import MeteredRouter, TimedBus, timed_journal

log = get_logger("apiary.daemon")


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.supervisor = Supervisor()
        self.stopping = asyncio.Event()
        self.store: Store | None = None
        self.journal: Journal | None = None
        self.bus: Bus | None = None
        self.comb: Comb | None = None
        self.token: str = ""
        self.node_token: str = ""  # the embedded node's: a node identity, not the admin's
        self.address: tuple[str, int] | None = None
        self._server: uvicorn.Server | None = None
        self._api_stopping: asyncio.Event | None = None

    def add_task(self, name: str, factory: TaskFactory) -> None:
        """Run ``factory()`` as a supervised background task once the store is open."""
        self.supervisor.add(name, factory)

    def stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM/SIGINT do)."""
        if self.stopping.is_set() and self._server is not None:
            self._server.force_exit = True  # second signal: do not wait for in-flight requests
        self.stopping.set()
        if self._api_stopping is not None:
            self._api_stopping.set()  # end watch streams so connections can drain
        if self._server is not None:
            self._server.should_exit = True

    async def run(self) -> None:
        s = self.settings
        os.umask(0o077)  # whatever apiaryd writes (stores, journal, logs) is its own only
        data_dir = prepare_data_dir(s.data_dir)
        self.token = load_or_create_token(data_dir)
        codec = codec_from_config(s.security.secret_key, s.security.secret_key_file, data_dir)
        store_settings = StoreSettings(
            changelog_retention=s.store.changelog_retention,
            compact_interval=s.store.compact_interval,
        )
        async with contextlib.AsyncExitStack() as opened:
            store = await opened.enter_async_context(
                open_store(s.store_url, store_settings, codec=codec)
            )
            self.store = store
            self.journal = await opened.enter_async_context(open_journal(s.journal_url))
            self.bus = await opened.enter_async_context(open_bus(s.messaging.bus_url))
            comb_settings = CombSettings(max_session_bytes=s.comb.max_session_bytes)
            self.comb = await opened.enter_async_context(open_comb(s.comb_url, comb_settings))
            if await ensure_default_cell(store):
                log.info("created the default cell")
            await self._serve(store)
        log.info("apiaryd stopped")

    async def _serve(self, store: Store) -> None:
        s = self.settings
        audit = AuditLog(s.data_dir / "audit.log")
        app = create_app(
            store,
            self.token,
            ApiConfig(
                max_body_bytes=s.http.max_body_bytes,
                bookmark_interval=s.http.bookmark_interval,
                max_message_bytes=s.http.max_message_bytes,
                admission=s.admission,
                overload=s.overload,
            ),
            log_dir=s.data_dir / "logs",
            comb=self.comb,
            audit=audit,
        )
        state = api_state(app)
        self._api_stopping = state.stopping
        if s.runtime.local_node:
            self.node_token, node_identity = local_node_identity(s)
            state.authenticator.tokens[self.node_token] = node_identity
        assert self.journal is not None and self.bus is not None
        sessions = SessionDirectory(store)
        # The router's journal commits, bus publishes, dispatches and answers feed the metrics
        # (apiary.telemetry.taps); the router itself knows nothing of them.
        router = MeteredRouter(
            timed_journal(self.journal),
            TimedBus(self.bus),
            sessions,
            # The in-process bus loses what it held in a crash; JetStream keeps its messages but
            # not a retry that was waiting on a timer, so both sweep at start (a copy JetStream
            # still holds is dropped by its dedupe window, or answered twice at worst, once seen).
            sweep_on_start=True,
        )
        status_writer = SessionStatusWriter(store, self.journal)
        router.on_status = status_writer.update
        # Status the writer gave up at the last shutdown, or lost to a crash, is re-derived from
        # the journal once at start, through the same writer (apiary.router.reconcile).
        self.supervisor.add(
            "status-reconcile", StatusReconciler(store, self.journal, status_writer).run
        )
        # Hops are priced as the budget ledger prices their calls: the server's table with the
        # Cell's spec.prices over it (apiary.router.costs).
        router.prices = CellPrices(store, lambda cell: prices_for(server_prices(), cell))
        notifier = Notifier(store, metrics=NotifyMetrics(state.metrics.registry))
        router.on_notice = notifier.on_notice  # webhooks, Events, metrics (docs/notifications.md)
        self.supervisor.add("notifier", notifier.run)
        state.router, state.journal = router, self.journal
        install_metrics(app, ClusterCollector(store, router.backlog.snapshot))
        event_metrics = EventMetrics(store)
        state.metrics.attach(event_metrics.registry)
        self.supervisor.add("event-metrics", event_metrics.run)

        async def route() -> None:
            try:
                await router.run(self.stopping)
            finally:  # the statuses of the router's last steps, not held back by the spacing
                await status_writer.flush()

        self.supervisor.add("router", route)
        resolver = ReferenceResolver(
            store, state.recorder, resync_interval=s.controllers.resync_interval
        )
        self.supervisor.add("reference-resolver", resolver.run)
        if self.comb is not None:
            self.supervisor.add("comb-sweeper", self._sweep_comb)
        if s.runtime.local_node:
            # What a crash left running (an agent's children holding descriptors) goes first,
            # so it cannot hold our port or take requests meant for us.
            await asyncio.to_thread(reap_local_orphans, s.data_dir)
        sock = _bind(s.http.host, s.http.port)
        config = uvicorn.Config(
            app,
            lifespan="off",
            access_log=False,
            log_config=None,
            http="httptools",
            timeout_graceful_shutdown=int(s.http.graceful_timeout),
            # Clients pool connections; uvicorn's 5 s idle close races a client reusing one
            # (a ReadError for a request the server never saw) — 75 s, as nginx does.
            timeout_keep_alive=75,
            server_header=False,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._install_signals()
        serving = asyncio.ensure_future(server._serve(sockets=[sock]))
        try:
            await self._announce(server, serving, sock, state.stopping)
            self._add_runtime(store, notifier, router)
            supervised = asyncio.ensure_future(self.supervisor.run(self.stopping))
            done, _ = await asyncio.wait({serving, supervised}, return_when=asyncio.FIRST_COMPLETED)
            self.stop()
            if supervised in done:
                await _finish(serving)
                supervised.result()  # re-raise a controller failure
            else:
                await _finish(supervised)
                serving.result()
        finally:
            self._remove_signals()
            for task in (serving,):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            sock.close()
            audit.close()

    async def _sweep_comb(self) -> None:
        """Delete expired comb keys now and then (reads already ignore them)."""
        assert self.comb is not None
        while True:
            await asyncio.sleep(self.settings.comb.sweep_interval)
            try:
                removed = await self.comb.purge_expired()
            except ApiaryError as exc:  # the backend is away: try again next time
                log.warning("comb sweep failed", error=str(exc))
                continue
            if removed:
                log.info("comb sweep", expired=removed)

    def _add_runtime(self, store: Store, notifier: Notifier, router: Router) -> None:
        """The Queen (with the drone notices for ``notifier``, the autoscaler reading the
        router's backlog and the session reaper handing timed-out sessions to the router to
        cancel), and in embedded mode the local node agent (needs our address)."""
        forget = functools.partial(forget_deleted, self.comb) if self.comb is not None else None
        self.supervisor.add(
            "queen",
            queen_task(
                store,
                self.settings,
                self.stopping,
                self.journal,
                forget,
                notifier=notifier,
                backlog=router.backlog.snapshot,
                on_session_ended=router.cancel_ended,
            ),
        )
        if self.settings.runtime.local_node and self.address is not None:
            assert self.bus is not None
            node = (node_process_task if self.settings.runtime.node_process else local_node_task)(
                self.address, self.node_token, self.settings, self.stopping, self.bus
            )
            self.supervisor.add("local-node", node)

    async def _announce(
        self,
        server: uvicorn.Server,
        serving: asyncio.Future[Any],
        sock: socket.socket,
        stopping: asyncio.Event,
    ) -> None:
        while not server.started:
            if serving.done():
                serving.result()
                raise RuntimeError("the HTTP server stopped during startup")
            await asyncio.sleep(0.005)
        host, port = sock.getsockname()[:2]
        self.address = (host, port)
        shown = f"[{host}]" if ":" in host else host
        url, data_dir = f"http://{shown}:{port}", str(self.settings.data_dir)
        # One log line; the sentence stays as it was for scripts that wait for it, the values
        # are keys for everything else (tests/e2e/cluster.py reads ``url``).
        get_logger(ANNOUNCE).info(
            f"apiaryd listening on {url} (data dir {data_dir})",
            url=url, host=host, port=port, data_dir=data_dir,
            store=_safe_url(self.settings.store_url),
        )  # fmt: skip

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGUSR1, dump_tasks)  # kept until exit

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)


def dump_tasks(out: TextIO | None = None) -> None:
    """Every asyncio task's name and where it waits, to stderr — what ``kill -USR1`` on apiaryd
    does (docs/apiaryd.md): what a stuck shutdown or a stalled flow is waiting for, without a
    debugger (thread stacks alone show only the event loop in ``select``)."""
    stream = out or sys.stderr
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    print(f"apiaryd: {len(tasks)} asyncio tasks", file=stream)
    for task in tasks:
        print(f"--- task {task.get_name()}", file=stream)
        task.print_stack(limit=12, file=stream)
    stream.flush()


async def _finish(task: asyncio.Future[Any]) -> None:
    """Wait for a task that was told to stop; errors during shutdown are logged, not raised."""
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        log.exception("error while shutting down")


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves so port 0 resolves before we announce it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    sock.set_inheritable(False)  # no agent process may ever hold the API's socket
    return sock


def _safe_url(url: str) -> str:
    """A store URL without its password, for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
