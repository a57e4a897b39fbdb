"""API keys: create (the secret is shown once), list and revoke."""

from __future__ import annotations

from assay.adapters.http._routing import CURSOR, LIMIT, NO_BODY, PROJECT, Call, JsonBody, Route
from assay.adapters.http._schemas import ApiKeyView, CreatedApiKey, KeyCreateRequest
from assay.engine import Page

TAG = "keys"


async def list_keys(call: Call) -> Page[ApiKeyView]:
    page = await call.service.list_keys(
        call.key, call.project, cursor=call.text("cursor"), limit=call.integer("limit")
    )
    return Page(items=[ApiKeyView.of(k) for k in page.items], next_cursor=page.next_cursor)


async def create_key(call: Call) -> CreatedApiKey:
    request: KeyCreateRequest = call.body
    key, secret = await call.service.create_key(
        call.key, role=request.role, project=request.project, name=request.name
    )
    view = ApiKeyView.of(key)
    return CreatedApiKey(**{f: getattr(view, f) for f in view.__struct_fields__}, secret=secret)


async def revoke_key(call: Call) -> None:
    await call.service.revoke_key(call.key, call.path["id"])


ROUTES = (
    Route(
        method="GET",
        path="/api/v1/keys",
        endpoint=list_keys,
        operation_id="listKeys",
        summary="List API keys",
        description="Every key for a key not scoped to a project, unless `project` narrows "
        "it; a project-scoped key sees its project's keys. Secrets are never listed.",
        tag=TAG,
        query=(PROJECT, CURSOR, LIMIT),
        response=Page[ApiKeyView],
    ),
    Route(
        method="POST",
        path="/api/v1/keys",
        endpoint=create_key,
        operation_id="createKey",
        summary="Create an API key",
        description="The response carries the secret; it is stored only as a digest and "
        "cannot be shown again. An SDK key must be scoped to a project.",
        tag=TAG,
        body=JsonBody(
            KeyCreateRequest,
            example={"role": "DEVELOPER", "project": "shop", "name": "checkout team"},
        ),
        status=201,
        response=CreatedApiKey,
    ),
    Route(
        method="DELETE",
        path="/api/v1/keys/{id}",
        endpoint=revoke_key,
        operation_id="revokeKey",
        summary="Revoke an API key",
        description="The key stops working at once. Revoking a revoked key does nothing.",
        tag=TAG,
        body=NO_BODY,
        status=204,
    ),
)
