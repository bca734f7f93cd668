"""A client generated from /openapi.json (openapi-python-client) lists hives and reads a hive's
stages as typed objects: the document is good enough to build on, not only to read.

The generator is a tool, run where it is installed (``pipx install openapi-python-client``, or
``APIARY_OPENAPI_CLIENT=/path/to/openapi-python-client``; CI's ``.ci/run`` installs it in a venv
of its own); it is not a dev dependency because it pins older typer and httpx than apiaryctl runs
on. The generated code needs only httpx and attrs. Missing, the test skips — or fails under
``APIARY_REQUIRE_SERVICES=1``, so CI cannot pass without running it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services import services_required

from .conftest import TOKEN, Api

GENERATOR = os.environ.get("APIARY_OPENAPI_CLIENT") or shutil.which("openapi-python-client")
PACKAGE = "apiary_api_client"


@pytest.fixture(autouse=True)
def _generator() -> None:
    if GENERATOR is None:
        reason = "openapi-python-client is not installed (pipx install openapi-python-client)"
        if services_required():  # CI installs it (.ci/run): missing there is a failure
            pytest.fail(f"{reason} (APIARY_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def generate(doc: dict[str, Any], where: Path) -> None:
    spec = where / "openapi.json"
    spec.write_text(json.dumps(doc))
    assert GENERATOR is not None
    subprocess.run(
        [GENERATOR, "generate", "--path", str(spec), "--meta", "none",
         "--output-path", str(where / PACKAGE)],
        check=True, cwd=where, capture_output=True, timeout=300,
    )  # fmt: skip
    sys.path.insert(0, str(where))


async def test_generated_client_lists_hives_and_reads_stages(mem_api: Api, generated: Path) -> None:
    stages = [{"name": "a", "agentRef": "x", "replicas": 2}, {"name": "b", "agentRef": "y"}]
    body = {"metadata": {"name": "h"}, "spec": {"pattern": "pipeline", "stages": stages}}
    assert (await mem_api.client.post("/api/v1/cells/default/hives", json=body)).status_code == 201
    generate((await mem_api.client.get("/openapi.json")).json(), generated)

    from apiary_api_client import AuthenticatedClient  # type: ignore[import-not-found]
    from apiary_api_client.api.hives import list_hives, read_hive  # type: ignore[import-not-found]
    from apiary_api_client.models import Hive, HiveList, Stage  # type: ignore[import-not-found]

    transport = mem_api.client._transport
    client = AuthenticatedClient(
        base_url="http://apiary", token=TOKEN, httpx_args={"transport": transport}
    )
    async with client:
        listed = await list_hives.asyncio(client=client, cell="default")
        hive = await read_hive.asyncio(client=client, cell="default", name="h")
    assert isinstance(listed, HiveList)
    assert [h.metadata.name for h in listed.items] == ["h"]
    assert isinstance(hive, Hive)
    got = hive.spec.stages
    assert all(isinstance(s, Stage) for s in got)
    assert [(s.name, s.agent_ref, s.replicas) for s in got] == [("a", "x", 2), ("b", "y", 1)]
    assert isinstance(got[0].replicas, int)
