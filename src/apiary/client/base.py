"""Paths, auth and every operation written once, as generators of calls (:class:`_Base`)."""

from __future__ import annotations

import copy
import json
import math
import os
import random
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from apiary import errors
from apiary.client.config import (
    DEFAULT_CELL,
    config_path,
    data_dir,
    normalize_server,
    resolve_token,
)
from apiary.client.wire import (
    ApiResponse,
    ApplyResult,
    Call,
    Obj,
    Op,
    _as_obj,
    error_from_response,
    is_secret,
    name_and_cell,
    normalized,
    parse_warnings,
    resolve_kind,
    selector_string,
)
from apiary.resources import KindInfo
from apiary.resources.secret import redact

MAX_RETRIES = 5
"""Resends of a call the server refused with 429 + ``Retry-After`` (``_Base.max_retries``)."""
MAX_RETRY_AFTER = 10.0
"""The longest ``Retry-After`` the client honours, in seconds; a longer one is cut to this."""


class _Base:
    """Paths, auth and every operation's logic, written once as generators of :class:`Call`.

    The sync and async clients only differ in how they perform a call, so each operation is a
    generator that yields calls and receives answers (errors are thrown into it); a driver in
    each client runs it. That keeps ``apply``'s retry logic in one place.
    """

    def __init__(self, server: str | None, token: str | None, cell: str | None) -> None:
        self.server = normalize_server(server or os.environ.get("APIARY_SERVER"))
        self.token = resolve_token(self.server, token)
        self.cell = cell or DEFAULT_CELL
        self.on_warning: Callable[[str], None] | None = None
        self.max_retries = MAX_RETRIES
        """How often a call refused with 429 and a ``Retry-After`` is sent again (0: never)."""

    def _retry_delay(self, resp: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before sending a refused call again, or None to give up.

        As Kubernetes' clients do: only a 429 that says when to come back (``Retry-After``,
        which the server's overload bound sends) is retried, with up to half again as jitter so
        a crowd of refused clients does not return at the same instant. Such a 429 is refused
        before anything was done, so any method is safe to resend. A 429 without the header (a
        hive at its ``queueLimit``) is the caller's to see."""
        if resp.status_code != 429 or attempt >= self.max_retries:
            return None
        try:
            seconds = float(resp.headers.get("retry-after", ""))
        except ValueError:
            return None
        if not math.isfinite(seconds):
            return None
        return min(max(seconds, 0.0), MAX_RETRY_AFTER) * (1 + random.random() / 2)

    def _headers(self) -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": "apiary-client/0.1"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    # -- paths

    def path(
        self,
        kind: str | KindInfo,
        name: str | None = None,
        cell: str | None = None,
        *,
        all_cells: bool = False,
        sub: str | None = None,
    ) -> str:
        """The REST path of a collection, an object or an object's subresource."""
        info = resolve_kind(kind)
        if not info.namespaced or all_cells:
            p = f"/api/v1/{info.plural}"
        else:
            p = f"/api/v1/cells/{quote(cell or self.cell, safe='')}/{info.plural}"
        if name is not None:
            p += f"/{quote(name, safe='')}"
        if sub:
            p += f"/{sub}"
        return p

    def obj_path(self, obj: Obj, *, name: bool = True, sub: str | None = None) -> str:
        """The path of ``obj`` (or of its collection), from its kind, name and namespace."""
        if not isinstance(obj, dict):
            raise errors.BadRequest("an object must be a mapping with apiVersion, kind, metadata")
        kind = obj.get("kind")
        if not isinstance(kind, str) or not kind:
            raise errors.Invalid("kind is required", [errors.FieldDetail("kind", "required")])
        obj_name, cell = name_and_cell(obj)
        if name and not obj_name:
            msg = "metadata.name is required"
            raise errors.Invalid(msg, [errors.FieldDetail("metadata.name", "required")])
        return self.path(kind, obj_name if name else None, cell, sub=sub)

    @staticmethod
    def _write_params(dry_run: bool, strict: bool) -> dict[str, str]:
        params: dict[str, str] = {}
        if dry_run:
            params["dryRun"] = "All"
        if strict:
            params["strict"] = "true"
        return params

    @staticmethod
    def _list_params(
        selector: str | Mapping[str, str] | None, limit: int | None, continue_: str | None
    ) -> dict[str, str]:
        params: dict[str, str] = {}
        sel = selector_string(selector)
        if sel:
            params["labelSelector"] = sel
        if limit is not None:
            params["limit"] = str(limit)
        if continue_:
            params["continue"] = continue_
        return params

    # -- answers

    def _answer(self, resp: httpx.Response) -> ApiResponse:
        if resp.status_code >= 400:
            raise self._error(resp.status_code, resp.text)
        body: Any = None
        if resp.content:
            try:
                body = resp.json()
            except ValueError:
                body = resp.text
        answer = ApiResponse(
            resp.status_code, body, parse_warnings(resp.headers.get_list("warning")), resp.headers
        )
        if self.on_warning:
            for w in answer.warnings:
                self.on_warning(w)
        return answer

    def _error(self, status: int, text: str) -> errors.ApiaryError:
        exc = error_from_response(status, text)
        if status == 401 and not self.token:
            exc.message += (
                " (no token: pass --token, set APIARY_TOKEN, put token: in "
                f"{config_path()}, or run where {data_dir()}/admin.token is readable)"
            )
            exc.args = (exc.message,)
        return exc

    def _transport_error(self, exc: httpx.HTTPError) -> errors.Unavailable:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return errors.Unavailable(
                f"cannot reach apiaryd at {self.server}: is it running? "
                "start it with `apiaryd` or `make run`"
            )
        if isinstance(exc, httpx.TimeoutException):
            return errors.Unavailable(f"apiaryd at {self.server} did not answer in time")
        return errors.Unavailable(f"lost connection to apiaryd at {self.server}: {exc}")

    def _event(self, line: str) -> tuple[str, Obj] | None:
        line = line.strip()
        if not line:
            return None
        try:
            ev = json.loads(line)
        except ValueError as exc:
            raise errors.Unavailable(f"bad watch line from {self.server}: {line[:200]}") from exc
        etype, obj = ev.get("type"), ev.get("object") or {}
        if etype == "ERROR":
            raise error_from_response(int(obj.get("code") or 500), json.dumps(obj))
        return str(etype), obj

    def _watch_call(
        self,
        kind: str | KindInfo,
        cell: str | None,
        resource_version: str | None,
        selector: str | Mapping[str, str] | None,
        all_cells: bool,
        field_selector: str | None,
    ) -> Call:
        params = self._list_params(selector, None, None) | {"watch": "true"}
        if field_selector:
            params["fieldSelector"] = field_selector
        if resource_version:
            params["resourceVersion"] = resource_version
        return Call("GET", self.path(kind, None, cell, all_cells=all_cells), params)

    # -- subresources: scale and logs

    def _scale_path(self, kind: str | KindInfo, name: str, cell: str | None) -> str:
        info = resolve_kind(kind)
        if info.kind not in ("Hive", "AgentSpec"):
            msg = f"only hives and agentspecs can be scaled, not {info.plural}"
            raise errors.Invalid(msg, [errors.FieldDetail("kind", msg)])
        return self.path(info, name, cell, sub="scale")

    def _scale_call(
        self, kind: str | KindInfo, name: str, replicas: int | None, cell: str | None,
        stage: str | None,
    ) -> Call:  # fmt: skip
        path = self._scale_path(kind, name, cell)
        if replicas is None:
            return Call("GET", path, {"stage": stage} if stage else None)
        body: Obj = {"replicas": replicas}
        if stage:
            body["stage"] = stage
        return Call("PUT", path, None, body)

    def _logs_call(
        self, kind: str | KindInfo, name: str, cell: str | None, tail: int | None,
        since: str | None, timestamps: bool, follow: bool,
    ) -> Call:  # fmt: skip
        info = resolve_kind(kind)
        if info.kind not in ("Drone", "Hive"):
            msg = f"logs are kept for drones and hives, not {info.plural}"
            raise errors.Invalid(msg, [errors.FieldDetail("kind", msg)])
        params: dict[str, str] = {}
        if tail is not None:
            params["tail"] = str(tail)
        if since:
            params["since"] = since
        if timestamps:
            params["timestamps"] = "true"
        if follow:
            params["follow"] = "true"
        return Call("GET", self.path(info, name, cell, sub="logs"), params)

    # -- operations (sans-I/O)

    def _op_one(self, call: Call) -> Op[Obj]:
        return _as_obj((yield call).body)

    def _op_create(self, obj: Obj, dry_run: bool, strict: bool) -> Op[Obj]:
        call = Call(
            "POST", self.obj_path(obj, name=False), self._write_params(dry_run, strict), obj
        )
        return _as_obj((yield call).body)

    def _op_update(self, obj: Obj, dry_run: bool, strict: bool) -> Op[Obj]:
        call = Call("PUT", self.obj_path(obj), self._write_params(dry_run, strict), obj)
        return _as_obj((yield call).body)

    def _op_apply(self, obj: Obj, dry_run: bool, strict: bool) -> Op[ApplyResult]:
        """get → create, or a dry-run update to see whether anything changes → update.

        The dry run compares what the server *would* store (defaults applied) with what it has,
        so re-applying an unchanged manifest says ``unchanged`` and writes nothing. A 409 (someone
        else wrote in between) starts over from a fresh get. A Secret is compared with its values
        revealed when the caller may reveal them (otherwise it is written without the
        comparison), and what is returned is always redacted: applying never shows a value.
        """
        reveal = {"reveal": "true"} if is_secret(obj) else {}
        name, cell = name_and_cell(obj)
        for _ in range(5):
            try:
                try:
                    current = _as_obj((yield Call("GET", self.obj_path(obj), reveal or None)).body)
                except errors.Forbidden:
                    if not reveal:
                        raise
                    reveal = {}  # may write Secrets but not read their values: compare nothing
                    current = _as_obj((yield Call("GET", self.obj_path(obj))).body)
            except errors.NotFound:
                params = self._write_params(dry_run, strict)
                try:
                    r = yield Call("POST", self.obj_path(obj, name=False), params, obj)
                except errors.AlreadyExists:
                    continue
                return "created", redact(_as_obj(r.body)), r.warnings
            body = copy.deepcopy(obj)
            rv = current.get("metadata", {}).get("resourceVersion")
            body.setdefault("metadata", {})["resourceVersion"] = rv
            blind = is_secret(obj) and not reveal
            try:
                params = self._write_params(True, strict) | reveal
                trial = yield Call("PUT", self.obj_path(obj), params, body)
                if not blind and normalized(_as_obj(trial.body)) == normalized(current):
                    return "unchanged", redact(current), trial.warnings
                if dry_run:
                    return "configured", redact(_as_obj(trial.body)), trial.warnings
                r = yield Call("PUT", self.obj_path(obj), self._write_params(False, strict), body)
            except errors.Conflict:
                continue
            return "configured", redact(_as_obj(r.body)), r.warnings
        raise errors.Conflict(
            f"{obj.get('kind')} {name!r} in cell {cell or self.cell!r} kept changing while "
            "applying; try again"
        )
