"""What a resource says about speaking other platforms' protocols: a Hive's A2A exposure, an
AgentSpec's MCP servers (docs/interop.md).

Bounded like every input (DESIGN §9): lengths, counts, http(s) URLs only. A ``command`` MCP
server is refused here, naming why: the keeper would run it as the node's user, not the drone's.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from apiary.resources.base import ApiModel, DNSLabel, PositiveNumber, Problems


class A2ASkill(ApiModel):
    """One skill on the agent card."""

    id: str = Field(min_length=1, max_length=128)
    name: str | None = Field(default=None, max_length=128)
    description: str | None = Field(default=None, max_length=1024)
    tags: list[str] | None = Field(default=None, max_length=32)
    examples: list[str] | None = Field(default=None, max_length=32)


class A2ASettings(ApiModel):
    """``Hive.spec.a2a``: whether the hive is an A2A agent (and an MCP tool) and its card."""

    expose: bool = False
    description: str | None = Field(default=None, max_length=4096)
    """The card's description (default: the hive's pattern and stages)."""
    skills: list[A2ASkill] | None = Field(default=None, max_length=64)
    """The card's skills (default: one per stage)."""


class SecretKey(ApiModel):
    """One key of a Secret in the drone's Cell."""

    name: DNSLabel
    key: str = Field(min_length=1, max_length=253)


class HeaderFrom(ApiModel):
    """A request header whose value comes from a Secret (``prefix`` + the key's value)."""

    name: str = Field(min_length=1, max_length=128)
    prefix: str | None = Field(default=None, max_length=64)
    """E.g. ``"Bearer "``; unset: the value alone."""
    secret_key_ref: SecretKey


class McpServer(ApiModel):
    """An MCP server the keeper proxies for the AgentSpec's drones (Streamable HTTP)."""

    name: DNSLabel
    """Tools are ``<name>.<tool>`` to the agent."""
    url: str | None = None
    command: list[str] | None = None
    """Refused: see the module docstring."""
    allow_tools: list[str] = Field(default_factory=list, max_length=256)
    """Tools the agent may list and call; ``["*"]`` all; empty none."""
    timeout_seconds: PositiveNumber | None = None
    """Longest one call may take (default 30 s); then the agent gets an error result."""
    headers: dict[str, str] | None = Field(default=None, max_length=32)
    """Sent to the server with every request."""
    headers_from: list[HeaderFrom] | None = Field(default=None, max_length=16)
    """Headers whose values are Secrets' (credentials): read by the node, never by the agent."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} must be an http:// or https:// URL with a host")
        return url

    @model_validator(mode="after")
    def _one_way(self) -> McpServer:
        problems = Problems()
        if self.command is not None:
            problems.add(("command",), "stdio MCP servers are not supported: the keeper would "
                                       "run them as the node's user; serve it over Streamable "
                                       "HTTP and give its url")  # fmt: skip
        elif self.url is None:
            problems.add(("url",), "required: the server's Streamable HTTP endpoint")
        if self.timeout_seconds is not None and self.timeout_seconds > 3600:
            problems.add(("timeoutSeconds",), "at most 3600")
        problems.raise_if_any()
        return self


def check_mcp_servers(servers: list[McpServer] | None, problems: Problems) -> None:
    """Names are unique (they prefix the tools)."""
    seen: set[str] = set()
    for i, server in enumerate(servers or []):
        if server.name in seen:
            problems.add(("mcpServers", i, "name"), f"duplicate MCP server name {server.name!r}")
        seen.add(server.name)
