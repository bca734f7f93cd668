"""The console's files are served by the API app itself at /ui: no token needed to open a page,
a strict Content-Security-Policy on every file, and nothing else of the API made public."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from apiary.api import create_app
from apiary.store import open_store
from apiary.ui import CSP

TOKEN = "ui-test-token-0123456789"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    store = open_store("memory://")
    await store.open()
    app = create_app(store, TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://apiary") as c:
        yield c
    await store.close()


async def test_the_console_page_opens_without_a_token_with_a_strict_csp(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/ui")
    assert r.status_code == 308 and r.headers["location"] == "/ui/"
    r = await client.get("/ui/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "'unsafe-inline'" not in CSP
    assert r.headers["x-frame-options"] == "DENY"
    assert '<script type="module" src="app.js">' in r.text
    assert '<link rel="icon" href="data:,">' in r.text  # no /favicon.ico: a 401 in the audit log
    js = await client.get("/ui/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert js.headers["content-security-policy"] == CSP


async def test_only_console_files_are_public(client: httpx.AsyncClient) -> None:
    missing = await client.get("/ui/nothing-here.js")
    assert missing.status_code == 404 and missing.json()["reason"] == "NotFound"
    up = await client.get("/ui/../api/v1/hives")
    assert up.status_code in (401, 404)  # never served from outside the directory
    assert (await client.post("/ui/app.js")).status_code in (401, 404, 405)  # the API's answer
    assert (await client.get("/api/v1/cells")).status_code == 401  # the API still needs a token
    assert (await client.get("/uix")).status_code == 401  # not a console path
