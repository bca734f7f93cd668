"""The resource of Apiary's spans: ``service.instance.id`` tells processes of one service apart
(two apiaryd replicas both say ``service.name=apiaryd``), unless the operator names it."""

from __future__ import annotations

import os
import socket

import pytest

from apiary.telemetry import tracing


def _resource(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # the SDK reads OTEL_RESOURCE_ATTRIBUTES from os.environ
    provider = tracing._provider("apiaryd", {"OTEL_TRACES_EXPORTER": "none", **env}, None)
    try:
        return dict(provider.resource.attributes)
    finally:
        provider.shutdown()


def test_each_process_is_its_own_service_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    attrs = _resource({}, monkeypatch)
    assert attrs["service.name"] == "apiaryd"
    assert attrs["service.instance.id"] == f"{socket.gethostname()}:{os.getpid()}"


def test_the_environment_names_the_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=replica-a,deployment.environment=t"}
    attrs = _resource(env, monkeypatch)
    assert attrs["service.instance.id"] == "replica-a"
    assert attrs["deployment.environment"] == "t"
