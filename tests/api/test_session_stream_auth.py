"""A session stream can outlive its token, as a watch or a log follow can: it checks the token
again every REAUTH_SECONDS and ends with an ``error`` event once the token is revoked — for the
plain and the typed stream alike (the A2A streams, built on the same reader, are covered in
tests/interop/test_a2a.py)."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import orjson
import pytest

from apiary.api import watch

from .test_sessions import CELL, Env, environment, served


async def events(r: httpx.Response) -> list[tuple[str, str]]:
    """(event, data) of each event, until the server ends the stream."""
    out: list[tuple[str, str]] = []
    fields: dict[str, str] = {}
    async for line in r.aiter_lines():
        if line == "":
            if "data" in fields:
                out.append((fields.get("event", "message"), fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            fields[key] = value
    return out


@pytest.mark.parametrize("query", ["", "?events=typed"])
async def test_a_stream_ends_once_its_token_is_revoked(
    query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch, "REAUTH_SECONDS", 0.1)
    async with environment() as env:
        await env.hive()
        await env.session("conv")
        await _revoked_mid_stream(env, f"{CELL}/sessions/conv/stream{query}")


async def _revoked_mid_stream(env: Env, path: str) -> None:
    body = {"metadata": {"name": "reader"}, "spec": {"role": "viewer", "cell": "default"}}
    r = await env.client.post("/api/v1/tokens", json=body)
    assert r.status_code == 201, r.text
    auth = {"Authorization": f"Bearer {r.json()['status']['token']}"}
    async with served(env) as client, contextlib.AsyncExitStack() as stack:
        stream = await stack.enter_async_context(client.stream("GET", path, headers=auth))
        assert stream.status_code == 200
        reading = asyncio.create_task(events(stream))
        await env.send("conv", "a")
        await env.until("conv", {"final"})
        await asyncio.sleep(0.4)  # rechecked with a good token: still streaming
        assert not reading.done()
        assert (await env.client.delete("/api/v1/tokens/reader")).status_code == 200
        seen = await asyncio.wait_for(reading, 5)  # ended by itself, the session still open
    assert seen, "the entries before the revocation were streamed"
    kind, data = seen[-1]
    assert kind == "error"
    assert orjson.loads(data)["code"] == 401
    assert all(k != "error" for k, _ in seen[:-1])


async def test_an_a2a_task_stream_ends_once_its_token_is_revoked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SubscribeToTask follows the same reader: its last event is a JSON-RPC error."""
    monkeypatch.setattr(watch, "REAUTH_SECONDS", 0.1)
    async with environment() as env:
        await env.hive(a2a={"expose": True})
        url = "/a2a/cells/default/hives/h"
        send = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
            "message": {"role": "ROLE_USER", "messageId": "m1", "parts": [{"text": "hold"}]},
            "configuration": {"returnImmediately": True}}}  # fmt: skip
        r = await env.client.post(url, json=send)
        assert r.status_code == 200 and "result" in r.json(), r.text
        task = r.json()["result"]["task"]["id"]
        body = {"metadata": {"name": "reader"}, "spec": {"role": "viewer", "cell": "default"}}
        r = await env.client.post("/api/v1/tokens", json=body)
        auth = {"Authorization": f"Bearer {r.json()['status']['token']}"}
        subscribe = {"jsonrpc": "2.0", "id": 2, "method": "SubscribeToTask", "params": {"id": task}}
        async with served(env) as client, contextlib.AsyncExitStack() as stack:
            stream = await stack.enter_async_context(
                client.stream("POST", url, json=subscribe, headers=auth)
            )
            assert stream.status_code == 200
            reading = asyncio.create_task(events(stream))
            await asyncio.sleep(0.4)  # the task works on ("hold"); the token still good
            assert not reading.done()
            assert (await env.client.delete("/api/v1/tokens/reader")).status_code == 200
            seen = await asyncio.wait_for(reading, 5)
        assert "result" in orjson.loads(seen[0][1])  # the task as it stood
        last = orjson.loads(seen[-1][1])
        assert "error" in last and "token" in last["error"]["message"].lower(), last
