"""ApiClient and AsyncApiClient against a real apiaryd: CRUD, errors with details, warnings,
optimistic concurrency, apply, watch."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from ctlkit import Server, start_server

from apiary import errors
from apiary.client import ApiClient, AsyncApiClient


def agent(name: str, cell: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "AgentSpec",
        "metadata": {"name": name, "namespace": cell},
        "spec": {"runtime": {"command": ["cat"]}, **spec},
    }


def test_sync_crud_errors_and_concurrency(shared_server: Server, cell: str) -> None:
    seen: list[str] = []
    with ApiClient(shared_server.url, shared_server.token, cell, on_warning=seen.append) as c:
        assert c.whoami()["user"] == "admin"
        created = c.create(agent("a", cell))
        assert created["metadata"]["uid"] and created["metadata"]["generation"] == 1
        with pytest.raises(errors.AlreadyExists):
            c.create(agent("a", cell))
        with pytest.raises(errors.NotFound):
            c.get("agentspec", "zzz")
        with pytest.raises(errors.Invalid) as bad:
            c.create(agent("b", cell, interface={"type": "carrier-pigeon"}))
        assert any(d.field.startswith("spec.interface.type") for d in bad.value.details)
        stale = dict(created)
        # no resourceVersion: last writer wins (the server's controllers write status meanwhile)
        unversioned = {
            **created,
            "metadata": {k: v for k, v in created["metadata"].items() if k != "resourceVersion"},
        }
        fresh = c.update({**unversioned, "spec": {**created["spec"], "taskTier": "complex"}})
        assert fresh["metadata"]["generation"] == 2
        with pytest.raises(errors.Conflict):
            c.update({**stale, "spec": {**stale["spec"], "taskTier": "simple"}})
        c.create(agent("w", cell, surprise=1))
        assert any("spec.surprise" in w for w in seen), seen
        dry = c.create(agent("dry", cell), dry_run=True)
        assert dry["metadata"]["name"] == "dry"
        with pytest.raises(errors.NotFound):
            c.get("as", "dry")
        with pytest.raises(errors.Invalid):
            c.create(agent("strict", cell, surprise=1), strict=True)
        page = c.list("agentspecs", limit=1)
        assert len(page["items"]) == 1 and page["metadata"]["continue"]
        rest = c.list("agentspecs", continue_=page["metadata"]["continue"])
        names = {o["metadata"]["name"] for o in page["items"] + rest["items"]}
        assert names == {"a", "w"}
        assert c.list("agentspecs", all_cells=True)["items"]
        fresh["metadata"].pop("resourceVersion")
        status = c.update_status({**fresh, "status": {"phase": "Testing"}})
        assert status["status"]["phase"] == "Testing"
        assert c.delete("agentspec", "a")["metadata"]["name"] == "a"
        with pytest.raises(errors.Invalid, match="unknown kind"):
            c.get("gizmo", "x")


def test_sync_apply_and_watch(shared_server: Server, cell: str) -> None:
    with ApiClient(shared_server.url, shared_server.token, cell) as c:
        action, obj, _ = c.apply(agent("x", cell))
        assert action == "created"
        rv = obj["metadata"]["resourceVersion"]
        assert c.apply(agent("x", cell))[0] == "unchanged"
        assert c.apply(agent("x", cell, taskTier="complex"), dry_run=True)[0] == "configured"
        assert c.get("as", "x")["spec"].get("taskTier") != "complex"
        assert c.apply(agent("x", cell, taskTier="complex"))[0] == "configured"
        c.delete("agentspec", "x")
        events = []
        for etype, o in c.watch("agentspecs", resource_version=rv, timeout=5):
            events.append((etype, o["metadata"]["name"]))
            if etype == "DELETED":
                break
        # every change after rv, in order (controllers may add status writes in between)
        assert events[0] == ("MODIFIED", "x") and events[-1] == ("DELETED", "x")
        assert {e for e, _ in events} == {"MODIFIED", "DELETED"}


async def test_async_client_matches(shared_server: Server, cell: str) -> None:
    async with AsyncApiClient(shared_server.url, shared_server.token, cell) as c:
        assert (await c.whoami())["user"] == "admin"
        assert (await c.apply(agent("y", cell)))[0] == "created"
        assert (await c.apply(agent("y", cell)))[0] == "unchanged"
        got = await c.get("agentspec", "y")
        with pytest.raises(errors.AlreadyExists):
            await c.create(agent("y", cell))
        seen: list[tuple[str, str]] = []

        async def watch() -> None:
            async for etype, o in c.watch("agentspecs", timeout=10):
                seen.append((etype, o["metadata"]["name"]))
                if etype == "DELETED":
                    return

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        got["metadata"].pop("resourceVersion")
        await c.update({**got, "spec": {**got["spec"], "taskTier": "complex"}})
        await c.delete("agentspec", "y")
        await asyncio.wait_for(task, 10)
        assert seen[0] == ("ADDED", "y") and seen[-1] == ("DELETED", "y")
        assert ("MODIFIED", "y") in seen
        assert (await c.list("agentspecs"))["items"] == []


async def test_async_unreachable_and_unauthorized(shared_server: Server) -> None:
    async with AsyncApiClient("http://127.0.0.1:9", "t") as c:
        with pytest.raises(errors.Unavailable, match="is it running"):
            await c.list("hives")
    async with AsyncApiClient(shared_server.url, "wrong") as c:
        with pytest.raises(errors.Unauthorized):
            await c.list("hives")


def test_watch_from_a_compacted_version_is_gone(tmp_path: Path) -> None:
    srv = start_server(
        tmp_path / "data", ["--changelog-retention", "2", "--compact-interval", "0.05"]
    )
    try:
        with srv.client() as c:
            first = c.create(agent("g0", "default"))
            for i in range(1, 8):
                c.create(agent(f"g{i}", "default"))
            time.sleep(0.5)  # a few compaction passes
            with pytest.raises(errors.Gone):
                for _ in c.watch(
                    "agentspecs", "default", first["metadata"]["resourceVersion"], timeout=5
                ):
                    pass
    finally:
        srv.stop()
