"""HTTP client for the Apiary REST API, used by ``apiaryctl`` and the node agent.

Everything that talks to the control plane goes through here so that both sides of the wire agree
on paths, auth and errors: a failed call raises the :mod:`apiary.errors` class matching the
server's structured error body (details kept), and an unreachable server raises
:class:`~apiary.errors.Unavailable` with a hint on how to start it. :class:`ApiClient` (sync) and
:class:`AsyncApiClient` share all logic except the I/O itself.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import yaml

from apiary import errors
from apiary.resources import KINDS, KindInfo, lookup_kind
from apiary.resources.secret import redact

Obj = dict[str, Any]
DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_CELL = "default"
#: metadata the server owns; ignored when deciding whether an apply changes anything.
SERVER_MANAGED_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "managedFields",
)
_WARNING_RE = re.compile(r'\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"')
_STATUS_ERRORS: dict[int, type[errors.ApiaryError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    410: errors.Gone,
    413: errors.PayloadTooLarge,
    422: errors.Invalid,
    429: errors.TooManyRequests,
    503: errors.Unavailable,
}
_REASON_ERRORS: dict[str, type[errors.ApiaryError]] = {
    "QuotaExceeded": errors.QuotaExceeded,
    "AlreadyExists": errors.AlreadyExists,
}


# ---------------------------------------------------------------------------- configuration


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
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
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


# ---------------------------------------------------------------------------- helpers


class WatchTimeout(errors.Unavailable):
    """A watch saw no line (not even a bookmark) within its ``timeout``."""


@dataclass
class ApiResponse:
    """One successful HTTP answer: status, decoded JSON body (or text) and ``Warning`` headers."""

    status: int
    body: Any
    warnings: list[str] = field(default_factory=list)
    headers: Mapping[str, str] = field(default_factory=dict)


def parse_warnings(values: list[str]) -> list[str]:
    """``299 - "unknown field \\"spec.foo\\""`` → ``unknown field "spec.foo"``."""
    out: list[str] = []
    for value in values:
        found = _WARNING_RE.findall(value)
        if not found:
            out.append(value.strip())
        out.extend(re.sub(r"\\(.)", r"\1", text) for text in found)
    return out


def error_from_response(status: int, text: str) -> errors.ApiaryError:
    """The :mod:`apiary.errors` exception for a failed answer, keeping the server's details."""
    body: Any = None
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    reason = ""
    message = f"HTTP {status}: {text.strip()[:300]}" if text.strip() else f"HTTP {status}"
    details: list[errors.FieldDetail] = []
    if isinstance(body, dict):
        reason = str(body.get("reason") or "")
        message = str(body.get("message") or message)
        for d in body.get("details") or []:
            if isinstance(d, dict):
                details.append(errors.FieldDetail(str(d.get("field", "")), str(d.get("message"))))
    cls = _REASON_ERRORS.get(reason) or _STATUS_ERRORS.get(status)
    if cls is None:
        exc = errors.ApiaryError(message, details)
        exc.status = status
        return exc
    return cls(message, details)


def resolve_kind(kind: str | KindInfo) -> KindInfo:
    if isinstance(kind, KindInfo):
        return kind
    info = lookup_kind(kind)
    if info is None:
        known = ", ".join(k.plural for k in KINDS)
        msg = f"unknown kind {kind!r} (known: {known})"
        raise errors.Invalid(msg, [errors.FieldDetail("kind", msg)])
    return info


def selector_string(selector: str | Mapping[str, str] | None) -> str | None:
    if selector is None or isinstance(selector, str):
        return selector or None
    return ",".join(f"{k}={v}" for k, v in selector.items()) or None


def normalized(obj: Obj) -> Obj:
    """``obj`` as a manifest controls it: no status or server-managed metadata, Secret
    ``stringData`` folded into ``data``."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    string_data = out.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        # Secrets: stringData is write-only sugar for base64 data; compare what gets stored.
        data = out["data"] = dict(out.get("data") or {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for key in SERVER_MANAGED_METADATA:
            meta.pop(key, None)
        for key in ("labels", "annotations", "ownerReferences", "finalizers"):
            if meta.get(key) in ({}, [], None):
                meta.pop(key, None)
    return out


@dataclass
class Call:
    """One HTTP call an operation wants made; the sync and async clients perform it."""

    method: str
    path: str
    params: dict[str, str] | None = None
    body: Any = None


T = TypeVar("T")
Op = Generator[Call, ApiResponse, T]
ApplyResult = tuple[str, Obj, list[str]]


def _as_obj(body: Any) -> Obj:
    return dict(body) if isinstance(body, dict) else {}


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


def is_secret(obj: Obj) -> bool:
    info = lookup_kind(str(obj.get("kind", "")))
    return info is not None and info.kind == "Secret"


def name_and_cell(obj: Obj) -> tuple[str, str | None]:
    """``metadata.name`` ("" when missing) and ``metadata.namespace`` (None when missing)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return "", None
    name, cell = meta.get("name"), meta.get("namespace")
    return (name if isinstance(name, str) else ""), (cell if isinstance(cell, str) else None)


class ApiClient(_Base):
    """Synchronous client (``httpx.Client``); use as a context manager or call :meth:`close`.

    Write calls return the stored object; ``Warning`` headers go to ``on_warning`` (and are in
    :meth:`request`'s answer and :meth:`apply`'s result).
    """

    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        cell: str | None = None,
        *,
        timeout: float = 30.0,
        on_warning: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(server, token, cell)
        self.on_warning = on_warning
        self._http = httpx.Client(
            base_url=self.server, headers=self._headers(), timeout=timeout, transport=transport
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
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
        try:
            resp = self._http.request(method, path, params=params, json=json_body, **extra)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        return self._answer(resp)

    def _run(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                try:
                    answer = self.request(
                        call.method, call.path, params=call.params, json_body=call.body
                    )
                except errors.ApiaryError as exc:
                    call = op.throw(exc)
                else:
                    call = op.send(answer)
        except StopIteration as stop:
            result: T = stop.value
            return result

    def whoami(self) -> Obj:
        return self._run(self._op_one(Call("GET", "/api/v1/whoami")))

    def create(self, obj: Obj, dry_run: bool = False, strict: bool = False) -> Obj:
        return self._run(self._op_create(obj, dry_run, strict))

    def get(
        self, kind: str | KindInfo, name: str, cell: str | None = None, *, reveal: bool = False
    ) -> Obj:
        params = {"reveal": "true"} if reveal else None
        return self._run(self._op_one(Call("GET", self.path(kind, name, cell), params)))

    def list(
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
        return self._run(self._op_one(Call("GET", path, q)))

    def update(self, obj: Obj, dry_run: bool = False, strict: bool = False) -> Obj:
        return self._run(self._op_update(obj, dry_run, strict))

    def update_status(self, obj: Obj) -> Obj:
        return self._run(self._op_one(Call("PUT", self.obj_path(obj, sub="status"), None, obj)))

    def delete(self, kind: str | KindInfo, name: str, cell: str | None = None) -> Obj:
        return self._run(self._op_one(Call("DELETE", self.path(kind, name, cell))))

    def apply(self, obj: Obj, dry_run: bool = False, strict: bool = False) -> ApplyResult:
        """Create or update ``obj``: ``(created|configured|unchanged, object, warnings)``."""
        return self._run(self._op_apply(obj, dry_run, strict))

    def get_scale(
        self, kind: str | KindInfo, name: str, cell: str | None = None, *, stage: str | None = None
    ) -> Obj:
        """The ``Scale`` of a hive (all stages, or ``stage``) or an agentspec."""
        return self._run(self._op_one(self._scale_call(kind, name, None, cell, stage)))

    def scale(
        self, kind: str | KindInfo, name: str, replicas: int, cell: str | None = None,
        *, stage: str | None = None,
    ) -> Obj:  # fmt: skip
        """Set the replicas of a hive stage or an agentspec; returns the new ``Scale``."""
        return self._run(self._op_one(self._scale_call(kind, name, replicas, cell, stage)))

    def logs(
        self, kind: str | KindInfo, name: str, cell: str | None = None, *,
        tail: int | None = None, since: str | None = None, timestamps: bool = False,
        follow: bool = False,
    ) -> Iterator[str]:  # fmt: skip
        """Lines (without newline) of a drone's or hive's log; ``follow`` streams until the
        server ends it (drone or hive deleted) or the caller stops iterating."""
        call = self._logs_call(kind, name, cell, tail, since, timestamps, follow)
        try:
            with self._http.stream(
                "GET", call.path, params=call.params, timeout=httpx.Timeout(30.0, read=None)
            ) as resp:
                if resp.status_code >= 400:
                    raise self._error(resp.status_code, resp.read().decode("utf-8", "replace"))
                yield from resp.iter_lines()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc

    def watch(
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
    ) -> Iterator[tuple[str, Obj]]:
        """(type, object) pairs; ``timeout`` bounds the wait for each line (None: forever)."""
        call = self._watch_call(kind, cell, resource_version, selector, all_cells, field_selector)
        try:
            with self._http.stream(
                "GET", call.path, params=call.params, timeout=httpx.Timeout(30.0, read=timeout)
            ) as resp:
                if resp.status_code >= 400:
                    raise self._error(resp.status_code, resp.read().decode("utf-8", "replace"))
                for line in resp.iter_lines():
                    ev = self._event(line)
                    if ev is not None and (bookmarks or ev[0] != "BOOKMARK"):
                        yield ev
        except httpx.ReadTimeout as exc:
            raise WatchTimeout(f"watch: nothing from {self.server} within {timeout}s") from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc


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
        try:
            resp = await self._http.request(method, path, params=params, json=json_body, **extra)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        return self._answer(resp)

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
