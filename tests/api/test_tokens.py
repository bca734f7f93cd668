# ruff: noqa: E501  (the role matrix reads best as one row per operation)
"""Tokens and RBAC against the real API app over a real store: the role x verb x kind x cell
matrix, secrets a viewer cannot reveal, expiry (an injected clock), revocation, node tokens,
and plaintext that never comes back."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from apiary.api import api_state
from apiary.api.logs import LogStore
from apiary.api.state import ApiState

from .conftest import Api, running_api, sample

OWN, OTHER = "own", "other"
Obj = dict[str, Any]
Request = tuple[str, str, Obj | None]


def state_of(api: Api) -> ApiState:
    return api_state(api.client._transport.app)  # type: ignore[attr-defined]


async def seed(api: Api) -> None:
    """In both cells: a Hive h, an AgentSpec a, Secrets s, only-e and unused, a Drone d on node
    n1 using s and one e on n2 using only-e; the Cells themselves and Nodes n1, n2."""
    for node in ("n1", "n2"):
        await api.store.create(sample("Node", node))
    await seed_cells(api, OWN, OTHER)


async def seed_cells(api: Api, *cells: str) -> None:
    """The cells of ``seed`` (Nodes n1 and n2 must exist)."""
    store = api.store
    for name in cells:
        await store.create(sample("Cell", name))
    for cell in cells:
        await store.create(sample("Hive", "h", cell))
        await store.create(sample("AgentSpec", "a", cell))
        await store.create(sample("Secret", "s", cell))
        await store.create(sample("Secret", "only-e", cell))
        await store.create(sample("Secret", "unused", cell))
        for name, node, secret in (("d", "n1", "s"), ("e", "n2", "only-e")):
            drone = sample("Drone", name, cell)
            drone["spec"]["nodeName"] = node
            ref = {"secretKeyRef": {"name": secret, "key": "token"}}
            drone["spec"]["runtime"]["env"] = [{"name": "T", "valueFrom": ref}]
            await store.create(drone)


async def mint(api: Api, name: str, role: str, cell: str | None = None, **spec: Any) -> str:
    body: Obj = {"metadata": {"name": name}, "spec": {"role": role, **spec}}
    if cell is not None:
        body["spec"]["cell"] = cell
    r = await api.client.post("/api/v1/tokens", json=body)
    assert r.status_code == 201, r.text
    token = r.json()["status"]["token"]
    assert token.startswith(f"apiary_{name}_")
    return str(token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api("memory://", resolver=False) as running:
        await seed(running)
        yield running


# ------------------------------------------------------------------------------ the matrix

OPS: dict[str, Callable[[str], Request]] = {
    "list Hive": lambda c: ("GET", f"/api/v1/cells/{c}/hives", None),
    "get Hive": lambda c: ("GET", f"/api/v1/cells/{c}/hives/h", None),
    "create Hive": lambda c: ("POST", f"/api/v1/cells/{c}/hives", sample("Hive", "new", c)),
    "delete Hive": lambda c: ("DELETE", f"/api/v1/cells/{c}/hives/h", None),
    "create AgentSpec": lambda c: ("POST", f"/api/v1/cells/{c}/agentspecs", sample("AgentSpec", "n", c)),
    "get AgentSpec": lambda c: ("GET", f"/api/v1/cells/{c}/agentspecs/a", None),
    "delete AgentSpec": lambda c: ("DELETE", f"/api/v1/cells/{c}/agentspecs/a", None),
    "create Secret": lambda c: ("POST", f"/api/v1/cells/{c}/secrets", sample("Secret", "n", c)),
    "get Secret": lambda c: ("GET", f"/api/v1/cells/{c}/secrets/s", None),
    "reveal Secret": lambda c: ("GET", f"/api/v1/cells/{c}/secrets/s?reveal=true", None),
    "delete Drone": lambda c: ("DELETE", f"/api/v1/cells/{c}/drones/d", None),
    "update/status Drone": lambda c: ("PUT", f"/api/v1/cells/{c}/drones/d/status", sample("Drone", "d", c)),
    "get/logs Drone": lambda c: ("GET", f"/api/v1/cells/{c}/drones/d/logs", None),
    "create/logs Drone": lambda c: ("POST", f"/api/v1/cells/{c}/drones/d/logs", {"lines": []}),
    "update/scale Hive": lambda c: ("PUT", f"/api/v1/cells/{c}/hives/h/scale", {"replicas": 2}),
    "replay DeadLetter": lambda c: ("POST", f"/api/v1/cells/{c}/hives/h/dlq/replay", None),
    "purge DeadLetter": lambda c: ("DELETE", f"/api/v1/cells/{c}/hives/h/dlq", None),
    "list DeadLetter": lambda c: ("GET", f"/api/v1/cells/{c}/hives/h/dlq", None),
    "create Memory": lambda c: ("POST", f"/api/v1/cells/{c}/memory", {"text": "x"}),
    "get Memory": lambda c: ("GET", f"/api/v1/cells/{c}/memory/search?q=x", None),
    "get/comb Session": lambda c: ("GET", f"/api/v1/cells/{c}/sessions/x/comb", None),
    "update/comb Session": lambda c: ("PUT", f"/api/v1/cells/{c}/sessions/x/comb/k", {"value": 1}),
    "delete Cell": lambda c: ("DELETE", f"/api/v1/cells/{c}", None),
    "get Cell": lambda c: ("GET", f"/api/v1/cells/{c}", None),
    "list Hive (all cells)": lambda c: ("GET", "/api/v1/hives", None),
    "create Node": lambda c: ("POST", "/api/v1/nodes", sample("Node", f"n3-{c}")),
    "update Node n2": lambda c: ("PUT", "/api/v1/nodes/n2", sample("Node", "n2")),
    "list Token": lambda c: ("GET", "/api/v1/tokens", None),
    "create Token": lambda c: ("POST", "/api/v1/tokens", {"metadata": {"name": f"x-{c}"}, "spec": {"role": "cluster-admin"}}),
    "get AuditLog": lambda c: ("GET", "/api/v1/audit", None),
}  # fmt: skip

CELL_OPS = {op for op in OPS if not op.endswith(("Cell", "(all cells)", "Token", "AuditLog")) and "Node" not in op}  # fmt: skip
VIEWER = {"list Hive", "get Hive", "get AgentSpec", "get Secret", "get/logs Drone",
          "list DeadLetter", "get Memory", "get/comb Session"}  # fmt: skip
DEVELOPER = VIEWER | {
    "create Hive", "delete Hive", "create AgentSpec", "delete AgentSpec", "create Secret",
    "update/scale Hive", "replay DeadLetter", "purge DeadLetter", "create Memory",
    "update/comb Session",
}  # fmt: skip
NODE = {"get AgentSpec", "get Secret", "reveal Secret", "update/status Drone", "create/logs Drone",
        "create Memory", "get Memory", "get/comb Session", "update/comb Session"}  # fmt: skip
# "create Node" n3-… with n1's node token is refused: a node may create only its own Node.
# (The names of the Node and Token a case creates carry its cell: one app serves every case.)

ALLOWED_IN_OWN_CELL: dict[str, set[str]] = {
    "cluster-admin": set(OPS),
    "admin": CELL_OPS,
    "developer": DEVELOPER,
    "viewer": VIEWER,
    "node": NODE,
}
CLUSTER_WIDE = {"cluster-admin", "node"}  # roles not bound to one cell


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def matrix_api() -> AsyncIterator[Api]:
    """One app for the whole matrix (making an app and its routes costs ~0.1 s, the matrix has
    300 cases): each case seeds a fresh pair of cells of its own and mints its own token, so
    what it may touch in them is as in a fresh ``api``. Nodes n1 and n2 are shared."""
    async with running_api("memory://", resolver=False) as running:
        for node in ("n1", "n2"):
            await running.store.create(sample("Node", node))
        yield running


_case = itertools.count()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("cell", [OWN, OTHER])
@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("role", sorted(ALLOWED_IN_OWN_CELL))
async def test_matrix(matrix_api: Api, role: str, op: str, cell: str) -> None:
    api, n = matrix_api, next(_case)
    own, other = f"{OWN}-{n}", f"{OTHER}-{n}"
    await seed_cells(api, own, other)
    if role == "node":
        token = await mint(api, f"t{n}", "node", node="n1")
    elif role == "cluster-admin":
        token = await mint(api, f"t{n}", role)
    else:
        token = await mint(api, f"t{n}", role, own)
    method, path, body = OPS[op](own if cell == OWN else other)
    assert "watch" not in op  # an allowed watch would stream until the (shared) server stops
    r = await api.client.request(method, path, json=body, headers=bearer(token))
    want = op in ALLOWED_IN_OWN_CELL[role] and (cell == OWN or role in CLUSTER_WIDE)
    if want:
        assert r.status_code != 403 and r.status_code != 401, (role, op, cell, r.text)
    else:
        assert r.status_code == 403, (role, op, cell, r.status_code, r.text)
        assert r.json()["reason"] == "Forbidden"


async def test_a_denial_names_who_verb_kind_and_cell(api: Api) -> None:
    token = await mint(api, "dev", "developer", OWN)
    r = await api.client.delete("/api/v1/cells/other", headers=bearer(token))
    assert r.status_code == 403
    assert r.json()["message"] == (
        'user "token:dev" (developer in cell "own") may not delete Cell "other"'
    )
    r = await api.client.delete(f"/api/v1/cells/{OTHER}/hives/h", headers=bearer(token))
    assert r.json()["message"] == (
        'user "token:dev" (developer in cell "own") may not delete Hive "h" in cell "other"'
    )
    r = await api.client.get("/api/v1/hives", headers=bearer(token))
    assert r.json()["message"].endswith("may not list Hive across all cells")


async def test_a_viewer_reads_secrets_redacted_and_cannot_reveal_them(api: Api) -> None:
    token = await mint(api, "v", "viewer", OWN)
    r = await api.client.get(f"/api/v1/cells/{OWN}/secrets/s", headers=bearer(token))
    assert r.status_code == 200 and r.json()["data"] == {"token": "<redacted>"}
    r = await api.client.get(f"/api/v1/cells/{OWN}/secrets?reveal=true", headers=bearer(token))
    assert r.status_code == 403
    assert "may not reveal Secret" in r.json()["message"]
    dev = await mint(api, "d", "developer", OWN)
    r = await api.client.get(f"/api/v1/cells/{OWN}/secrets/s?reveal=1", headers=bearer(dev))
    assert r.status_code == 403  # developers write Secrets but do not read them back
    admin = await mint(api, "a", "admin", OWN)
    r = await api.client.get(f"/api/v1/cells/{OWN}/secrets/s?reveal=1", headers=bearer(admin))
    assert r.status_code == 200 and r.json()["data"]["token"] != "<redacted>"


# ------------------------------------------------------------------------ token lifecycle


async def test_an_expired_token_is_401_saying_so(api: Api) -> None:
    state = state_of(api)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    state.authenticator.now = lambda: start
    token = await mint(api, "short", "viewer", OWN, ttlSeconds=60)
    listed = await api.client.get("/api/v1/tokens/short")
    assert listed.json()["spec"]["expiresAt"] == "2030-01-01T00:01:00Z"
    path = f"/api/v1/cells/{OWN}/hives"
    assert (await api.client.get(path, headers=bearer(token))).status_code == 200
    state.authenticator.now = lambda: start + timedelta(seconds=61)
    r = await api.client.get(path, headers=bearer(token))
    assert r.status_code == 401
    assert r.json()["message"] == 'token "short" expired at 2030-01-01T00:01:00Z: ask for a new one'
    assert (await api.client.get("/api/v1/tokens/short")).json()["status"]["phase"] == "Expired"


async def test_expires_at_is_honoured_too(api: Api) -> None:
    state = state_of(api)
    state.authenticator.now = lambda: datetime(2031, 1, 1, tzinfo=UTC)
    token = await mint(api, "old", "viewer", OWN, expiresAt="2030-06-01T00:00:00Z")
    r = await api.client.get(f"/api/v1/cells/{OWN}/hives", headers=bearer(token))
    assert r.status_code == 401 and "expired" in r.json()["message"]


async def test_a_revoked_token_is_401_at_once(api: Api) -> None:
    token = await mint(api, "gone", "developer", OWN)
    path = f"/api/v1/cells/{OWN}/hives"
    assert (await api.client.get(path, headers=bearer(token))).status_code == 200  # now cached
    r = await api.client.delete("/api/v1/tokens/gone")
    assert r.status_code == 200 and "hash" not in r.json()["spec"]
    r = await api.client.get(path, headers=bearer(token))
    assert r.status_code == 401
    assert (
        r.json()["message"] == 'token "gone" is not valid: revoked, never issued, or not its secret'
    )
    assert (await api.client.delete("/api/v1/tokens/gone")).status_code == 404


async def test_a_wrong_secret_for_a_real_name_is_401(api: Api) -> None:
    token = await mint(api, "real", "cluster-admin")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    r = await api.client.get("/api/v1/cells", headers=bearer(forged))
    unknown = await api.client.get("/api/v1/cells", headers=bearer("apiary_ghost_" + forged[13:]))
    assert r.status_code == unknown.status_code == 401
    # the same words for a wrong secret and an unknown name: no oracle for which names exist
    assert (
        r.json()["message"] == 'token "real" is not valid: revoked, never issued, or not its secret'
    )
    assert unknown.json()["message"] == r.json()["message"].replace("real", "ghost")


async def test_deleting_a_cell_revokes_its_tokens(api: Api) -> None:
    token = await mint(api, "dev-other", "developer", OTHER)
    path = f"/api/v1/cells/{OTHER}/hives"
    assert (await api.client.get(path, headers=bearer(token))).status_code == 200
    assert (await api.client.delete(f"/api/v1/cells/{OTHER}")).status_code == 200
    assert (await api.client.get("/api/v1/tokens/dev-other")).status_code == 404
    await api.store.create(sample("Cell", OTHER))  # a new cell of the same name ...
    await asyncio.sleep(1.1)  # (the lookup cache's TTL)
    r = await api.client.get(path, headers=bearer(token))
    assert r.status_code == 401  # ... is not the old token's to reach


async def test_plaintext_and_hash_never_come_back(api: Api) -> None:
    token = await mint(api, "secret-keeper", "developer", OWN)
    for path in ("/api/v1/tokens", "/api/v1/tokens/secret-keeper"):
        r = await api.client.get(path)
        assert r.status_code == 200
        assert token not in r.text and "sha256:" not in r.text and '"hash"' not in r.text
    stored = await api.store.get("Token", "", "secret-keeper")
    assert stored["spec"]["hash"].startswith("sha256:")
    assert token not in str(stored)  # only the hash is kept
    r = await api.client.get("/api/v1/tokens")
    (item,) = r.json()["items"]
    assert item["spec"] == {"role": "developer", "cell": OWN}
    assert item["status"] == {"phase": "Active"}
    r = await api.client.put("/api/v1/tokens/secret-keeper", json=stored)
    assert r.status_code == 405
    assert (await api.client.get("/api/v1/tokens?watch=true")).status_code == 400
    assert (await api.client.get("/api/v1/tokens/secret-keeper/status")).status_code == 405


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"role": "developer"}, "spec.cell"),
        ({"role": "cluster-admin", "cell": OWN}, "spec.cell"),
        ({"role": "node"}, "spec.node"),
        ({"role": "viewer", "cell": OWN, "node": "n1"}, "spec.node"),
        ({"role": "root"}, "spec.role"),
        ({"role": "viewer", "cell": OWN, "ttlSeconds": -1}, "spec.ttlSeconds"),
        ({"role": "viewer", "cell": OWN, "hash": "sha256:00"}, "spec.hash"),
        ({"role": "viewer", "cell": OWN, "bogus": 1}, "spec.bogus"),
    ],
)
async def test_bad_tokens_are_refused_naming_the_field(api: Api, spec: Obj, field: str) -> None:
    r = await api.client.post("/api/v1/tokens", json={"metadata": {"name": "x"}, "spec": spec})
    assert r.status_code == 422, r.text
    assert field in {d["field"] for d in r.json().get("details", [])}, r.json()


async def test_only_cluster_admins_manage_tokens(api: Api) -> None:
    admin = await mint(api, "cell-admin", "admin", OWN)
    body = {"metadata": {"name": "x"}, "spec": {"role": "viewer", "cell": OWN}}
    r = await api.client.post("/api/v1/tokens", json=body, headers=bearer(admin))
    assert r.status_code == 403
    assert (await api.client.get("/api/v1/tokens", headers=bearer(admin))).status_code == 403
    r = await api.client.delete("/api/v1/tokens/cell-admin", headers=bearer(admin))
    assert r.status_code == 403
    boss = await mint(api, "boss", "cluster-admin")
    assert (
        await api.client.post("/api/v1/tokens", json=body, headers=bearer(boss))
    ).status_code == 201


async def test_whoami_says_role_and_binding(api: Api) -> None:
    dev = await mint(api, "dev", "developer", OWN)
    node = await mint(api, "n1", "node", node="n1")
    r = await api.client.get("/api/v1/whoami", headers=bearer(dev))
    assert r.json() == {"user": "token:dev", "role": "developer", "cell": OWN}
    r = await api.client.get("/api/v1/whoami", headers=bearer(node))
    assert r.json() == {"user": "system:node:n1", "role": "node", "node": "n1"}


# ---------------------------------------------------------------------------- node tokens


async def test_a_node_token_cannot_create_a_hive(api: Api) -> None:
    token = await mint(api, "n1", "node", node="n1")
    r = await api.client.post(
        f"/api/v1/cells/{OWN}/hives", json=sample("Hive", "evil", OWN), headers=bearer(token)
    )
    assert r.status_code == 403
    assert r.json()["message"] == (
        'user "system:node:n1" (node "n1") may not create Hive in cell "own"'
    )


async def test_a_node_token_cannot_read_another_nodes_drones(api: Api) -> None:
    token = await mint(api, "n1", "node", node="n1")
    h = bearer(token)
    ok = await api.client.get(f"/api/v1/cells/{OWN}/drones/d", headers=h)
    assert ok.status_code == 200 and ok.json()["spec"]["runtime"]["command"] == ["cat"]
    r = await api.client.get(f"/api/v1/cells/{OWN}/drones/e", headers=h)
    assert r.status_code == 403
    assert r.json()["message"].endswith(
        'may not get Drone "e" in cell "own": it is placed on node "n2"'
    )
    # a list across all cells (what the node agent asks): its own in full, others' placement only
    items = (await api.client.get("/api/v1/drones", headers=h)).json()["items"]
    by_name = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in items}
    assert len(by_name) == 4
    assert by_name[(OWN, "d")]["spec"]["runtime"]["command"] == ["cat"]
    assert by_name[(OWN, "e")]["spec"] == {"nodeName": "n2"}
    assert "status" not in by_name[(OTHER, "e")]
    # nor may it write their status
    other = await api.store.get("Drone", OWN, "e")
    other["status"] = {"phase": "Failed"}
    r = await api.client.put(f"/api/v1/cells/{OWN}/drones/e/status", json=other, headers=h)
    assert r.status_code == 403
    mine = await api.store.get("Drone", OWN, "d")
    mine["status"] = {"phase": "Running"}
    r = await api.client.put(f"/api/v1/cells/{OWN}/drones/d/status", json=mine, headers=h)
    assert r.status_code == 200, r.text


async def test_a_node_token_watch_shows_others_drones_placement_only(api: Api) -> None:
    token = await mint(api, "n1", "node", node="n1")
    lines: list[Obj] = []
    state_of(api).stopping.set()  # ASGITransport buffers the whole body: end the stream at once
    async with api.client.stream(
        "GET", f"/api/v1/cells/{OWN}/drones?watch=true", headers=bearer(token)
    ) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if not line.strip():
                continue
            event = orjson.loads(line)
            if event["type"] == "BOOKMARK":
                break
            lines.append(event["object"])
    by_name = {o["metadata"]["name"]: o for o in lines}
    assert by_name["d"]["spec"]["runtime"]["command"] == ["cat"]
    assert by_name["e"]["spec"] == {"nodeName": "n2"}


async def test_a_node_token_changes_only_its_own_node(api: Api) -> None:
    token = await mint(api, "n1", "node", node="n1")
    h = bearer(token)
    node = await api.store.get("Node", "", "n1")
    node["status"] = {"phase": "Ready"}
    assert (
        await api.client.put("/api/v1/nodes/n1/status", json=node, headers=h)
    ).status_code == 200
    other = await api.store.get("Node", "", "n2")
    r = await api.client.put("/api/v1/nodes/n2/status", json=other, headers=h)
    assert r.status_code == 403
    assert (
        r.json()["message"] == 'user "system:node:n1" (node "n1") may not update/status Node "n2"'
    )
    assert (await api.client.delete("/api/v1/nodes/n1", headers=h)).status_code == 403


async def test_the_bootstrap_admin_token_still_works(api: Api) -> None:
    assert (await api.client.get("/api/v1/cells")).status_code == 200
    r = await api.client.get("/api/v1/whoami")
    assert r.json() == {"user": "admin", "role": "cluster-admin"}


async def test_cached_lookups_keep_gets_fast(api: Api) -> None:
    """A stored token costs one store read per TTL, not one per request."""
    calls = 0
    state = state_of(api)
    inner = state.authenticator.lookup
    assert inner is not None

    async def counting(name: str) -> Obj | None:
        nonlocal calls
        calls += 1
        return await inner(name)

    state.authenticator.lookup = counting
    token = await mint(api, "hot", "viewer", OWN)
    for _ in range(20):
        r = await api.client.get(f"/api/v1/cells/{OWN}/hives/h", headers=bearer(token))
        assert r.status_code == 200
    assert calls == 1


async def test_unauthenticated_requests_get_www_authenticate(api: Api) -> None:
    bare = httpx.AsyncClient(transport=api.client._transport, base_url="http://apiary")
    async with bare:
        r = await bare.get("/api/v1/tokens", headers=bearer("apiary_nobody_" + "x" * 43))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="apiary"'


async def test_a_node_token_pushes_logs_of_its_own_drones_only(tmp_path: Path) -> None:
    async with running_api("memory://", resolver=False) as api:
        await seed(api)
        app = api.client._transport.app  # type: ignore[attr-defined]
        app.state.apiary_logs = LogStore(tmp_path / "logs")
        token = await mint(api, "n1", "node", node="n1")
        batch = {"lines": [{"text": "hello", "stream": "stderr"}]}
        path = f"/api/v1/cells/{OWN}/drones/{{}}/logs"
        r = await api.client.post(path.format("d"), json=batch, headers=bearer(token))
        assert r.status_code == 200, r.text
        r = await api.client.post(path.format("e"), json=batch, headers=bearer(token))
        assert r.status_code == 403 and 'placed on node "n2"' in r.json()["message"]


async def test_a_node_token_reads_only_the_secrets_its_own_drones_use(api: Api) -> None:
    """As Kubernetes' node authorizer: s (used by d, on n1) yes; only-e (used by a drone on
    n2) and unused no — with or without reveal."""
    token = await mint(api, "n1", "node", node="n1")
    base = f"/api/v1/cells/{OWN}/secrets"
    r = await api.client.get(f"{base}/s?reveal=true", headers=bearer(token))
    assert r.status_code == 200 and r.json()["data"]["token"], r.text
    for name in ("only-e", "unused"):
        for query in ("", "?reveal=true"):
            r = await api.client.get(f"{base}/{name}{query}", headers=bearer(token))
            assert r.status_code == 403, (name, query, r.text)
            assert f'may not get Secret "{name}"' in r.json()["message"]
            assert 'no drone placed on node "n1" uses it' in r.json()["message"]
    n2 = await mint(api, "n2", "node", node="n2")
    assert (await api.client.get(f"{base}/only-e?reveal=true", headers=bearer(n2))).is_success
    # a drone's LLM provider Secret counts as used
    drone = await api.store.get("Drone", OWN, "d")
    drone["spec"]["llm"] = {"provider": {"secretRef": {"name": "unused"}}}
    await api.store.update(drone)
    assert (await api.client.get(f"{base}/unused?reveal=true", headers=bearer(token))).is_success
    # so does one a stdio MCP server's env takes a value from (the node starts the server)
    r = await api.client.get(f"{base}/only-e?reveal=true", headers=bearer(token))
    assert r.status_code == 403
    ref = {"secretKeyRef": {"name": "only-e", "key": "token"}}
    drone = await api.store.get("Drone", OWN, "d")
    drone["spec"]["mcpServers"] = [{"name": "calc", "command": ["srv"],
                                    "env": [{"name": "T", "valueFrom": ref}]}]  # fmt: skip
    await api.store.update(drone)
    assert (await api.client.get(f"{base}/only-e?reveal=true", headers=bearer(token))).is_success


async def test_an_open_watch_ends_once_its_token_is_revoked(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apiary.api import watch

    monkeypatch.setattr(watch, "REAUTH_SECONDS", 0.2)
    token = await mint(api, "w", "viewer", OWN)

    async def watch_hives() -> list[Obj]:
        r = await api.client.get(f"/api/v1/cells/{OWN}/hives?watch=true", headers=bearer(token))
        assert r.status_code == 200
        return [orjson.loads(line) for line in r.text.splitlines() if line.strip()]

    task = asyncio.create_task(watch_hives())
    await asyncio.sleep(0.3)
    assert not task.done()  # still streaming with a good token
    assert (await api.client.delete("/api/v1/tokens/w")).status_code == 200
    events = await asyncio.wait_for(task, 5)  # ended by itself, within a recheck
    assert events[0]["type"] == "ADDED"
    assert events[-1]["type"] == "ERROR"
    assert events[-1]["object"]["code"] == 401
    assert 'token "w" is not valid' in events[-1]["object"]["message"]


async def test_a_node_token_spends_and_settles_only_the_budgets_of_its_own_drones_hives(
    api: Api,
) -> None:
    """The LLM budgets are bound like Secrets: a node reserves and settles for a hive only while
    one of that hive's drones is placed on it (d on n1 serves hive h); another hive, another
    cell, or a node with no such drone is a 403 naming the node — and nothing is held."""
    drone = await api.store.get("Drone", OWN, "d")
    drone["spec"]["hive"] = "h"
    drone["metadata"].setdefault("labels", {})["apiary.io/hive"] = "h"
    await api.store.update(drone)
    cell = await api.store.get("Cell", "", OWN)
    cell["spec"]["budget"] = {"tokens": 1000}
    await api.store.update(cell)
    n1, n2 = await mint(api, "n1", "node", node="n1"), await mint(api, "n2", "node", node="n2")
    ask = {"hive": "h", "session": "s1", "model": "m", "prompt": 10, "completion": 5}

    async def reserve(token: str, cell: str = OWN, **change: Any) -> httpx.Response:
        path = f"/api/v1/cells/{cell}/llmbudget/reserve"
        return await api.client.post(path, json={**ask, **change}, headers=bearer(token))

    r = await reserve(n1)
    assert r.status_code == 200 and r.json()["hold"], r.text
    settle = {"hold": r.json()["hold"], "hive": "h", "session": "s1", "model": "m",
              "prompt": 10, "completion": 5}  # fmt: skip
    for token, cell, change, why in (
        (n2, OWN, {}, 'for hive "h" (its LLM'),
        (n1, OWN, {"hive": "other"}, 'hive "other"'),
        (n1, OWN, {"hive": "h,x=y"}, 'hive "h,x=y"'),
        (n1, OTHER, {}, f'cell "{OTHER}" for hive "h"'),  # d of OTHER has no hive
        (n2, OWN, {"hive": None}, None),  # e on n2 is a drone of OWN: no hive named, allowed
    ):
        r = await reserve(token, cell, **change)
        if why is None:
            assert r.status_code == 200, r.text
            continue
        assert r.status_code == 403 and why in r.json()["message"], (change, r.text)
    path = f"/api/v1/cells/{OWN}/llmbudget/settle"
    r = await api.client.post(path, json=settle, headers=bearer(n2))
    assert r.status_code == 403 and "n2" in r.json()["message"]
    r = await api.client.post(path, json=settle, headers=bearer(n1))
    assert r.status_code == 200, r.text
    used = (await api.client.get(f"/api/v1/cells/{OWN}/llmbudget")).json()
    assert used["cell"]["tokens"] == 15, used  # n1's one call only; the refused held nothing
    # the recorded calls (cassettes) are bound the same way
    await api.store.create(sample("Session", "s1", OWN))
    call = {"request": {"messages": []}, "response": {}, "stage": "s"}
    r = await api.client.post(f"/api/v1/cells/{OWN}/sessions/s1/llm-calls", json=call,
                              headers=bearer(n2))  # fmt: skip
    assert r.status_code == 403 and 'hive "h"' in r.json()["message"], r.text
    n3 = await mint(api, "n3", "node", node="n3")
    lookup = {"from": "s1", "request": {"messages": []}}
    r = await api.client.post(f"/api/v1/cells/{OWN}/llmcalls/lookup", json=lookup,
                              headers=bearer(n3))  # fmt: skip
    assert r.status_code == 403 and 'placed on node "n3"' in r.json()["message"], r.text


async def test_a_node_token_reaches_comb_and_memory_only_in_cells_it_runs_drones_of(
    api: Api,
) -> None:
    """A node relays its drones' Comb and memory calls: in a cell where none of its drones runs
    it reaches neither (n1 and n2 run drones in both seeded cells; n3 in none)."""
    await api.store.create(sample("Session", "s1", OWN))
    n1, n3 = await mint(api, "n1", "node", node="n1"), await mint(api, "n3", "node", node="n3")
    comb = f"/api/v1/cells/{OWN}/sessions/s1/comb/k"
    search = f"/api/v1/cells/{OWN}/memory/search?q=x"
    r = await api.client.put(comb, json={"value": 1}, headers=bearer(n1))
    assert r.status_code == 200, r.text
    assert (await api.client.get(search, headers=bearer(n1))).status_code == 200
    for method, path in (("GET", comb), ("PUT", comb), ("GET", search)):
        body = {"value": 2} if method == "PUT" else None
        r = await api.client.request(method, path, json=body, headers=bearer(n3))
        assert r.status_code == 403 and 'no drone is placed on node "n3"' in r.json()["message"]
    assert (await api.client.get(comb)).json()["value"] == 1  # n3 changed nothing
