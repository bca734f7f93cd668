"""``AgentSpec.spec.interface``, read defensively: the keeper may be handed raw spec dicts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apiary.errors import FieldDetail, Invalid

DEFAULT_HEALTH_PATH = "/healthz"
DEFAULT_MESSAGE_PATH = "/message"


@dataclass(frozen=True, slots=True)
class InterfaceConfig:
    """How the keeper talks to one agent (DESIGN §5)."""

    type: str = "stdin"
    format: str = "waggle"
    port: int | None = None
    health_path: str = DEFAULT_HEALTH_PATH
    message_path: str = DEFAULT_MESSAGE_PATH
    concurrency: int = 1

    @classmethod
    def from_spec(
        cls, spec: Mapping[str, Any] | None, field: str = "spec.interface"
    ) -> InterfaceConfig:
        """Validate the manifest form; every problem is reported with its field path."""
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping):
            raise Invalid(f"{field} must be a mapping", [FieldDetail(field, "must be a mapping")])
        errors: list[FieldDetail] = []
        kind = spec.get("type", "stdin")
        if kind not in ("stdin", "http"):
            errors.append(FieldDetail(f"{field}.type", f"must be stdin or http, not {kind!r}"))
        fmt = spec.get("format", "waggle")
        if fmt not in ("waggle", "text"):
            errors.append(FieldDetail(f"{field}.format", f"must be waggle or text, not {fmt!r}"))
        elif fmt == "text" and kind == "http":
            errors.append(FieldDetail(f"{field}.format", "text is only for stdin agents"))
        port = spec.get("port")
        if port is not None and (type(port) is not int or not 0 <= port <= 65535):
            errors.append(FieldDetail(f"{field}.port", f"must be a port number, not {port!r}"))
        paths = {}
        for key, default in (
            ("healthPath", DEFAULT_HEALTH_PATH),
            ("messagePath", DEFAULT_MESSAGE_PATH),
        ):
            value = spec.get(key, default)
            if not isinstance(value, str) or not value.startswith("/"):
                errors.append(
                    FieldDetail(f"{field}.{key}", f"must be a path starting with /, not {value!r}")
                )
            paths[key] = value
        conc = spec.get("concurrency", 1)
        if type(conc) is not int or conc < 1:
            errors.append(
                FieldDetail(f"{field}.concurrency", f"must be an integer >= 1, not {conc!r}")
            )
        if errors:
            raise Invalid(f"invalid {field}", errors)
        return cls(
            type=kind,
            format=fmt,
            port=port or None,
            health_path=paths["healthPath"],
            message_path=paths["messagePath"],
            concurrency=conc,
        )
