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


def test_mcp_servers_are_http_urls_or_commands_with_unique_names() -> None:
    ok = admit(_agent([{"name": "calc", "url": "http://127.0.0.1:1/mcp", "allowTools": ["add"]}]))
    assert ok.warnings == []
    with pytest.raises(ValidationFailed) as bad:
        admit(_agent([{"name": "a", "command": ["srv"], "url": "http://x"},
                      {"name": "b", "url": "ftp://x"},
                      {"name": "c"},
                      {"name": "d", "url": "http://x", "timeoutSeconds": 9999}]))  # fmt: skip
    fields = _fields(bad.value)
    assert "spec.mcpServers[0].command" in fields and "spec.mcpServers[1].url" in fields
    assert "spec.mcpServers[2].url" in fields and "spec.mcpServers[3].timeoutSeconds" in fields
    with pytest.raises(ValidationFailed) as dup:
        admit(_agent([{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]))
    assert _fields(dup.value) == ["spec.mcpServers[1].name"]


def test_a_stdio_server_is_a_bounded_command_with_its_own_env() -> None:
    secret = {"secretKeyRef": {"name": "calc", "key": "token", "optional": True}}
    server = {"name": "calc", "command": ["python", "calc.py"], "allowTools": ["*"],
              "workingDir": "/srv", "timeoutSeconds": 5,
              "env": [{"name": "A", "value": "1"}, {"name": "T", "valueFrom": secret}]}  # fmt: skip
    assert admit(_agent([server])).warnings == []
    with pytest.raises(ValidationFailed) as bad:
        admit(_agent([
            {"name": "a", "command": []},
            {"name": "b", "command": ["x" * 4097]},
            {"name": "c", "command": ["x"] * 65},
            {"name": "d", "command": [" "]},
            {"name": "e", "url": "http://x", "env": [{"name": "A", "value": "1"}]},
            {"name": "f", "url": "http://x", "workingDir": "/srv"},
            {"name": "g", "command": ["x"], "headers": {"A": "b"}},
            {"name": "h", "command": ["x"], "env": [{"name": "A", "value": "1"},
                                                     {"name": "A", "value": "2"}]},
            {"name": "i", "command": ["x"], "env": [{"name": "1bad", "value": "1"}]},
            {"name": "j", "command": ["x"],
             "env": [{"name": "A", "value": "1", "valueFrom": secret}]},
            {"name": "k", "command": ["x"], "env": [{"name": f"V{n}"} for n in range(65)]},
            {"name": "l", "command": "python calc.py"},
        ]))  # fmt: skip
    fields = set(_fields(bad.value))
    assert {"spec.mcpServers[0].command", "spec.mcpServers[1].command[0]",
            "spec.mcpServers[2].command", "spec.mcpServers[3].command[0]",
            "spec.mcpServers[4].env", "spec.mcpServers[5].workingDir",
            "spec.mcpServers[6].headers", "spec.mcpServers[7].env[1].name",
            "spec.mcpServers[8].env[0].name", "spec.mcpServers[9].env[0].valueFrom",
            "spec.mcpServers[10].env", "spec.mcpServers[11].command"} <= fields, fields  # fmt: skip


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
