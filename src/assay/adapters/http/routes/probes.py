"""Liveness and readiness, for load balancers and orchestrators. No key needed."""

from __future__ import annotations

import logging

import trio

from assay.adapters.http._errors import HttpError
from assay.adapters.http._routing import Call, Route
from assay.adapters.http._schemas import HealthStatus, ReadyStatus

log = logging.getLogger("assay.http")

# How long the store may take to answer a readiness probe before we call it unavailable;
# probes are retried by their callers, so failing fast beats hanging.
STORE_PROBE_SECONDS = 2.0
# A digest no key has (SHA-256 hex is 64 characters): the lookup only proves the store answers.
_PROBE_DIGEST = "readiness-probe"


async def health(call: Call) -> HealthStatus:
    return HealthStatus()


async def ready(call: Call) -> ReadyStatus:
    version = call.engine.snapshot.version
    if version <= 0:
        raise HttpError(503, "not_ready", "no configuration snapshot is published yet")
    with trio.move_on_after(STORE_PROBE_SECONDS) as probe:
        try:
            await call.engine.store.get_key_by_hash(_PROBE_DIGEST)
        except Exception as exc:
            log.warning("readiness probe: the store failed: %r", exc)
            raise HttpError(503, "store_unavailable", "the store does not answer") from exc
    if probe.cancelled_caught:
        raise HttpError(503, "store_unavailable", "the store does not answer in time")
    return ReadyStatus(snapshot_version=version)


ROUTES = (
    Route(
        method="GET",
        path="/health",
        endpoint=health,
        operation_id="health",
        summary="Liveness: the process serves requests",
        tag="operations",
        public=True,
        response=HealthStatus,
    ),
    Route(
        method="GET",
        path="/ready",
        endpoint=ready,
        operation_id="ready",
        summary="Readiness: a configuration snapshot is in force and the store answers",
        tag="operations",
        public=True,
        response=ReadyStatus,
        extra_errors=(503,),
    ),
)
