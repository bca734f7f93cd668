"""First-start state in the data dir: the admin token, the secret key, the default Cell."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from apiary.crypto import write_private
from apiary.errors import AlreadyExists
from apiary.resources import API_VERSION
from apiary.store import Store

TOKEN_FILE = "admin.token"


def prepare_data_dir(path: Path) -> Path:
    """Create the data dir if needed and make it apiaryd's alone, whatever it was before: the dir
    and every dir in it 0700, every file 0600 (store, journal, Comb, logs, token, key). Refuses a
    path that is not a directory. Drones run as other users and must not enter it (DESIGN §9)."""
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--data-dir {path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    make_private(path)
    return path


def make_private(root: Path) -> None:
    """chmod 0700 every directory and 0600 every file under ``root`` (symlinks are left alone:
    they are not followed, so a link cannot make us change a file outside)."""
    os.chmod(root, 0o700)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o700)
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o600)


def load_or_create_token(data_dir: Path) -> str:
    """The admin token from ``<data-dir>/admin.token``, written (0600) on first start."""
    path = data_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    while token.startswith("-"):  # would read as an option on a command line (1 in 64)
        token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    os.chmod(path, 0o600)
    return token


async def ensure_default_cell(store: Store) -> bool:
    """On a brand-new store (nothing ever written) create the ``default`` Cell. True if created.

    Only on first start: a user who later deletes ``default`` does not see it come back."""
    if await store.resource_version() != 0:
        return False
    try:
        await store.create(
            {"apiVersion": API_VERSION, "kind": "Cell", "metadata": {"name": "default"}, "spec": {}}
        )
    except AlreadyExists:
        return False
    return True
