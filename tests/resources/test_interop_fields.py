"""``Hive.spec.a2a`` and ``AgentSpec.spec.mcpServers`` are admitted, bounded and checked."""

from __future__ import annotations

from typing import Any

import pytest

from apiary.resources import ValidationFailed, admit

Obj = dict[str, Any]


def _hive(a2a: Any) -> Obj:
    return {"apiVersion": "apiary.io/v1", "kind": "Hive",
            "metadata": {"name": "h", "namespace": "c"},
            "spec": {"pattern": "pipeline", "stages": [{"name": "s", "agentRef": "a"}],
                     "a2a": a2a}}  # fmt: skip


def _agent(servers: Any) -> Obj:
    return {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
            "metadata": {"name": "a", "namespace": "c"},
            "spec": {"runtime": {"command": ["cat"]}, "mcpServers": servers}}  # fmt: skip


def _fields(exc: ValidationFailed) -> list[str]:
    return [field for field, _ in exc.details]


def test_a_hive_says_whether_it_is_an_a2a_agent() -> None:
    skills = [{"id": "write", "tags": ["x"], "examples": ["e"]}]
    admitted = admit(_hive({"expose": True, "description": "d", "skills": skills}))
    assert admitted.warnings == []
    with pytest.raises(ValidationFailed) as bad:
        admit(_hive({"expose": "yes", "skills": [{"name": "no id"}]}))
    assert {"spec.a2a.expose", "spec.a2a.skills[0].id"} <= set(_fields(bad.value))


def test_mcp_servers_are_http_urls_with_unique_names_and_no_commands() -> None:
    ok = admit(_agent([{"name": "calc", "url": "http://127.0.0.1:1/mcp", "allowTools": ["add"]}]))
    assert ok.warnings == []
    with pytest.raises(ValidationFailed) as bad:
        admit(_agent([{"name": "a", "command": ["srv"]}, {"name": "b", "url": "ftp://x"},
                      {"name": "c"},
                      {"name": "d", "url": "http://x", "timeoutSeconds": 9999}]))  # fmt: skip
    fields = _fields(bad.value)
    assert "spec.mcpServers[0].command" in fields and "spec.mcpServers[1].url" in fields
    assert "spec.mcpServers[2].url" in fields and "spec.mcpServers[3].timeoutSeconds" in fields
    with pytest.raises(ValidationFailed) as dup:
        admit(_agent([{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]))
    assert _fields(dup.value) == ["spec.mcpServers[1].name"]


def test_an_a2a_interface_needs_a_url_and_no_runtime() -> None:
    remote = {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
              "metadata": {"name": "r", "namespace": "c"},
              "spec": {"interface": {"type": "a2a", "url": "https://a.example/a2a"}}}  # fmt: skip
    assert admit(remote).warnings == []
    with pytest.raises(ValidationFailed) as bad:
        admit({**remote, "spec": {"interface": {"type": "a2a", "format": "text"}}})
    assert set(_fields(bad.value)) == {"spec.interface.url", "spec.interface.format"}
    with pytest.raises(ValidationFailed) as bad:
        admit({**remote, "spec": {"interface": {"type": "stdin", "url": "http://x"}}})
    assert _fields(bad.value) == ["spec.interface.url"]
    with pytest.raises(ValidationFailed) as bad:
        admit({**remote, "spec": {"interface": {"type": "stdin"}}})
    assert _fields(bad.value) == ["spec.runtime"]


def test_a_cell_lists_mcp_servers_for_all_its_drones() -> None:
    cell = {"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": "c"},
            "spec": {"mcpServers": [{"name": "calc", "url": "http://x/mcp"}]}}  # fmt: skip
    assert admit(cell).warnings == []
    twice = [{"name": "calc", "url": "http://x/mcp"}, {"name": "calc", "url": "http://y/mcp"}]
    with pytest.raises(ValidationFailed) as dup:
        admit({**cell, "spec": {"mcpServers": twice}})
    assert _fields(dup.value) == ["spec.mcpServers[1].name"]
