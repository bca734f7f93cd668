"""A drone's MCP servers: its Cell's, each replaced by the AgentSpec's entry of the same name."""

from __future__ import annotations

from apiary.controllers.templates import drone_template, mcp_servers


def test_the_agentspecs_entry_replaces_the_cells_of_the_same_name() -> None:
    cell = {"spec": {"mcpServers": [{"name": "calc", "url": "http://c/mcp", "allowTools": ["*"]},
                                    {"name": "docs", "url": "http://d/mcp"}]}}  # fmt: skip
    spec = {"mcpServers": [{"name": "calc", "url": "http://a/mcp", "allowTools": ["add"]},
                           {"name": "web", "url": "http://w/mcp"}]}  # fmt: skip
    assert [(s["name"], s["url"]) for s in mcp_servers(cell, spec)] == [
        ("docs", "http://d/mcp"),
        ("calc", "http://a/mcp"),
        ("web", "http://w/mcp"),
    ]
    assert mcp_servers(None, {}) == []


def test_a_drone_carries_them_and_one_without_any_is_unchanged() -> None:
    agent = {"metadata": {"name": "a"}, "spec": {"runtime": {"command": ["cat"]}}}
    cell = {"spec": {"mcpServers": [{"name": "calc", "url": "http://c/mcp"}]}}
    assert drone_template(agent, cell=cell)["mcpServers"] == [
        {"name": "calc", "url": "http://c/mcp"}
    ]
    assert "mcpServers" not in drone_template(agent, cell={"spec": {}})
