"""Builders for test objects: a valid object of each kind, to break one field at a time."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from apiary.resources import ValidationFailed, admit

SEEDS = Path(__file__).resolve().parents[2] / "examples" / "seed-manifests"


def seed(name: str) -> dict[str, Any]:
    """A seed manifest by file-name prefix (``"05"`` → the pipeline hive)."""
    (path,) = SEEDS.glob(f"{name}*.yaml")
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def obj(kind: str, spec: Any = None, **top: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "apiary.io/v1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "default"},
    }
    if spec is not None:
        body["spec"] = spec
    body.update(top)
    return body


def agentspec(**spec: Any) -> dict[str, Any]:
    return obj("AgentSpec", {"runtime": {"command": ["cat"]}, **spec})


def hive(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"pattern": "pipeline", "stages": [{"name": "a", "agentRef": "echo"}]}
    base.update(spec)
    return obj("Hive", {k: v for k, v in base.items() if v is not None})


def errors_of(body: Any, *, strict: bool = False) -> dict[str, str]:
    """Admission errors as {path: message}; fails the test when admission succeeds."""
    with pytest.raises(ValidationFailed) as caught:
        admit(copy.deepcopy(body), strict=strict)
    return dict(caught.value.details)
