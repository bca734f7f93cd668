"""A real headless Chromium (Debian's ``chromium``, driven by Playwright through
``executable_path``: Playwright's own browser download is not used) against a real apiaryd.

Without the browser (or Playwright) the console tests are skipped with the reason — and fail
instead under ``APIARY_REQUIRE_SERVICES=1`` (CI installs ``chromium`` in ``.ci/run``).
Screenshots go to ``build/ui-screenshots/`` (not committed: ``build/`` is ignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services import services_required

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "build" / "ui-screenshots"


def chromium_path() -> str:
    """The system Chromium; else skip (fail if APIARY_REQUIRE_SERVICES=1) naming what is missing."""
    found = (
        os.environ.get("APIARY_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    problem = None if found else "chromium is not installed (apt-get install -y chromium)"
    if found:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed (pip install -e '.[dev]')"
    if problem is None:
        assert found is not None
        return found
    if services_required():
        pytest.fail(f"browser tests need a browser: {problem}")
    pytest.skip(f"browser tests need a browser: {problem}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
