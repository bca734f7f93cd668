"""The HTTP API: generic Kubernetes-style routes over the kinds registry.

Also home, for now, of the control plane's first controllers (reference resolution) and the
:class:`EventRecorder` other controllers use.
"""

from __future__ import annotations

from apiary.api.app import api_state, create_app
from apiary.api.auth import Authenticator, Authorizer, Principal
from apiary.api.cascade import cascade_delete
from apiary.api.events import EventRecorder
from apiary.api.refs import ReferenceResolver
from apiary.api.state import ApiConfig, ApiState

__all__ = [
    "ApiConfig",
    "ApiState",
    "Authenticator",
    "Authorizer",
    "EventRecorder",
    "Principal",
    "ReferenceResolver",
    "api_state",
    "cascade_delete",
    "create_app",
]
