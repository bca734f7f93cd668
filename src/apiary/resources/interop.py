"""What a resource says about speaking other platforms' protocols: a Hive's A2A exposure, an
AgentSpec's MCP servers (docs/interop.md).

Bounded like every input (DESIGN §9): lengths, counts, http(s) URLs only. An MCP server is
either ``url`` (Streamable HTTP) or ``command`` (stdio: the node starts it for the drone, as the
drone's user, in the drone's sandbox), never both.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from apiary.resources.base import ApiModel, DNSLabel, EnvName, PositiveNumber, Problems


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


MAX_ARG = 4096
"""Longest argument of a stdio server's ``command`` (characters)."""


class EnvSecretKey(ApiModel):
    """A key of a Secret in the drone's Cell (``optional``: a missing one leaves it unset)."""

    name: DNSLabel
    key: str = Field(min_length=1, max_length=253)
    optional: bool | None = None


class EnvSource(ApiModel):
    secret_key_ref: EnvSecretKey


class ServerEnv(ApiModel):
    """One variable of a stdio server's environment: a literal ``value`` or ``valueFrom`` a
    Secret, like a drone's ``runtime.env``."""

    name: EnvName
    value: str | None = Field(default=None, max_length=32768)
    value_from: EnvSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ServerEnv:
        if self.value is not None and self.value_from is not None:
            problems = Problems()
            problems.add(("valueFrom",), "may not be set together with value")
            problems.raise_if_any()
        return self


class McpServer(ApiModel):
    """An MCP server the keeper proxies for the AgentSpec's drones: ``url`` (Streamable HTTP)
    or ``command`` (stdio, started by the node as the drone's user)."""

    name: DNSLabel
    """Tools are ``<name>.<tool>`` to the agent."""
    url: str | None = Field(default=None, max_length=2048)
    command: list[str] | None = Field(default=None, min_length=1, max_length=64)
    """argv of a stdio server (no shell), run in the drone's sandbox; exactly one of ``url``
    and ``command``."""
    env: list[ServerEnv] | None = Field(default=None, max_length=64)
    """The stdio server's environment (nothing else of the drone's or the node's)."""
    working_dir: str | None = Field(default=None, min_length=1, max_length=MAX_ARG)
    """Where the stdio server runs (default: the drone's ``runtime.workingDir``, else the
    node's)."""
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
        if self.command is not None and self.url is not None:
            problems.add(("command",), "give url (Streamable HTTP) or command (stdio), not both")
        elif self.command is None and self.url is None:
            problems.add(("url",), "required: the server's Streamable HTTP endpoint, or a "
                                   "command that starts a stdio server")  # fmt: skip
        for i, arg in enumerate(self.command or []):
            if len(arg) > MAX_ARG:
                problems.add(("command", i), f"at most {MAX_ARG} characters")
            elif "\0" in arg:
                problems.add(("command", i), "may not hold a NUL character")
        if self.command and not self.command[0].strip():
            problems.add(("command", 0), "the program to run must not be empty")
        if self.command is None:
            for key, value in (("env", self.env), ("workingDir", self.working_dir)):
                if value is not None:
                    problems.add((key,), "only for a stdio server (one with a command)")
        elif self.headers or self.headers_from:
            key = "headers" if self.headers else "headersFrom"
            problems.add((key,), "only for a url server: a stdio server has no HTTP requests "
                                 "(give it env instead)")  # fmt: skip
        names = [e.name for e in self.env or []]
        for i, name in enumerate(names):
            if name in names[:i]:
                problems.add(("env", i, "name"), f"duplicate variable {name!r}")
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
