"""SDK connections: the public client keys through which GrowthBook's SDKs read a
project's payload (docs/sdk.md). Managed by ADMIN and DEVELOPER keys, read by every role
that reads configuration."""

# No ``from __future__ import annotations``: msgspec reads these annotations at runtime.

import msgspec

from assay.adapters.growthbook import REMOTE_ONLY_REASONS, sdk_payload
from assay.adapters.http._routing import (
    CURSOR,
    LIMIT,
    NO_BODY,
    PROJECT,
    Call,
    JsonBody,
    PatchBody,
    Route,
)
from assay.engine import Page, SdkConnection, SdkConnectionSpec

TAG = "sdk-connections"
BASE = "/api/v1/sdk-connections"
ONE = f"{BASE}/{{id}}"


async def list_connections(call: Call) -> Page[SdkConnection]:
    return await call.service.list_connections(
        call.key, call.project, cursor=call.text("cursor"), limit=call.integer("limit")
    )


async def create_connection(call: Call) -> SdkConnection:
    return await call.service.create_connection(call.key, call.project, call.body)


async def get_connection(call: Call) -> SdkConnection:
    return await call.service.get_connection(call.key, call.project, call.path["id"])


async def update_connection(call: Call) -> SdkConnection:
    return await call.service.update_connection(
        call.key,
        call.project,
        call.path["id"],
        call.body,
        expected_revision=call.expected_revision,
    )


async def revoke_connection(call: Call) -> None:
    await call.service.revoke_connection(call.key, call.project, call.path["id"])


class RemoteOnly(msgspec.Struct, frozen=True, kw_only=True):
    """The flags a connection's payload leaves out, answered by remote evaluation."""

    flags: dict[str, str]
    """Flag key -> reason code."""
    reasons: dict[str, str]
    """Every reason code there is, and what it means."""
    snapshot_version: int


async def remote_only(call: Call) -> RemoteOnly:
    connection = await call.service.get_connection(call.key, call.project, call.path["id"])
    snapshot = call.engine.snapshot
    project = snapshot.projects.get(connection.project_id)
    flags = {} if project is None else sdk_payload(call.engine, project.key).remote_only
    return RemoteOnly(
        flags=dict(flags), reasons=REMOTE_ONLY_REASONS, snapshot_version=snapshot.version
    )


ROUTES = (
    Route(
        method="GET",
        path=BASE,
        endpoint=list_connections,
        operation_id="listSdkConnections",
        summary="List SDK connections",
        description="A project's connections for GrowthBook SDKs, revoked ones included, "
        "ordered by id.",
        tag=TAG,
        query=(PROJECT, CURSOR, LIMIT),
        response=Page[SdkConnection],
    ),
    Route(
        method="POST",
        path=BASE,
        endpoint=create_connection,
        operation_id="createSdkConnection",
        summary="Create an SDK connection",
        description="Creates a public client key (`sdk-...`) for GrowthBook's SDKs: it reads "
        "this project's payload at `/api/features/{clientKey}` and, with `allow_exposures`, "
        "sends exposures. With `encrypt` the payload is encrypted and the connection carries "
        "the `decryption_key` to give the SDK. `evaluation: remote` serves evaluated flags "
        "at `/api/eval/{clientKey}` instead (docs/sdk.md).",
        tag=TAG,
        query=(PROJECT,),
        body=JsonBody(
            SdkConnectionSpec,
            example={"name": "web", "encrypt": True, "allow_exposures": True},
        ),
        status=201,
        response=SdkConnection,
    ),
    Route(
        method="GET",
        path=ONE,
        endpoint=get_connection,
        operation_id="getSdkConnection",
        summary="Get an SDK connection",
        tag=TAG,
        query=(PROJECT,),
        response=SdkConnection,
    ),
    Route(
        method="GET",
        path=f"{ONE}/remote-only",
        endpoint=remote_only,
        operation_id="getSdkConnectionRemoteOnly",
        summary="Flags an SDK connection's payload leaves out",
        description="The flags GrowthBook's payload format cannot express exactly, by key, "
        "with their reason codes: they are never sent as if they were exact, and "
        "`POST /api/eval/{clientKey}` answers them (docs/sdk.md).",
        tag=TAG,
        query=(PROJECT,),
        response=RemoteOnly,
    ),
    Route(
        method="PATCH",
        path=ONE,
        endpoint=update_connection,
        operation_id="updateSdkConnection",
        summary="Change an SDK connection",
        description="The body's fields replace the current ones (a JSON merge patch). The "
        "client key never changes; turning `encrypt` on makes a new decryption key, turning "
        "it off drops it. A revoked connection cannot change (409 `connection_revoked`). "
        "Send `If-Match: <revision>` to refuse the change if someone changed it first.",
        tag=TAG,
        query=(PROJECT,),
        body=PatchBody(SdkConnectionSpec, example={"name": "web shop"}),
        if_match=True,
        response=SdkConnection,
    ),
    Route(
        method="DELETE",
        path=ONE,
        endpoint=revoke_connection,
        operation_id="revokeSdkConnection",
        summary="Revoke an SDK connection",
        description="The client key stops working at once (within a second on every "
        "process): its routes answer 404 `client_key_not_found`, as for a key that never "
        "existed. Revoking a revoked connection does nothing.",
        tag=TAG,
        query=(PROJECT,),
        body=NO_BODY,
        status=204,
    ),
)
