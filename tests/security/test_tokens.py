"""apiary.security unit tests: the token format, the stored hash, the constant-time check, and the
caching authenticator (injected clocks: expiry, cache TTL, revocation within the TTL)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apiary.errors import Unauthorized
from apiary.security import Authenticator, generate_token, hash_token, matches, parse_token
from apiary.security.roles import Principal

Obj = dict[str, Any]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_token_reads_apiary_name_secret() -> None:
    token, digest = generate_token("ci")
    prefix, name, secret = token.split("_", 2)
    assert (prefix, name) == ("apiary", "ci")
    assert len(secret) >= 43  # 32 random bytes, URL-safe base64
    assert parse_token(token) == "ci"
    assert digest == "sha256:" + hashlib.sha256(token.encode()).hexdigest()
    assert secret not in digest


def test_two_tokens_for_one_name_differ() -> None:
    assert generate_token("ci")[0] != generate_token("ci")[0]


@pytest.mark.parametrize("bad", ["", "a_b"])
def test_a_name_must_be_nonempty_and_hold_no_underscore(bad: str) -> None:
    with pytest.raises(ValueError):
        generate_token(bad)


@pytest.mark.parametrize(
    "text", ["", "ci", "apiary_", "apiary_ci", "apiary__" + "x" * 43, "apiary_ci_short", "Bearer x"]
)
def test_not_a_token(text: str) -> None:
    assert parse_token(text) is None


def test_matches_only_the_exact_token() -> None:
    token, digest = generate_token("ci")
    assert matches(token, digest)
    assert not matches(token[:-1] + ("A" if token[-1] != "A" else "B"), digest)
    assert not matches(token, hash_token("something else"))


class Clock:
    def __init__(self) -> None:
        self.wall = T0
        self.mono = 0.0

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


def token_obj(name: str, digest: str, **spec: Any) -> Obj:
    return {"kind": "Token", "metadata": {"name": name}, "spec": {"hash": digest, **spec}}


def authenticator(
    store: dict[str, Obj], clock: Clock, ttl: float = 1.0
) -> tuple[Authenticator, list[str]]:
    reads: list[str] = []

    async def lookup(name: str) -> Obj | None:
        reads.append(name)
        return store.get(name)

    admin = Authenticator.admin(
        "bootstrap-admin-token",
        lookup,
        now=lambda: clock.wall,
        monotonic=lambda: clock.mono,
        ttl=ttl,
    )
    return admin, reads


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def test_the_bootstrap_admin_token_is_cluster_admin() -> None:
    auth, reads = authenticator({}, Clock())
    who = await auth.authenticate(bearer("bootstrap-admin-token"))
    assert who.cluster_admin and who.user == "admin"
    assert reads == []  # static tokens never reach the store


async def test_a_stored_token_grants_its_role_and_cell() -> None:
    token, digest = generate_token("ci")
    auth, _ = authenticator({"ci": token_obj("ci", digest, role="viewer", cell="a")}, Clock())
    assert await auth.authenticate(bearer(token)) == Principal("token:ci", (), "viewer", "a", None)


async def test_a_node_token_speaks_for_its_node() -> None:
    token, digest = generate_token("n1")
    auth, _ = authenticator({"n1": token_obj("n1", digest, role="node", node="n1")}, Clock())
    who = await auth.authenticate(bearer(token))
    assert (who.user, who.role, who.node) == ("system:node:n1", "node", "n1")


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer nope"])
async def test_bad_headers_are_401(header: str | None) -> None:
    auth, _ = authenticator({}, Clock())
    with pytest.raises(Unauthorized):
        await auth.authenticate(header)


async def test_a_wrong_secret_for_a_real_name_is_401() -> None:
    _, digest = generate_token("ci")
    other, _ = generate_token("ci")
    auth, _ = authenticator({"ci": token_obj("ci", digest, role="viewer", cell="a")}, Clock())
    with pytest.raises(Unauthorized, match='token "ci" is not valid: revoked, never issued'):
        await auth.authenticate(bearer(other))


async def test_an_unknown_token_is_401_saying_so() -> None:
    token, _ = generate_token("ghost")
    auth, _ = authenticator({}, Clock())
    with pytest.raises(Unauthorized, match='token "ghost" is not valid: revoked, never issued'):
        await auth.authenticate(bearer(token))


async def test_expiry_follows_the_injected_clock_even_when_cached() -> None:
    clock = Clock()
    token, digest = generate_token("ci")
    expires = (T0 + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    store = {"ci": token_obj("ci", digest, role="viewer", cell="a", expiresAt=expires)}
    auth, _ = authenticator(store, clock, ttl=3600)  # cached the whole time
    await auth.authenticate(bearer(token))
    clock.wall += timedelta(seconds=59)
    await auth.authenticate(bearer(token))
    clock.wall += timedelta(seconds=1)
    with pytest.raises(Unauthorized, match=r'token "ci" expired at 2026-01-01T00:01:00Z'):
        await auth.authenticate(bearer(token))


async def test_lookups_are_cached_for_the_ttl_and_revocation_shows_after_it() -> None:
    clock = Clock()
    token, digest = generate_token("ci")
    store = {"ci": token_obj("ci", digest, role="viewer", cell="a")}
    auth, reads = authenticator(store, clock, ttl=1.0)
    for _ in range(100):
        await auth.authenticate(bearer(token))
    assert reads == ["ci"]  # one store read per TTL, not per request
    del store["ci"]  # revoked on another replica
    clock.advance(0.5)
    await auth.authenticate(bearer(token))  # still within the TTL
    clock.advance(0.6)
    with pytest.raises(Unauthorized, match="revoked, never issued"):
        await auth.authenticate(bearer(token))


async def test_invalidate_revokes_at_once() -> None:
    clock = Clock()
    token, digest = generate_token("ci")
    store = {"ci": token_obj("ci", digest, role="viewer", cell="a")}
    auth, _ = authenticator(store, clock, ttl=3600)
    await auth.authenticate(bearer(token))
    del store["ci"]
    auth.invalidate("ci")
    with pytest.raises(Unauthorized):
        await auth.authenticate(bearer(token))


async def test_misses_are_cached_too() -> None:
    clock = Clock()
    token, _ = generate_token("ghost")
    auth, reads = authenticator({}, clock)
    for _ in range(10):
        with pytest.raises(Unauthorized):
            await auth.authenticate(bearer(token))
    assert reads == ["ghost"]


def test_the_default_cache_ttl_is_at_most_one_second() -> None:
    """Revocation on another replica takes effect within the cache TTL: the brief bounds it."""
    assert Authenticator().ttl <= 1.0
