"""Secret encryption at rest: AES-256-GCM behind the store's :class:`SecretCodec`.

The store encrypts a Secret's ``data`` before it reaches the database, so the plaintext never
lands in the SQLite file or a PostgreSQL row. Each ciphertext names the key that made it
(``v1:<key id>:<base64 nonce+ciphertext>``), so keys can be rotated: the first key encrypts,
every configured key decrypts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from apiary.errors import BadRequest
from apiary.store.model import SecretCodec

KEY_BYTES = 32
_NONCE_BYTES = 12
_PREFIX = "v1"


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def decode_key(text: str, *, source: str) -> bytes:
    """A key from its base64 text (standard or URL-safe). ``source`` names where it came from."""
    raw = text.strip()
    try:
        padded = raw.replace("+", "-").replace("/", "_") + "=" * (-len(raw) % 4)
        key = base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{source}: the secret key is not valid base64") from exc
    if len(key) != KEY_BYTES:
        raise BadRequest(f"{source}: the secret key must be {KEY_BYTES} bytes (got {len(key)})")
    return key


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


class AesGcmCodec(SecretCodec):
    """AES-256-GCM with a fresh random nonce per encryption; the first key encrypts."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._primary = AESGCM(keys[0])
        self._primary_id = _key_id(keys[0])
        self._by_id = {_key_id(k): AESGCM(k) for k in keys}

    def encrypt(self, plaintext: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._primary.encrypt(nonce, plaintext, self._primary_id.encode())
        return f"{_PREFIX}:{self._primary_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str) -> bytes:
        try:
            prefix, kid, payload = token.split(":", 2)
        except ValueError:
            raise ValueError("not an Apiary ciphertext") from None
        if prefix != _PREFIX:
            raise ValueError(f"unknown ciphertext version {prefix!r}")
        aead = self._by_id.get(kid)
        if aead is None:
            raise ValueError(f"secret was encrypted with key {kid}, which is not configured")
        blob = base64.b64decode(payload)
        try:
            return aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], kid.encode())
        except InvalidTag:
            raise ValueError(f"secret does not decrypt with key {kid} (tampered?)") from None


def write_private(path: Path, content: str) -> None:
    """Create ``path`` with mode 0600 atomically (never world-readable, not even briefly)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``; on first start a new random key is written there (0600)."""
    if path.exists():
        return decode_key(path.read_text(), source=str(path))
    key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    write_private(path, encode_key(key) + "\n")
    return key


def codec_from_config(env_key: str | None, key_file: Path | None, data_dir: Path) -> AesGcmCodec:
    """Resolve the key: ``APIARY_SECRET_KEY`` (comma-separated for rotation), else the key file,
    else ``<data-dir>/secret.key`` (created on first start)."""
    if env_key:
        keys = [decode_key(k, source="APIARY_SECRET_KEY") for k in env_key.split(",") if k.strip()]
        return AesGcmCodec(keys)
    if key_file is not None:
        if not key_file.exists():
            raise BadRequest(f"--secret-key-file: {key_file} does not exist")
        return AesGcmCodec([decode_key(key_file.read_text(), source=str(key_file))])
    return AesGcmCodec([load_or_create_key(data_dir / "secret.key")])
