"""The asyncpg plumbing every PostgreSQL backend (store, journal, Comb) shares.

Each backend used to carry its own copy of the same URL parsing, pool opening, pooled-connection
error mapping, LISTEN reconnection and shutdown; a fix to one (say, a pool that hangs on close)
had to be made three times. They differ only in the word they put in error messages (``what``:
"store", "journal", "comb") and in what a notification means to them, so that is all they pass.

asyncpg is imported only inside the functions: this module is imported by the PostgreSQL
backends alone, and the embedded mode never loads the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from apiary.errors import BadRequest, Unavailable


def parse_postgres_url(url: str, what: str) -> tuple[str, int, int]:
    """(dsn for asyncpg, pool min, pool max); our own query parameters are taken out.

    ``pool_min_size`` / ``pool_max_size`` are ours; every other parameter (``sslmode``, …) goes
    to asyncpg unchanged. Errors name ``what`` ("store URL …") so the user knows which flag.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise BadRequest(f"{what} URL {url!r}: scheme must be postgresql://")
    pool_min, pool_max = 1, 10
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ("pool_min_size", "pool_max_size"):
            if not value.isdigit() or int(value) < (0 if name == "pool_min_size" else 1):
                raise BadRequest(f"{what} URL parameter {name}={value!r}: a positive integer")
            if name == "pool_min_size":
                pool_min = int(value)
            else:
                pool_max = int(value)
        else:
            rest.append((name, value))
    if pool_min > pool_max:
        raise BadRequest(
            f"{what} URL: pool_min_size={pool_min} is larger than pool_max_size={pool_max}"
        )
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), parts.fragment))
    return dsn, pool_min, pool_max


async def open_pool(dsn: str, min_size: int, max_size: int, what: str) -> Any:
    """An asyncpg pool; an unreachable server is a clear 503 naming the backend.

    A connection goes back to the pool without asyncpg's reset query (``pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL``): that is one more round trip to the server for every
    acquire, and our pooled connections never hold what it undoes — LISTEN runs on a connection
    of its own (:class:`Listener`), advisory locks are ``pg_advisory_xact_lock`` (released at
    commit), cursors live inside transactions and nothing ``SET``s a session variable. asyncpg
    still rolls back a transaction left open and drops listeners before it calls ``reset``.
    """
    import asyncpg

    try:
        return await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, reset=_keep_session
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unavailable(f"cannot connect to the PostgreSQL {what}: {exc}") from exc


async def _keep_session(conn: Any) -> None:
    """The pool's ``reset``: nothing to undo (see :func:`open_pool`)."""


@contextlib.asynccontextmanager
async def pooled(pool: Any, what: str) -> AsyncIterator[Any]:
    """A pooled connection; losing the server becomes a clear 503, not a driver traceback."""
    import asyncpg

    if pool is None:
        raise RuntimeError(f"the PostgreSQL {what} is not open")
    try:
        async with pool.acquire() as conn:
            yield conn
    except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
        raise Unavailable(f"PostgreSQL {what} unavailable: {exc}") from exc


async def close_pool(pool: Any) -> None:
    """Close a pool, terminating it if closing hangs (a dead server) or fails."""
    if pool is None:
        return
    try:
        await asyncio.wait_for(pool.close(), 10)
    except (TimeoutError, Exception):
        pool.terminate()


async def close_connection(conn: Any) -> None:
    """Close one connection politely for 5 s, then cut it: shutdown must not hang on a dead peer."""
    if conn is None:
        return
    with contextlib.suppress(Exception):
        await conn.close(timeout=5)
    if not conn.is_closed():
        conn.terminate()


class Listener:
    """One dedicated LISTEN connection that comes back when the server drops it.

    Notifications sent while it was gone are lost, so after reconnecting it calls
    ``on_reconnect`` (the backend wakes everyone); the backend's periodic poll stays the safety
    net. Reconnection backs off from 50 ms to 5 s and stops when ``close`` is called.
    """

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_payload: Callable[[str], None],
        on_reconnect: Callable[[], None],
        *,
        name: str,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.name = name
        self._on_payload = on_payload
        self._on_reconnect = on_reconnect
        self.conn: Any = None  # asyncpg.Connection running LISTEN, None while reconnecting
        self._relisten: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Connect and LISTEN; raises if the server cannot be reached."""
        self._closing = False
        await self._listen()

    async def _listen(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.add_listener(self.channel, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._on_lost)
        self.conn = conn

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._on_payload(payload)

    def _on_lost(self, conn: Any) -> None:
        if self._closing or conn is not self.conn:
            return
        self.conn = None
        self._relisten = asyncio.get_running_loop().create_task(
            self._listen_again(), name=self.name
        )

    async def _listen_again(self) -> None:
        """Reconnect with backoff; then report that notifications may have been missed."""
        delay = 0.05
        while not self._closing:
            try:
                await self._listen()
            except Exception:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._on_reconnect()
            return

    async def close(self) -> None:
        """Stop reconnecting and close the connection; safe to call more than once."""
        self._closing = True
        if self._relisten is not None:
            self._relisten.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relisten
            self._relisten = None
        conn, self.conn = self.conn, None
        await close_connection(conn)


__all__ = [
    "Listener",
    "close_connection",
    "close_pool",
    "open_pool",
    "parse_postgres_url",
    "pooled",
]
