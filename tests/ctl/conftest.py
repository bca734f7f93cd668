"""Fixtures for the CLI tests: a real apiaryd per module (or per test) and a CLI runner."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from ctlkit import SEEDS, Ctl, Server, start_server


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per test module; tests isolate themselves with their own cells."""
    srv = start_server(tmp_path_factory.mktemp("apiaryd") / "data")
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own, for tests that need the seed's `default` cell untouched."""
    srv = start_server(tmp_path / "data")
    yield srv
    srv.stop()


@pytest.fixture
def ctl(shared_server: Server, tmp_path: Path) -> Ctl:
    return Ctl(shared_server, tmp_path)


@pytest.fixture
def fresh_ctl(fresh_server: Server, tmp_path: Path) -> Ctl:
    return Ctl(fresh_server, tmp_path)


@pytest.fixture
def seeds() -> list[Path]:
    files = sorted(SEEDS.glob("*.yaml"))
    if len(files) != 9:
        pytest.fail(f"expected the nine seed manifests in {SEEDS}, found {len(files)}")
    return files


_cells = iter(range(1, 1_000_000))


@pytest.fixture
def cell(shared_server: Server) -> str:
    """A cell name unique within the module's server (cells need not exist to be used)."""
    return f"t{os.getpid() % 1000}-{next(_cells)}"
