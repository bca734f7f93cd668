"""Watches that end at a deadline, to the second.

A watch's read timeout is reset by every line (a change, or the server's bookmark every 15 s),
so ``wait --timeout 20s`` once ran 32 s: the deadline was only looked at after a line. Here the
whole watch runs under one ``asyncio`` deadline (the async client), which cancels the read in
flight the moment the time is up, whatever the server sends or does not send.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar, cast

from apiary.client import AsyncApiClient
from apiary.ctl import output
from apiary.ctl.context import Ctl
from apiary.resources import KindInfo

Obj = dict[str, Any]
T = TypeVar("T")

Handler = Callable[[str, Obj], bool]
"""Called with each (type, object) of a watch, bookmarks included; True stops the watch."""


def until_deadline(
    ctl: Ctl, deadline: float | None, work: Callable[[AsyncApiClient], Awaitable[T]]
) -> tuple[bool, T | None]:
    """Run ``work`` with an async client of ``ctl``'s server, token and cell, cancelled at
    ``deadline`` (``time.monotonic()``; None: never). (True, result) when it finished in time,
    (False, None) when the deadline came first."""

    async def main() -> tuple[bool, T | None]:
        client = AsyncApiClient(ctl.server, ctl.token, ctl.cell, on_warning=output.warn)
        try:
            if deadline is None:
                return True, await work(client)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, None
            try:
                async with asyncio.timeout(remaining):
                    return True, await work(client)
            except TimeoutError:
                return False, None
        finally:
            await client.aclose()

    return asyncio.run(main())


async def watch(
    client: AsyncApiClient,
    info: KindInfo,
    cell: str,
    rv: str | None,
    handle: Handler,
    *,
    selector: str | None = None,
    field_selector: str | None = None,
    all_cells: bool = False,
) -> bool:
    """Feed every line of one watch to ``handle``: True once it asked to stop, False when the
    server ended the stream. The stream is closed either way."""
    events = cast(
        AsyncGenerator[tuple[str, Obj], None],
        client.watch(
            info,
            cell,
            rv,
            selector,
            all_cells=all_cells,
            field_selector=field_selector,
            bookmarks=True,
        ),
    )
    async with contextlib.aclosing(events):
        async for etype, obj in events:
            if handle(etype, obj):
                return True
    return False
