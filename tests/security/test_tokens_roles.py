"""apiary.security on its own: the token format and hash, the rules table, the authenticator's
cache and clock (no store: a fake lookup)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apiary.errors import Unauthorized
from apiary.security import (
    Authenticator,
    Principal,
    allowed,
    binding_problems,
    denial,
    generate_token,
    hash_token,
    matches,
    parse_token,
)
from apiary.security.roles import placed_elsewhere, placement_only

Obj = dict[str, Any]


def test_a_token_names_its_object_and_only_its_hash_is_kept() -> None:
    token, digest = generate_token("ci-bot")
    assert token.startswith("apiary_ci-bot_") and len(token) > 50
    assert parse_token(token) == "ci-bot"
    assert digest == hash_token(token) and digest.startswith("sha256:") and token not in digest
    assert matches(token, digest) and not matches(token + "x", digest)
    other, _ = generate_token("ci-bot")
    assert other != token  # 256 random bits each time


@pytest.mark.parametrize("text", ["", "apiary_", "apiary_x", "apiary__secretsecretsecret", "abc"])
def test_what_is_not_in_the_format_names_no_token(text: str) -> None:
    assert parse_token(text) is None


def test_a_name_with_an_underscore_cannot_be_a_token_name() -> None:
    with pytest.raises(ValueError):
        generate_token("a_b")


DEV = Principal("token:d", (), "developer", "a")
NODE = Principal("system:node:n1", (), "node", None, "n1")


@pytest.mark.parametrize(
    ("principal", "verb", "kind", "cell", "name", "ok"),
    [
        (DEV, "create", "Hive", "a", None, True),
        (DEV, "create", "Hive", "b", None, False),
        (DEV, "delete", "Drone", "a", None, False),
        (DEV, "reveal", "Secret", "a", None, False),
        (DEV, "list", "Hive", None, None, False),  # across all cells
        (DEV, "get", "Cell", None, "a", False),
        (NODE, "update/status", "Node", None, "n1", True),
        (NODE, "update/status", "Node", None, "n2", False),
        (NODE, "create", "Hive", "a", None, False),
        (NODE, "list", "Drone", None, None, True),
        (NODE, "reveal", "Secret", "a", None, True),
        (NODE, "get", "Session", "a", None, False),
        (NODE, "get/dispatches", "Session", "a", None, True),
        (Principal("x"), "get", "Hive", "a", None, False),  # no role: nothing
        (Principal("root", ("system:masters",)), "delete", "Cell", None, "a", True),
    ],
)
def test_the_rules_table(
    principal: Principal, verb: str, kind: str, cell: str | None, name: str | None, ok: bool
) -> None:
    assert allowed(principal, verb, kind, cell, name) is ok


def test_denials_name_who_verb_kind_and_cell() -> None:
    assert denial(DEV, "delete", "Cell", None, "b") == (
        'user "token:d" (developer in cell "a") may not delete Cell "b"'
    )
    assert denial(NODE, "create", "Hive", "a") == (
        'user "system:node:n1" (node "n1") may not create Hive in cell "a"'
    )


def test_a_node_sees_only_the_placement_of_other_nodes_drones() -> None:
    drone = {"apiVersion": "apiary.io/v1", "kind": "Drone",
             "metadata": {"name": "d", "namespace": "a", "uid": "u", "labels": {"x": "y"}},
             "spec": {"nodeName": "n2", "runtime": {"command": ["secret-cmd"]}},
             "status": {"pid": 1}}  # fmt: skip
    assert placed_elsewhere(NODE, "Drone", drone) == "n2"
    assert placement_only(drone) == {
        "apiVersion": "apiary.io/v1", "kind": "Drone",
        "metadata": {"name": "d", "namespace": "a", "uid": "u"}, "spec": {"nodeName": "n2"},
    }  # fmt: skip
    drone["spec"]["nodeName"] = "n1"
    assert placed_elsewhere(NODE, "Drone", drone) is None
    assert placed_elsewhere(DEV, "Drone", {"spec": {}}) is None


def test_binding_problems() -> None:
    assert binding_problems("developer", "a", None) == []
    assert binding_problems("node", None, "n1") == []
    assert binding_problems("cluster-admin", None, None) == []
    assert [f for f, _ in binding_problems("viewer", None, None)] == ["spec.cell"]
    assert [f for f, _ in binding_problems("node", "a", None)] == ["spec.cell", "spec.node"]


# --------------------------------------------------------------------------- authenticator


class Clock:
    def __init__(self) -> None:
        self.wall = datetime(2030, 1, 1, tzinfo=UTC)
        self.mono = 100.0


def make(
    objects: dict[str, Obj], clock: Clock, ttl: float = 2.0
) -> tuple[Authenticator, list[str]]:
    calls: list[str] = []

    async def lookup(name: str) -> Obj | None:
        calls.append(name)
        return objects.get(name)

    auth = Authenticator.admin(
        "bootstrap", lookup, now=lambda: clock.wall, ttl=ttl, monotonic=lambda: clock.mono
    )
    return auth, calls


def token_object(name: str, digest: str, **spec: Any) -> Obj:
    return {"kind": "Token", "metadata": {"name": name}, "spec": {"hash": digest, **spec}}


async def test_stored_tokens_are_cached_for_the_ttl_and_invalidated_on_demand() -> None:
    clock = Clock()
    token, digest = generate_token("t")
    objects = {"t": token_object("t", digest, role="viewer", cell="a")}
    auth, calls = make(objects, clock)
    who = await auth.authenticate(f"Bearer {token}")
    assert (who.user, who.role, who.cell) == ("token:t", "viewer", "a")
    await auth.authenticate(f"Bearer {token}")
    assert calls == ["t"]
    del objects["t"]
    await auth.authenticate(f"Bearer {token}")  # still cached: another replica's revocation
    clock.mono += 2.1  # ... is seen within the TTL
    with pytest.raises(Unauthorized, match="revoked or never existed"):
        await auth.authenticate(f"Bearer {token}")
    objects["t"] = token_object("t", digest, role="viewer", cell="a")
    with pytest.raises(Unauthorized):
        await auth.authenticate(f"Bearer {token}")  # the miss is cached too
    auth.invalidate("t")
    assert (await auth.authenticate(f"Bearer {token}")).role == "viewer"


async def test_expiry_uses_the_injected_clock() -> None:
    clock = Clock()
    token, digest = generate_token("t")
    expires = (clock.wall + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    auth, _ = make({"t": token_object("t", digest, role="cluster-admin", expiresAt=expires)}, clock)
    assert (await auth.authenticate(f"Bearer {token}")).cluster_admin
    clock.wall += timedelta(hours=1)
    with pytest.raises(Unauthorized, match='token "t" expired at 2030-01-01T01:00:00Z'):
        await auth.authenticate(f"Bearer {token}")


async def test_the_bootstrap_token_and_bad_headers() -> None:
    auth, calls = make({}, Clock())
    assert (await auth.authenticate("Bearer bootstrap")).cluster_admin
    for header, message in [
        (None, "missing Authorization header"),
        ("Basic abc", "must be 'Bearer <token>'"),
        ("Bearer nope", "invalid bearer token"),
    ]:
        with pytest.raises(Unauthorized, match=message):
            await auth.authenticate(header)
    assert calls == []  # nothing in the token format: no lookup at all


async def test_a_right_name_with_a_wrong_secret_is_refused() -> None:
    _, digest = generate_token("t")
    auth, _ = make({"t": token_object("t", digest, role="admin", cell="a")}, Clock())
    forged, _ = generate_token("t")
    with pytest.raises(Unauthorized, match="invalid bearer token"):
        await auth.authenticate(f"Bearer {forged}")
