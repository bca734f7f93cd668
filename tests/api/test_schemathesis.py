"""The OpenAPI document against the server it describes: schemathesis generates valid and invalid
requests for every operation of a real apiaryd's ``/openapi.json`` and checks every answer —
no 5xx, only documented statuses and content types, bodies matching their schemas, and invalid
input refused.

Bounded (a few examples per operation, under two minutes). The server runs without its local
node (``--no-local-node``): generated AgentSpecs must not start processes. Requests that would
never end (watches, ``follow``, SSE) are not sent, and a long-poll waits 0 s.

The operations are shared out to two worker processes: making cases is hypothesis's CPU-bound
work (most of the time, not the requests), and an operation's cases are the same in any process
(``derandomize``), so this checks the very same requests in about 60 % of the time.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from e2e.cluster import Apiaryd  # noqa: E402

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXAMPLES = 10
ENDLESS = ("watch", "follow")


@pytest.fixture(scope="module")
def apiaryd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apiaryd]:
    server = Apiaryd(tmp_path_factory.mktemp("schemathesis") / "data", ["--no-local-node"])
    server.start()
    yield server
    server.stop()


def load_schema(url: str, token: str) -> Any:
    config = SchemathesisConfig()
    auth = {"Authorization": f"Bearer {token}"}
    config.projects.default.update(base_url=url, request_timeout=10, headers=auth)
    # the token is the test's, not generated data: no case drops or mangles it
    config.projects.default.generation.update(with_security_parameters=False)
    return schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)


@pytest.fixture(scope="module")
def api_schema(apiaryd: Apiaryd) -> Any:
    return load_schema(apiaryd.url, apiaryd.token)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "all")


def endless(case: Any) -> bool:
    """A request that would stream until the client hangs up."""
    query = case.query or {}
    return case.path.endswith("/stream") or any(_truthy(query.get(k)) for k in ENDLESS)


def check(case: Any) -> None:
    if endless(case):
        return
    if case.query and "wait" in case.query:
        case.query["wait"] = "0"  # a long-poll would hold the run for up to a minute
    token = case.operation.schema.config.headers["Authorization"]  # examples lack it
    case.call_and_validate(headers={"Authorization": token}, checks=CHECKS)


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests every run: a failure is reproducible
    database=None,
    phases=[Phase.generate],  # no shrinking: the run stays bounded
    suppress_health_check=list(HealthCheck),
)


def run_operation(operation: Any, mode: GenerationMode | None) -> None:
    """The document's examples (mode None: valid objects, so reads and writes that succeed are
    checked too) or a few generated requests; the first failing check raises."""
    if mode is None:
        strategies = operation.get_strategies_from_examples()
        once = settings(SETTINGS, max_examples=1)
    else:
        strategies = [operation.as_strategy(generation_mode=mode)]
        once = SETTINGS
    for strategy in strategies:

        @given(case=strategy)
        @once
        def run(case: Any) -> None:
            check(case)

        run()


_operations: dict[str, Any] = {}
"""A worker process's operations by label, from its own copy of the schema."""


def _load_operations(url: str, token: str) -> None:
    for result in load_schema(url, token).get_all_operations():
        operation = result.ok()
        _operations[operation.label] = operation


def fuzz_operation(label: str) -> list[str]:
    """Examples, valid and invalid requests of one operation (in a worker): what failed."""
    operation = _operations[label]
    failures = []
    for mode in (None, GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        try:
            run_operation(operation, mode)
        except Unsatisfiable:
            continue  # nothing to make invalid (no parameters, no body)
        except (Exception, BaseExceptionGroup) as exc:
            what = mode.value if mode is not None else "examples"
            failures.append(f"{operation.label} ({what}): {exc}")
    return failures


def test_api_conforms_to_its_openapi_document(api_schema: Any, apiaryd: Apiaryd) -> None:
    """Every operation, valid and invalid requests; all failures reported together.

    (Driven by hand rather than by ``schemathesis.pytest``: its lazy fixture sets pytest's
    private ``Node._nodeid``, which pytest 9.2 no longer has.)"""
    labels = [result.ok().label for result in api_schema.get_all_operations()]
    assert len(labels) > 100
    workers = min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(
        workers,
        multiprocessing.get_context("spawn"),
        _load_operations,
        (apiaryd.url, apiaryd.token),
    ) as pool:
        failures = [f for found in pool.map(fuzz_operation, labels) for f in found]
    assert not failures, f"{len(failures)} failing operation(s):\n\n" + "\n\n".join(failures)


def test_the_document_is_where_the_server_says(apiaryd: Apiaryd, tmp_path: Path) -> None:
    import httpx

    r = httpx.get(f"{apiaryd.url}/openapi.json", timeout=10)
    assert r.status_code == 200 and r.json()["openapi"].startswith("3.1")
