"""AgentSpec: how to run one agent program — command, interface, resources, scaling, limits.

An AgentSpec is a template: Hives name it in ``agentRef`` and the controllers start Drones from
it. ``spec.replicas`` (optional) additionally runs standalone drones owned by the AgentSpec
itself, which is what ``apiaryctl scale agentspec/NAME`` changes.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PlainValidator, model_validator

from apiary.resources.base import (
    ApiModel,
    DNSLabel,
    EnvName,
    Fraction,
    NonNegativeNumber,
    PositiveNumber,
    Problems,
    SecretKey,
)
from apiary.resources.guardrails import Guardrails
from apiary.resources.interop import McpServer, check_mcp_servers
from apiary.resources.llm import Llm
from apiary.resources.meta import ApiObject, Status
from apiary.resources.quantity import Bytes, Millicores
from apiary.resources.tiers import TierName

DEFAULT_HEALTH_PATH = "/healthz"
DEFAULT_MESSAGE_PATH = "/"
MIN_PROBE_SECONDS = 0.1
"""The shortest probe period or timeout: Kubernetes takes whole seconds, we also take fractions
(tests and fast agents), but not a busy loop."""


class SecretKeySelector(ApiModel):
    """One key of a Secret in the same Cell. Not resolved here: the Secret may come later."""

    name: DNSLabel
    key: SecretKey
    optional: bool | None = None
    """When true a missing Secret or key leaves the variable unset instead of failing the drone."""


class EnvVarSource(ApiModel):
    secret_key_ref: SecretKeySelector


class EnvVar(ApiModel):
    """One environment variable: a literal ``value`` or one taken ``valueFrom`` a Secret."""

    name: EnvName
    value: str | None = None
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            problems = Problems()
            problems.add(("valueFrom",), "may not be set together with value")
            problems.raise_if_any()
        return self


class Runtime(ApiModel):
    """The process: ``command`` (argv, no shell unless you ask for one), directory, environment."""

    command: list[str] = Field(min_length=1)
    args: list[str] | None = None
    """Appended to ``command``, as in Kubernetes."""
    working_dir: str | None = Field(default=None, min_length=1)
    env: list[EnvVar] | None = None

    @model_validator(mode="after")
    def _program(self) -> Runtime:
        if not self.command[0].strip():
            problems = Problems()
            problems.add(("command", 0), "the program to run must not be empty")
            problems.raise_if_any()
        return self


def _probe_seconds(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("must be a number of seconds")
    if value < MIN_PROBE_SECONDS:
        raise ValueError(f"must be at least {MIN_PROBE_SECONDS} (seconds; fractions allowed)")
    return value


ProbeSeconds = Annotated[float, PlainValidator(_probe_seconds, json_schema_input_type=int | float)]


class HttpGetAction(ApiModel):
    """``GET path`` on ``port`` of the agent (loopback): healthy when it answers 2xx in time."""

    path: str | None = None
    """Default: the interface's ``healthPath``."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Default: the agent's port (``interface.port``, or the one the node gave it as ``$PORT``)."""

    @model_validator(mode="after")
    def _absolute(self) -> HttpGetAction:
        if self.path is not None and not self.path.startswith("/"):
            problems = Problems()
            problems.add(("path",), f"{self.path!r} must start with '/'")
            problems.raise_if_any()
        return self


class Probe(ApiModel):
    """A periodic check of a running drone, with Kubernetes' field names and defaults
    (docs/waggle.md, "Probes"). ``httpGet`` for http agents (default: ``healthPath`` on the
    agent's port); a stdin agent's probe has none and checks that its process is alive with
    its stdout open."""

    http_get: HttpGetAction | None = None
    initial_delay_seconds: NonNegativeNumber = 0
    """Seconds after the drone started (http: first answered its health path) before the first
    probe."""
    period_seconds: ProbeSeconds = 10
    """Seconds between two probes."""
    timeout_seconds: ProbeSeconds = 1
    """A probe not answered within this many seconds failed."""
    success_threshold: int = Field(default=1, ge=1)
    """Consecutive successes after a failure that make the probe pass again (1 for liveness)."""
    failure_threshold: int = Field(default=3, ge=1)
    """Consecutive failures that make the probe fail: readiness, not ready; liveness, restart."""


class Interface(ApiModel):
    """How the keeper talks to the agent. ``stdin``: lines on stdin/stdout in ``format``
    (``waggle`` JSON or plain ``text``). ``http``: POST to ``messagePath`` on ``port``, probing
    ``healthPath``. ``concurrency`` is how many messages one drone may hold at once.
    ``readinessProbe``/``livenessProbe``: periodic checks of the running drone (an http agent
    without a readiness probe gets one on ``healthPath`` with the defaults, at the node)."""

    type: Literal["stdin", "http", "a2a"] = "stdin"
    format: Literal["waggle", "text"] = "waggle"
    url: str | None = None
    """``a2a`` only: the remote A2A agent's JSON-RPC endpoint; the node runs the bridge
    (:mod:`apiary.agent.a2a_bridge`) as the drone's process (docs/interop.md)."""
    port: int | None = Field(default=None, ge=1, le=65535)
    health_path: str | None = None
    message_path: str | None = None
    concurrency: int = Field(default=1, ge=1, le=10_000)
    readiness_probe: Probe | None = None
    """Failing: the drone is not Ready and takes no new messages until it passes again."""
    liveness_probe: Probe | None = None
    """Failing: the drone's process is restarted (a restart, reason ``LivenessProbeFailed``)."""

    @model_validator(mode="after")
    def _http_fields(self) -> Interface:
        problems = Problems()
        self._check_probes(problems)
        if self.type == "http":
            if self.port is None:
                problems.add(("port",), "field required when type is http")
            if self.health_path is None:
                self.health_path = DEFAULT_HEALTH_PATH
            if self.message_path is None:
                self.message_path = DEFAULT_MESSAGE_PATH
            for alias, path in (
                ("healthPath", self.health_path),
                ("messagePath", self.message_path),
            ):
                if not path.startswith("/"):
                    problems.add((alias,), f"{path!r} must start with '/'")
        else:
            for alias, value in (
                ("port", self.port),
                ("healthPath", self.health_path),
                ("messagePath", self.message_path),
            ):
                if value is not None:
                    problems.add((alias,), "only used with type: http")
        self._check_a2a(problems)
        problems.raise_if_any()
        return self

    def _check_a2a(self, problems: Problems) -> None:
        if self.type != "a2a":
            if self.url is not None:
                problems.add(("url",), "only used with type: a2a")
            return
        parts = urlsplit(self.url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.add(("url",), "required with type a2a: the A2A agent's http(s) endpoint")
        if self.format != "waggle":
            problems.add(("format",), "an a2a agent exchanges messages, not text lines")

    def _check_probes(self, problems: Problems) -> None:
        """An http agent's probe without ``httpGet`` GETs ``healthPath``; a stdin agent's may
        have none (it checks the process); liveness passes again after one success."""
        for alias, probe in (("readinessProbe", self.readiness_probe),
                             ("livenessProbe", self.liveness_probe)):  # fmt: skip
            if probe is None:
                continue
            if self.type == "http":
                probe.http_get = probe.http_get or HttpGetAction()
                probe.http_get.path = probe.http_get.path or self.health_path or DEFAULT_HEALTH_PATH
            if self.type != "http" and probe.http_get is not None:
                problems.add((alias, "httpGet"), "only used with type: http (a stdin agent's "
                             "probe checks that its process is alive)")  # fmt: skip
            if alias == "livenessProbe" and probe.success_threshold != 1:
                problems.add((alias, "successThreshold"), "must be 1 for a liveness probe")


class ResourceList(ApiModel):
    """``cpu`` in millicores and ``memory`` in bytes (see :mod:`apiary.resources.quantity`)."""

    cpu: Millicores | None = None
    memory: Bytes | None = None


class Resources(ApiModel):
    """``requests`` are reserved on a node; ``limits`` are enforced on the process.

    As in Kubernetes, a request left out while its limit is set defaults to the limit, and a
    request may not exceed its limit.
    """

    requests: ResourceList | None = None
    limits: ResourceList | None = None

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        if self.limits is None:
            return self
        if self.requests is None:
            self.requests = ResourceList()
        problems = Problems()
        for name in ("cpu", "memory"):
            limit = getattr(self.limits, name)
            request = getattr(self.requests, name)
            if limit is None:
                continue
            if request is None:
                setattr(self.requests, name, limit)
            elif request > limit:
                problems.add(
                    ("requests", name), f"{request} must not exceed limits.{name} ({limit})"
                )
        problems.raise_if_any()
        return self


class Scaling(ApiModel):
    """Autoscaling between ``minReplicas`` and ``maxReplicas``.

    The autoscaler (docs/autoscaling.md) scales a hive stage up at once, proportionally, when the
    busy share of capacity ((backlog + in flight) / (replicas * concurrency)) is above
    ``scaleUpThreshold`` or p50 latency exceeds ``targetLatencyMs``; it removes one drone below
    ``scaleDownThreshold``, at most once per ``cooldownSeconds`` after any change (scale-ups are
    never delayed).
    """

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(ge=1)
    target_latency_ms: PositiveNumber | None = None
    scale_up_threshold: Fraction = 0.8
    scale_down_threshold: Fraction = 0.2
    cooldown_seconds: NonNegativeNumber = 60

    @model_validator(mode="after")
    def _ordered(self) -> Scaling:
        problems = Problems()
        if self.min_replicas > self.max_replicas:
            problems.add(("minReplicas",), f"must not exceed maxReplicas ({self.max_replicas})")
        if self.scale_down_threshold >= self.scale_up_threshold:
            problems.add(
                ("scaleDownThreshold",),
                f"must be less than scaleUpThreshold ({self.scale_up_threshold})",
            )
        problems.raise_if_any()
        return self


class SecurityContext(ApiModel):
    """Who the drone's process runs as (Kubernetes' field names). Only a node running as root
    can change it; unset, such a node runs drones as ``nobody`` (docs/security.md)."""

    run_as_user: int | None = Field(default=None, ge=0, le=2**31 - 1)
    """uid; ``0`` is the explicit opt-out: the drone runs as root."""
    run_as_group: int | None = Field(default=None, ge=0, le=2**31 - 1)
    """gid; unset: the node's default group (root's for ``runAsUser: 0``)."""


WARM_POOL_REFUSED = (
    "not supported: warm pools are kept per Hive stage (Hive spec.poolMode and warmPoolSize); a "
    "started drone carries its hive and stage (environment, keeper token, guardrails), so "
    "drones of one AgentSpec in different hives are not interchangeable"
)


class AgentSpecSpec(ApiModel):
    runtime: Runtime | None = None
    """Required, except with ``interface.type: a2a`` (the node runs the A2A bridge; a runtime
    given there only lends its ``env``, e.g. ``APIARY_A2A_TOKEN``)."""
    interface: Interface = Field(default_factory=Interface)
    resources: Resources | None = None
    scaling: Scaling | None = None
    replicas: int | None = Field(default=None, ge=0)
    task_tier: TierName | None = None
    """How demanding the agent's tasks are: a class of model and cost. The Cell's (else the
    server's) tier map says what it means — the model and token cap of the drones' chat
    completions, their scheduling priority; the drones carry the result in
    ``spec.resolvedTier`` (:mod:`apiary.resources.tiers`)."""
    guardrails: Guardrails | None = None
    llm: Llm | None = None
    memory: Literal["none", "read", "readwrite"] | None = None
    """The drone's reach into its own cell's long-term memory through its keeper: unset or
    ``none``, none (a 403 naming ``spec.memory``); ``read``, search; ``readwrite``, also remember
    and forget. Another cell's memory is never reachable (docs/comb.md)."""
    security_context: SecurityContext | None = None
    mcp_servers: list[McpServer] | None = Field(default=None, max_length=32)
    """MCP servers its drones reach through their keeper, tools by ``allowTools``
    (:mod:`apiary.resources.interop`, docs/interop.md)."""
    warm_pool: Any = None
    """Not supported, and refused by name: warm pools are per Hive stage (the Hive's
    ``poolMode``/``warmPoolSize``). A started drone is its hive's and stage's for good — they
    are in its environment (``APIARY_HIVE``, ``APIARY_STAGE``), its keeper token and its merged
    guardrails — so drones of one AgentSpec in two hives are not interchangeable."""

    @model_validator(mode="after")
    def _no_shared_pool(self) -> AgentSpecSpec:
        if self.warm_pool is not None:
            problems = Problems()
            problems.add(("warmPool",), WARM_POOL_REFUSED)
            problems.raise_if_any()
        return self

    @model_validator(mode="after")
    def _runtime_unless_a2a(self) -> AgentSpecSpec:
        if self.runtime is None and self.interface.type != "a2a":
            problems = Problems()
            problems.add(("runtime",), "field required (unless interface.type is a2a)")
            problems.raise_if_any()
        return self

    @model_validator(mode="after")
    def _replicas_in_range(self) -> AgentSpecSpec:
        if self.replicas is not None and self.scaling is not None:
            low, high = self.scaling.min_replicas, self.scaling.max_replicas
            if not low <= self.replicas <= high:
                problems = Problems()
                problems.add(("replicas",), f"must be within scaling bounds {low}..{high}")
                problems.raise_if_any()
        return self

    @model_validator(mode="after")
    def _unique_mcp_servers(self) -> AgentSpecSpec:
        problems = Problems()
        check_mcp_servers(self.mcp_servers, problems)
        problems.raise_if_any()
        return self


class AgentSpecStatus(Status):
    replicas: int | None = Field(default=None, ge=0)
    ready_replicas: int | None = Field(default=None, ge=0)


class AgentSpec(ApiObject):
    status_model = AgentSpecStatus

    kind: Literal["AgentSpec"]
    spec: AgentSpecSpec
