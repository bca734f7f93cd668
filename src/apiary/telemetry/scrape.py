"""``GET /metrics`` as apiaryd serves it: a scrape needs ``get`` on ``Metrics``.

The ``metrics-reader`` role grants exactly that (docs/observability.md), so a Prometheus server
holds a token that can read nothing else; cluster-admins may scrape too, cell roles and nodes may
not (403). A scraper asking for ``application/openmetrics-text`` (Prometheus does) gets that
format, with the exemplars (trace ids); others get the classic text format. Before rendering,
the cluster-state snapshot is refreshed (at most every few seconds,
:class:`~apiary.telemetry.cluster.ClusterSettings`).

:func:`install_metrics` puts this route in front of the API's plain ``/metrics`` route (the
first matching route answers), so the app module needs no change to get it.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from prometheus_client import CollectorRegistry
from starlette.responses import Response

from apiary.api import api_state
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.security.roles import METRICS
from apiary.telemetry.cluster import ClusterCollector

PATH = "/metrics"


def install_metrics(app: FastAPI, cluster: ClusterCollector | None = None) -> None:
    """Serve ``/metrics`` with its authorization and, given one, the cluster collector."""
    state = api_state(app)
    if cluster is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(cluster)
        state.metrics.attach(registry)
    router = APIRouter(tags=["system"])

    @router.get(PATH, summary="Prometheus metrics (role metrics-reader)")
    async def metrics(request: Request) -> Response:
        state.authorizer.authorize(request.scope[PRINCIPAL_KEY], "get", METRICS, None)
        if cluster is not None:
            await cluster.refresh()
        body, content_type = state.metrics.negotiate(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    before = len(app.router.routes)
    app.include_router(router)
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = added
