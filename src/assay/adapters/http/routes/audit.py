"""The audit log: who changed what, when, with the object before and after."""

from __future__ import annotations

from assay.adapters.http._routing import CURSOR, LIMIT, PROJECT, Call, QueryParam, Route
from assay.engine import AuditEntry, Page


async def list_audit(call: Call) -> Page[AuditEntry]:
    return await call.service.list_audit(
        call.key,
        call.project,
        resource_kind=call.text("resource_kind"),
        resource_key=call.text("resource_key"),
        cursor=call.text("cursor"),
        limit=call.integer("limit"),
    )


ROUTES = (
    Route(
        method="GET",
        path="/api/v1/audit",
        endpoint=list_audit,
        operation_id="listAudit",
        summary="Read the audit log",
        description="A project's entries, newest first.",
        tag="audit",
        query=(
            PROJECT,
            QueryParam(
                name="resource_kind",
                description="Only entries about this kind of object.",
                choices=("project", "flag", "experiment", "layer", "metric", "key"),
            ),
            QueryParam(
                name="resource_key",
                description="Only entries about the object with this key (a key's id).",
            ),
            CURSOR,
            LIMIT,
        ),
        response=Page[AuditEntry],
    ),
)
