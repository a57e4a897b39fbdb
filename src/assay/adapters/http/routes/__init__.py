"""The route table: every route the HTTP API serves, in the order the docs list them."""

from assay.adapters.http._routing import Route
from assay.adapters.http.routes import (
    audit,
    decisions,
    documents,
    keys,
    lifecycle,
    metrics,
    objects,
    probes,
    projects,
)

ROUTES: tuple[Route, ...] = (
    *projects.ROUTES,
    *objects.ROUTES,
    *lifecycle.ROUTES,
    *keys.ROUTES,
    *audit.ROUTES,
    *decisions.ROUTES,
    *metrics.ROUTES,
    *probes.ROUTES,
    *documents.ROUTES,
)

__all__ = ["ROUTES"]
