"""A bus served over one connected socket: how a process of our own shares apiaryd's bus.

Embedded mode's bus lives in apiaryd's memory. To run the node — the drones' relays — in a
process of its own (``apiaryd --node-process``, both cores), apiaryd hands the child one end of a
socket pair and serves its bus on the other: :class:`BusServer` turns the client's frames
(:mod:`apiary.bus.wire`) into calls on the real bus, and the real bus's deliveries into frames.

It keeps the contract by composing it: a delivery the client has not settled is outstanding here
too (the real bus's ``ack_wait`` and ``max_in_flight`` apply), and when the client drains, leaves
or its connection ends, the real subscription drains and hands every unsettled message back —
so a node that dies loses nothing, as a JetStream consumer that dies loses nothing.

The socket is not a listening one: only the process apiaryd gave it to can speak on it, and
drones inherit no descriptors (:mod:`apiary.node.sandbox`), so an agent cannot reach the bus.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from typing import Any

from apiary.bus.base import Bus, Delivery, Publish, Subscription
from apiary.bus.wire import Outbox, WireError, read_frame
from apiary.errors import ApiaryError

log = logging.getLogger("apiary.bus")

_SETTLES = frozenset("atnwf")
"""One-way operations on a delivery (:mod:`apiary.bus.wire`): ack, term, nak, in_progress,
forget."""


class BusServer:
    """Serves one client's calls on ``bus`` until the client goes away."""

    def __init__(
        self, bus: Bus, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.bus = bus
        self._reader = reader
        self._out = Outbox(writer)
        self._subs: dict[int, Subscription] = {}
        self._deliveries: dict[int, tuple[int, Delivery]] = {}
        """delivery number → (subscription number, the real bus's delivery), until settled."""
        self._dids = itertools.count(1)

    async def run(self) -> None:
        """Serve until the client closes its end; then leave every subscription it held."""
        try:
            while (got := await read_frame(self._reader)) is not None:
                await self._handle(*got)
        except (WireError, ConnectionError, OSError) as exc:
            log.warning("bus client connection broken", extra={"error": str(exc)})
        except (IndexError, TypeError, ValueError, KeyError) as exc:  # a head of the wrong shape
            log.warning("bus client sent a malformed frame", extra={"error": repr(exc)})
        finally:
            for sub in list(self._subs.values()):
                await sub.drain()
            self._subs.clear()
            self._deliveries.clear()
            await self._out.close()

    async def _handle(self, head: list[Any], body: bytes) -> None:
        op = head[0]
        if op in _SETTLES:
            await self._settle(op, head)
            return
        seq = head[1]
        try:
            await self._call(op, head, body)
        except ApiaryError as exc:
            details = [[d.field, d.message] for d in exc.details]
            self._out.send(["err", seq, type(exc).__name__, exc.message, details])
        except Exception as exc:
            log.exception("bus call failed", extra={"op": op})
            self._out.send(["err", seq, "Unavailable", f"the bus failed: {exc}", []])
        else:
            self._out.send(["ok", seq])

    async def _settle(self, op: str, head: list[Any]) -> None:
        """ack, term, nak, in_progress or forget one delivery: one-way, no answer."""
        did = head[1]
        if op == "w":
            held = self._deliveries.get(did)
            if held is not None:
                await held[1].in_progress()
            return
        held = self._deliveries.pop(did, None)
        if held is None or op == "f":  # settled before, or the client's copy expired
            return
        delivery = held[1]
        if op == "a":
            await delivery.ack()
        elif op == "t":
            await delivery.term()
        else:
            await delivery.nak(head[2])

    async def _call(self, op: str, head: list[Any], body: bytes) -> None:
        if op == "p":
            items, at = [], 0
            for subject, msg_id, headers, size in head[2]:
                items.append(Publish(subject, body[at : at + size], msg_id, headers))
                at += size
            await self.bus.publish_many(items)
        elif op == "s":
            _, _, sid, subject, group, max_in_flight, ack_wait = head
            sub = await self.bus.subscribe(
                subject, group, self._forwarder(sid),
                max_in_flight=max_in_flight, ack_wait=ack_wait,
            )  # fmt: skip
            self._subs[sid] = sub
        elif op == "x":
            leaving = self._subs.pop(head[2], None)
            if leaving is not None:
                await leaving.drain()
                for did in [d for d, (s, _) in self._deliveries.items() if s == head[2]]:
                    del self._deliveries[did]
        elif op == "g":
            await self.bus.remove_group(head[2], head[3])
        else:
            raise WireError(f"unknown operation {op!r}")

    def _forwarder(self, sid: int) -> Any:
        out, deliveries, dids = self._out, self._deliveries, self._dids

        async def forward(d: Delivery) -> None:
            did = next(dids)
            deliveries[did] = (sid, d)
            headers = dict(d.headers) if d.headers else None
            out.send(["d", sid, did, d.subject, d.msg_id, headers, d.num_delivered], d.data)

        return forward


async def serve_bus(bus: Bus, sock: socket.socket) -> None:
    """Serve ``bus`` on a connected stream socket until its peer closes it (then close it)."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    await BusServer(bus, reader, writer).run()


__all__ = ["BusServer", "serve_bus"]
