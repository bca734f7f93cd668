"""Shared fixtures. Service URLs come from env with the machine's defaults.

The suite runs as root in CI, so drones really run as ``nobody`` (docs/security.md). An agent
script a test writes into its ``tmp_path`` must then be reachable by that user: pytest makes its
temporary directories 0700, so ``tmp_path`` and the directories above it get search permission
for others (o+x: enter, not list). A data dir inside is still closed: apiaryd makes it 0700.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _searchable(path: Path) -> None:
    for d in (path, *path.parents):
        if d == Path(d.anchor):
            break
        try:
            mode = d.stat().st_mode
            if not mode & 0o001:
                os.chmod(d, mode | 0o001)
        except OSError:
            break


@pytest.fixture
def tmp_path(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        _searchable(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tmp_path_factory(tmp_path_factory: pytest.TempPathFactory) -> pytest.TempPathFactory:
    if os.geteuid() == 0:
        real = tmp_path_factory.mktemp

        def mktemp(basename: str, numbered: bool = True) -> Path:
            made = real(basename, numbered)
            _searchable(made)
            return made

        tmp_path_factory.mktemp = mktemp  # type: ignore[method-assign]
    return tmp_path_factory
