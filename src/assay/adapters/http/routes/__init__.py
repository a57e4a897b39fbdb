"""The route table: every route the HTTP API serves, in the order the docs list them."""

from assay.adapters.http._routing import Route
from assay.adapters.http.routes import (
    audit,
    decisions,
    documents,
    events,
    guardrails,
    keys,
    lifecycle,
    metrics,
    objects,
    planning,
    probes,
    projects,
    reports,
    sdk_connections,
    sdk_protocol,
    timeseries,
)

ROUTES: tuple[Route, ...] = (
    *projects.ROUTES,
    *objects.ROUTES,
    *lifecycle.ROUTES,
    *keys.ROUTES,
    *sdk_connections.ROUTES,
    *sdk_protocol.ROUTES,
    *audit.ROUTES,
    *decisions.ROUTES,
    *events.ROUTES,
    *reports.ROUTES,
    *timeseries.ROUTES,
    *planning.ROUTES,
    *guardrails.ROUTES,
    *metrics.ROUTES,
    *probes.ROUTES,
    *documents.ROUTES,
)

__all__ = ["ROUTES"]
