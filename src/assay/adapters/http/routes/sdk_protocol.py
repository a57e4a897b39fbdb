"""GrowthBook's SDK protocol in the route table: what the OpenAPI document says of
``/api/features``, ``/api/eval`` and ``/api/events`` (``{clientKey}``). They are ``raw``
routes: answered by ``assay.adapters.growthbook.routes``, not through a ``Call``
(docs/sdk.md)."""

from __future__ import annotations

from typing import Any

from assay.adapters.growthbook.protocol import EvalRequest, ExposureBatch
from assay.adapters.http._routing import Call, JsonBody, Route
from assay.engine._events import EventsRecorded


async def _served_by_the_front(call: Call) -> None:
    raise RuntimeError("the GrowthBook SDK routes are answered by routes.answer, not a Call")


TAG = "growthbook-sdk"
_KEY_NOTE = (
    " An unknown, revoked or malformed client key gets 404 `client_key_not_found`, the same "
    "answer whether or not it ever existed. CORS: every answer allows any origin, and "
    "`OPTIONS` answers the preflight."
)

ROUTES = (
    Route(
        method="GET",
        path="/api/features/{client_key}",
        endpoint=_served_by_the_front,
        operation_id="getSdkPayload",
        summary="GrowthBook SDK payload",
        description="What GrowthBook's SDKs download (`apiHost` + `clientKey`): the "
        "project's flags as a GrowthBook features payload (`features`, `savedGroups`, "
        "`dateUpdated`), encrypted as `encryptedFeatures`/`encryptedSavedGroups` when the "
        "connection encrypts. Flags the payload cannot express exactly are left out (the "
        "connection's remote-only flags, docs/sdk.md). A `remote` connection's payload "
        "has no features: its SDKs ask `/api/eval`. `ETag` with `If-None-Match` answers "
        "304." + _KEY_NOTE,
        tag=TAG,
        public=True,
        raw=True,
        extra_errors=(404,),
    ),
    Route(
        method="POST",
        path="/api/eval/{client_key}",
        endpoint=_served_by_the_front,
        operation_id="evalSdkPayload",
        summary="GrowthBook remote evaluation",
        description="Remote evaluation as GrowthBook's proxy answers it (SDKs with "
        "`remoteEval`): every flag of the project, remote-only ones included, decided by "
        "assay for the posted `attributes` (the subject is `attributes.id`), each feature "
        "reduced to its `defaultValue`; an experiment assignment adds a `force` rule whose "
        "`tracks` the SDK reports to its tracking callback. `forcedFeatures` are answered "
        "as given; `forcedVariations` and `url` are accepted and ignored." + _KEY_NOTE,
        tag=TAG,
        public=True,
        raw=True,
        body=JsonBody(
            EvalRequest,
            example={
                "attributes": {"id": "user-1", "country": "DE"},
                "forcedVariations": {},
                "forcedFeatures": [],
                "url": "",
            },
        ),
        response=dict[str, Any],
        extra_errors=(404,),
    ),
    Route(
        method="POST",
        path="/api/events/{client_key}",
        endpoint=_served_by_the_front,
        operation_id="recordSdkExposures",
        summary="Exposures from SDK tracking callbacks",
        description="The events API's batch, exposures only, for the connection's project; "
        "the same answer as `POST /api/v1/events`. Refused with 403 "
        "`exposures_not_allowed` unless the connection has `allow_exposures`." + _KEY_NOTE,
        tag=TAG,
        public=True,
        raw=True,
        body=JsonBody(
            ExposureBatch,
            example={
                "events": [
                    {
                        "type": "exposure",
                        "experiment": "checkout-button",
                        "subject": "user-1",
                        "variant": "green",
                        "event_id": "gb-user-1-checkout-button",
                    }
                ]
            },
        ),
        response=EventsRecorded,
        extra_errors=(403, 404),
    ),
)
