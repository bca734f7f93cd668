"""Secrets are encrypted at rest: the plaintext never reaches the database, reads decrypt."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest
from cryptography.fernet import Fernet
from storekit import MakeStore, collect

from apiary.store import SecretCodec, Store
from apiary.store.memory import MemoryStore
from apiary.store.postgres import PostgresStore
from apiary.store.sqlite import SQLiteStore

PLAINTEXT = "correct-horse-battery-staple-4711"
ENCODED = base64.b64encode(PLAINTEXT.encode()).decode()


class FernetCodec(SecretCodec):
    """A real authenticated cipher, as a deployment would configure."""

    def __init__(self) -> None:
        self.fernet = Fernet(Fernet.generate_key())

    def encrypt(self, plaintext: bytes) -> str:
        return self.fernet.encrypt(plaintext).decode()

    def decrypt(self, token: str) -> bytes:
        return self.fernet.decrypt(token.encode())


def secret(name: str, **body: object) -> dict[str, object]:
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        **body,
    }


async def raw_bytes(store: Store) -> bytes:
    """Everything the backend has persisted, as bytes, read around the store's API."""
    if isinstance(store, SQLiteStore):
        files = [store.path, Path(f"{store.path}-wal")]
        return b"".join(p.read_bytes() for p in files if p.exists())
    if isinstance(store, PostgresStore):
        async with store._conn() as conn:
            rows = await conn.fetch("SELECT body FROM objects UNION ALL SELECT body FROM changes")
        return "\n".join(r[0] for r in rows).encode()
    assert isinstance(store, MemoryStore)
    return orjson.dumps([list(store._objects.values()), [c.object for c in store._changes]])


async def test_secret_data_is_encrypted_at_rest(make_store: MakeStore) -> None:
    store = await make_store(codec=FernetCodec())
    since = await store.resource_version()
    created = await store.create(secret("db", stringData={"password": PLAINTEXT}))
    assert created["data"] == {"password": ENCODED}
    assert "stringData" not in created
    updated = await store.update(dict(created, data={"password": ENCODED, "user": ENCODED}))
    assert updated["metadata"]["generation"] == 2, "changing a secret's data is a new generation"

    raw = await raw_bytes(store)
    assert b"encryptedData" in raw, "the secret was stored"
    assert PLAINTEXT.encode() not in raw
    assert ENCODED.encode() not in raw

    assert (await store.get("Secret", "default", "db"))["data"]["user"] == ENCODED
    assert (await store.list("Secret")).items[0]["data"]["password"] == ENCODED
    changes = await collect(store, 2, since=since, kind="Secret")
    assert [c.object["data"]["password"] for c in changes] == [ENCODED, ENCODED]
    assert all("encryptedData" not in c.object for c in changes)


async def test_without_a_codec_secrets_are_stored_as_given(store: Store) -> None:
    await store.create(secret("plain", data={"k": ENCODED}))
    assert (await store.get("Secret", "default", "plain"))["data"] == {"k": ENCODED}


async def test_reading_encrypted_secrets_needs_the_key(backend: str, make_store: MakeStore) -> None:
    if backend == "memory":
        pytest.skip("a memory store cannot be reopened with another key")
    writer = await make_store(codec=FernetCodec())
    await writer.create(secret("db", stringData={"password": PLAINTEXT}))
    await writer.close()
    reader = await make_store()
    with pytest.raises(RuntimeError, match="no key"):
        await reader.get("Secret", "default", "db")
