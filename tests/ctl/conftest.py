"""Fixtures for the CLI tests: a real apiaryd per module (or per test) and a CLI runner."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from ctlkit import SEEDS, Ctl, Server, Spares

HERE = Path(__file__).parent


_spares: Spares | None = None
"""This directory's servers, each started while the module before its user runs."""


@pytest.fixture(scope="session")
def spares(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spares]:
    global _spares
    _spares = Spares(tmp_path_factory)
    yield _spares
    _spares.close()
    _spares = None


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the directory's last test (its fixtures torn down) no server of it runs on; the
    session's other tests need none."""
    if _spares is not None and (nextitem is None or Path(nextitem.path).parent != HERE):
        _spares.close()


@pytest.fixture(scope="module")
def shared_server(spares: Spares) -> Iterator[Server]:
    """One server per test module; tests isolate themselves with their own cells."""
    srv = spares.take()
    yield srv
    spares.retire(srv)


@pytest.fixture
def fresh_server(spares: Spares) -> Iterator[Server]:
    """A server of the test's own, for tests that need the seed's `default` cell untouched."""
    srv = spares.take()
    yield srv
    spares.retire(srv)


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
