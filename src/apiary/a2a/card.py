"""A Hive's A2A agent card, generated from the Hive and its stages' AgentSpecs.

``spec.a2a`` says whether the hive is exposed and may give its ``description`` and ``skills``;
without skills, each stage is one (its agent, its pattern, an ``approval`` note), described by
its AgentSpec's ``apiary.io/description`` annotation when it has one. The card names the bearer
scheme: an A2A client sends an Apiary token exactly as a REST client does, and the same roles
decide what it may do (``get`` a hive's card; ``create`` a task, ``get`` one, ``update`` to
cancel or answer an approval).
"""

from __future__ import annotations

from typing import Any

from apiary.a2a.wire import PROTOCOL_VERSION
from apiary.controllers.templates import hive_stages
from apiary.errors import NotFound

Obj = dict[str, Any]

DESCRIPTION_ANNOTATION = "apiary.io/description"
MODES = ["text/plain", "application/json"]
BEARER = "bearer"


def a2a_settings(hive: Obj) -> Obj:
    raw = (hive.get("spec") or {}).get("a2a")
    return raw if isinstance(raw, dict) else {}


def exposed(hive: Obj) -> bool:
    return a2a_settings(hive).get("expose") is True


def check_exposed(hive: Obj) -> None:
    """404 for a hive that is not exposed: to an A2A client it does not exist."""
    if not exposed(hive):
        meta = hive["metadata"]
        raise NotFound(f"hive {meta['name']!r} in cell {meta.get('namespace')!r} is not exposed "
                       "over A2A (spec.a2a.expose is not true)")  # fmt: skip


def endpoint(base_url: str, cell: str, hive: str) -> str:
    return f"{base_url.rstrip('/')}/a2a/cells/{cell}/hives/{hive}"


def card(hive: Obj, agents: dict[str, Obj], base_url: str) -> Obj:
    """The card (ProtoJSON of ``AgentCard``, A2A v1.0)."""
    meta, spec = hive["metadata"], hive.get("spec") or {}
    settings = a2a_settings(hive)
    name, cell = meta["name"], meta.get("namespace") or "default"
    stages = hive_stages(hive)[0]
    pattern = spec.get("pattern") or ("composed" if spec.get("patternSegments") else "pipeline")
    description = settings.get("description") or (
        f"Apiary hive {name!r} ({pattern}: {', '.join(s.name for s in stages)})"
    )
    skills = settings.get("skills") or [_stage_skill(s.name, s.agent_ref, s.config, agents)
                                        for s in stages]  # fmt: skip
    return {
        "name": name,
        "description": description,
        "version": str(meta.get("generation") or meta.get("resourceVersion") or "1"),
        "supportedInterfaces": [
            {
                "url": endpoint(base_url, cell, name),
                "protocolBinding": "JSONRPC",
                "protocolVersion": PROTOCOL_VERSION,
            }
        ],
        "provider": {"organization": "Apiary", "url": base_url.rstrip("/")},
        "capabilities": {"streaming": True, "pushNotifications": False},
        "securitySchemes": {
            BEARER: {
                "httpAuthSecurityScheme": {
                    "scheme": "Bearer",
                    "description": "an Apiary token; roles as for the REST API",
                }
            }
        },
        "securityRequirements": [{"schemes": {BEARER: {"list": []}}}],
        "defaultInputModes": MODES,
        "defaultOutputModes": MODES,
        "skills": [_skill(s, i) for i, s in enumerate(skills)],
    }


def _stage_skill(stage: str, agent: str, config: Obj, agents: dict[str, Obj]) -> Obj:
    spec = agents.get(agent) or {}
    annotations = (spec.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(DESCRIPTION_ANNOTATION) or f"stage {stage!r} runs agent {agent!r}"
    if config.get("approval") == "required":
        text += " (a human approves each dispatch: the task turns input-required)"
    return {"id": stage, "name": stage, "description": text, "tags": ["apiary", "stage"]}


def _skill(raw: Any, index: int) -> Obj:
    s = raw if isinstance(raw, dict) else {}
    ident = str(s.get("id") or s.get("name") or f"skill-{index + 1}")
    out: Obj = {"id": ident, "name": str(s.get("name") or ident),
                "description": str(s.get("description") or ident),
                "tags": [str(t) for t in s.get("tags") or []] or ["apiary"]}  # fmt: skip
    if s.get("examples"):
        out["examples"] = [str(e) for e in s["examples"]]
    return out
