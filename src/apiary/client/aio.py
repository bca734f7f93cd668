"""The asynchronous client (``httpx.AsyncClient``): the node agent's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx

from apiary import errors
from apiary.client.base import _Base
from apiary.client.wire import (
    ApiResponse,
    ApplyResult,
    Call,
    Obj,
    Op,
    T,
    WatchTimeout,
)
from apiary.resources import KindInfo


class AsyncApiClient(_Base):
    """Asynchronous client (``httpx.AsyncClient``) with the same methods as :class:`ApiClient`."""

    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        cell: str | None = None,
        *,
        timeout: float = 30.0,
        on_warning: Callable[[str], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(server, token, cell)
        self.on_warning = on_warning
        self._http = httpx.AsyncClient(
            base_url=self.server, headers=self._headers(), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        timeout: float | None = None,
    ) -> ApiResponse:
        """Any call (subresources too); raises :mod:`apiary.errors` on failure."""
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        attempt = 0
        while True:
            try:
                resp = await self._http.request(
                    method, path, params=params, json=json_body, **extra
                )
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from exc
            delay = self._retry_delay(resp, attempt)
            if delay is None:
                return self._answer(resp)
            attempt += 1
            await asyncio.sleep(delay)

    async def _run(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                try:
                    answer = await self.request(
                        call.method, call.path, params=call.params, json_body=call.body
                    )
                except errors.ApiaryError as exc:
                    call = op.throw(exc)
                else:
                    call = op.send(answer)
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def whoami(self) -> Obj:
        return await self._run(self._op_one(Call("GET", "/api/v1/whoami")))

    async def create(self, obj: Obj, dry_run: bool = False, strict: bool = False) -> Obj:
        return await self._run(self._op_create(obj, dry_run, strict))

    async def get(
        self, kind: str | KindInfo, name: str, cell: str | None = None, *, reveal: bool = False
    ) -> Obj:
        params = {"reveal": "true"} if reveal else None
        return await self._run(self._op_one(Call("GET", self.path(kind, name, cell), params)))

    async def list(
        self,
        kind: str | KindInfo,
        cell: str | None = None,
        all_cells: bool = False,
        selector: str | Mapping[str, str] | None = None,
        limit: int | None = None,
        continue_: str | None = None,
        *,
        params: Mapping[str, str] | None = None,
    ) -> Obj:
        """The List object: ``items``, ``metadata.resourceVersion`` and ``metadata.continue``."""
        q = self._list_params(selector, limit, continue_) | dict(params or {})
        path = self.path(kind, None, cell, all_cells=all_cells)
        return await self._run(self._op_one(Call("GET", path, q)))

    async def update(self, obj: Obj, dry_run: bool = False, strict: bool = False) -> Obj:
        return await self._run(self._op_update(obj, dry_run, strict))

    async def update_status(self, obj: Obj) -> Obj:
        path = self.obj_path(obj, sub="status")
        return await self._run(self._op_one(Call("PUT", path, None, obj)))

    async def delete(self, kind: str | KindInfo, name: str, cell: str | None = None) -> Obj:
        return await self._run(self._op_one(Call("DELETE", self.path(kind, name, cell))))

    async def apply(self, obj: Obj, dry_run: bool = False, strict: bool = False) -> ApplyResult:
        """Create or update ``obj``: ``(created|configured|unchanged, object, warnings)``."""
        return await self._run(self._op_apply(obj, dry_run, strict))

    async def get_scale(
        self, kind: str | KindInfo, name: str, cell: str | None = None, *, stage: str | None = None
    ) -> Obj:
        """The ``Scale`` of a hive (all stages, or ``stage``) or an agentspec."""
        return await self._run(self._op_one(self._scale_call(kind, name, None, cell, stage)))

    async def scale(
        self, kind: str | KindInfo, name: str, replicas: int, cell: str | None = None,
        *, stage: str | None = None,
    ) -> Obj:  # fmt: skip
        """Set the replicas of a hive stage or an agentspec; returns the new ``Scale``."""
        return await self._run(self._op_one(self._scale_call(kind, name, replicas, cell, stage)))

    async def post_logs(self, cell: str, drone: str, body: Obj) -> Obj:
        """Append a batch of a drone's log lines (what the node's log shipper sends)."""
        path = self.path("Drone", drone, cell, sub="logs")
        return await self._run(self._op_one(Call("POST", path, None, body)))

    async def logs(
        self, kind: str | KindInfo, name: str, cell: str | None = None, *,
        tail: int | None = None, since: str | None = None, timestamps: bool = False,
        follow: bool = False,
    ) -> AsyncIterator[str]:  # fmt: skip
        """Lines of a drone's or hive's log, as :meth:`ApiClient.logs`."""
        call = self._logs_call(kind, name, cell, tail, since, timestamps, follow)
        try:
            async with self._http.stream(
                "GET", call.path, params=call.params, timeout=httpx.Timeout(30.0, read=None)
            ) as resp:
                if resp.status_code >= 400:
                    text = (await resp.aread()).decode("utf-8", "replace")
                    raise self._error(resp.status_code, text)
                async for line in resp.aiter_lines():
                    yield line
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc

    async def watch(
        self,
        kind: str | KindInfo,
        cell: str | None = None,
        resource_version: str | None = None,
        selector: str | Mapping[str, str] | None = None,
        *,
        all_cells: bool = False,
        bookmarks: bool = False,
        timeout: float | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """(type, object) pairs; ``timeout`` bounds the wait for each line (None: forever)."""
        call = self._watch_call(kind, cell, resource_version, selector, all_cells, field_selector)
        try:
            async with self._http.stream(
                "GET", call.path, params=call.params, timeout=httpx.Timeout(30.0, read=timeout)
            ) as resp:
                if resp.status_code >= 400:
                    text = (await resp.aread()).decode("utf-8", "replace")
                    raise self._error(resp.status_code, text)
                async for line in resp.aiter_lines():
                    ev = self._event(line)
                    if ev is not None and (bookmarks or ev[0] != "BOOKMARK"):
                        yield ev
        except httpx.ReadTimeout as exc:
            raise WatchTimeout(f"watch: nothing from {self.server} within {timeout}s") from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
