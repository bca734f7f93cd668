"""Admission: validate an object of any kind, fill defaults, report unknown fields.

:func:`admit` is what the API server runs on every create and update (and ``apply --dry-run``);
:func:`validate_status` is the ``/status`` subresource's check; :func:`parse` gives controllers
the typed model of a stored object. All of them raise :class:`ValidationFailed` listing *every*
problem as ``(field path, message)`` — never another exception, whatever the input. ``admit``
also enforces the admission limits (:mod:`apiary.resources.limits`): the server's defaults, or
those a Cell's quota lowered, which the caller passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from apiary.resources.depth import MAX_DEPTH, too_deep
from apiary.resources.kinds import MODELS
from apiary.resources.limits import DEFAULT_LIMITS, AdmissionLimits, check, precheck
from apiary.resources.messages import render_errors
from apiary.resources.meta import ApiObject, ObjectMeta
from apiary.resources.paths import render_path
from apiary.resources.registry import API_VERSION, lookup_kind
from apiary.resources.unknown import find_unknown
from apiary.resources.wire import to_wire


class ValidationFailed(Exception):
    """An object failed validation; ``details`` is a list of (field path, message)."""

    def __init__(self, details: list[tuple[str, str]]) -> None:
        self.details = details
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in details))


@dataclass
class Admission:
    object: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _envelope_errors(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems with apiVersion, kind and metadata, for an object whose kind is unknown."""
    errors: list[tuple[str, str]] = []
    if obj.get("apiVersion") != API_VERSION:
        errors.append(("apiVersion", f"must be {API_VERSION!r}"))
    kind = obj.get("kind")
    if kind is None:
        errors.append(("kind", "field required"))
    else:
        info = lookup_kind(kind) if isinstance(kind, str) else None
        hint = f" (did you mean {info.kind!r}?)" if info is not None else ""
        errors.append(("kind", f"unknown kind {kind!r}{hint}; one of {', '.join(MODELS)}"))
    try:
        ObjectMeta.model_validate(obj.get("metadata"))
    except ValidationError as exc:
        errors.extend(render_errors(exc, ("metadata",)))
    return errors


def admit(obj: Any, *, strict: bool = False, limits: AdmissionLimits = DEFAULT_LIMITS) -> Admission:
    """Validate and default ``obj``; unknown fields are warnings (errors when ``strict``).

    The returned object is the validated one with defaults filled in and quantities normalized
    (see :mod:`apiary.resources.quantity`); unknown fields are kept. ``status`` only has to be a
    mapping here: controllers own it (see :func:`validate_status`). An object over ``limits``
    fails like any invalid one, each problem naming the field and the limit.
    """
    if not isinstance(obj, dict):
        raise ValidationFailed(
            [("", "an object must be a mapping with apiVersion, kind, metadata")]
        )
    _check_depth(obj, limit=limits.max_depth)
    early = precheck(obj, limits)
    if early:
        raise ValidationFailed(early)
    try:
        admission = _admit(obj, strict)
    except RecursionError:  # pragma: no cover - _check_depth keeps nesting well below the limit
        raise ValidationFailed([("", "the object is nested too deeply")]) from None
    late = check(admission.object, limits)
    if late:
        raise ValidationFailed(late)
    return admission


def _check_depth(value: Any, prefix: tuple[str, ...] = (), limit: int = MAX_DEPTH) -> None:
    loc = too_deep(value, limit)
    if loc is not None:
        path = render_path((*prefix, *loc[:limit]))
        raise ValidationFailed([(path, f"nested more than {limit} levels deep")])


def _admit(obj: dict[str, Any], strict: bool) -> Admission:
    kind = obj.get("kind")
    model = MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ValidationFailed(_envelope_errors(obj))
    errors: list[tuple[str, str]] = []
    warnings: list[str] = []
    instance: ApiObject | None = None
    try:
        instance = model.model_validate(obj)
    except ValidationError as exc:
        errors.extend(render_errors(exc))
    for loc in find_unknown(obj, model):
        path = render_path(loc)
        if strict:
            errors.append((path, "unknown field"))
        else:
            warnings.append(f'unknown field "{path}"')
    info = lookup_kind(model.__name__)
    cluster_scoped = info is not None and not info.namespaced
    if instance is not None and cluster_scoped and instance.metadata.namespace:
        message = f"{model.__name__} is cluster-scoped and has no namespace"
        if strict:
            errors.append(("metadata.namespace", message))
        else:
            warnings.append(f"metadata.namespace ignored: {message}")
            instance.metadata.namespace = None
    if errors or instance is None:
        raise ValidationFailed(errors)
    return Admission(to_wire(instance), warnings)


def _model_for(kind: str) -> type[ApiObject]:
    info = lookup_kind(kind) if isinstance(kind, str) else None
    if info is None:
        raise ValidationFailed([("kind", f"unknown kind {kind!r}")])
    return MODELS[info.kind]


def validate_status(kind: str, status: Any) -> dict[str, Any]:
    """Check a status written through the ``/status`` subresource and return it in wire form.

    Known fields are type-checked (``status.restartCount: must be an integer``); fields the
    model does not name are kept without complaint, since controllers may record more.
    """
    model = _model_for(kind)
    if model.status_model is None:
        raise ValidationFailed([("status", f"a {model.__name__} has no status")])
    if not isinstance(status, dict):
        raise ValidationFailed([("status", "must be a mapping")])
    _check_depth(status, ("status",))
    try:
        return dict(to_wire(model.status_model.model_validate(status)))
    except ValidationError as exc:
        raise ValidationFailed(render_errors(exc, ("status",))) from None


def parse(obj: Any) -> ApiObject:
    """The typed model of an object (normally one already admitted), for controllers that want
    attributes and defaults instead of dict lookups."""
    if not isinstance(obj, dict):
        raise ValidationFailed([("", "an object must be a mapping")])
    _check_depth(obj)
    model = _model_for(obj.get("kind"))  # type: ignore[arg-type]
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise ValidationFailed(render_errors(exc)) from None
