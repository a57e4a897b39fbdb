"""Exposures and conversions over HTTP, and what an experiment has received.

A body that does not decode (malformed JSON, a wrong type, an unknown field) is refused
whole and records nothing. A body that decodes is checked event by event: invalid events
are listed in ``rejected`` by index and the others are recorded. Every answer comes after
the batch is committed.
"""

# No ``from __future__ import annotations``: msgspec reads these annotations at runtime.

from typing import Annotated

import msgspec

from assay.adapters.http._routing import PROJECT, Call, JsonBody, Route
from assay.engine._events import (
    MAX_BATCH_EVENTS,
    REJECTION_CODES,
    Conversion,
    Event,
    EventId,
    EventsRecorded,
    Exposure,
    IngestionSummary,
    Subject,
    Timestamp,
)

_BATCH = f"Up to {MAX_BATCH_EVENTS:,} events; more is refused with 422 `batch_too_large`."
_ANSWER = (
    "Answered once the batch is committed: `received` = `recorded` + `deduplicated` + "
    "`pending` + the number rejected. Rejection codes: "
    + ", ".join(f"`{code}`" for code in REJECTION_CODES)
    + ". Send `event_id`s and a retried batch changes nothing."
)
# The limit is checked by the engine (422 ``batch_too_large``), not by the decoder, so it
# is only documented here: a decoder failure would be a plain ``invalid_body``.
_BATCH_META = msgspec.Meta(description=_BATCH, extra_json_schema={"maxItems": MAX_BATCH_EVENTS})


class EventsBatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Exposures and conversions of any experiments of the project, each naming its
    experiment and its ``type``."""

    events: Annotated[list[Event], _BATCH_META]


class ExperimentExposure(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False
):
    """An exposure to the experiment named in the path."""

    subject: Subject
    variant: Annotated[str, msgspec.Meta(description="Variant key.")]
    timestamp: Timestamp = None
    event_id: EventId = None


class ExperimentConversion(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False
):
    """A conversion in the experiment named in the path."""

    metric: Annotated[str, msgspec.Meta(description="Metric key.")]
    subject: Subject
    value: Annotated[float, msgspec.Meta(description="A finite number; 1 by default.")] = 1.0
    timestamp: Timestamp = None
    idempotency_key: Annotated[
        str | None, msgspec.Meta(description="Unique per experiment: a repeat is a duplicate.")
    ] = None
    event_id: EventId = None


class ExposuresBatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    events: Annotated[list[ExperimentExposure], _BATCH_META]


class ConversionsBatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    events: Annotated[list[ExperimentConversion], _BATCH_META]


async def record_events(call: Call) -> EventsRecorded:
    body: EventsBatch = call.body
    return await call.engine.record_events(call.project, body.events, principal=call.key)


async def record_exposures(call: Call) -> EventsRecorded:
    body: ExposuresBatch = call.body
    experiment = call.path["key"]
    events = [
        Exposure(
            experiment=experiment,
            subject=e.subject,
            variant=e.variant,
            timestamp=e.timestamp,
            event_id=e.event_id,
        )
        for e in body.events
    ]
    return await call.engine.record_events(call.project, events, principal=call.key)


async def record_conversions(call: Call) -> EventsRecorded:
    body: ConversionsBatch = call.body
    experiment = call.path["key"]
    events = [
        Conversion(
            experiment=experiment,
            metric=e.metric,
            subject=e.subject,
            value=e.value,
            timestamp=e.timestamp,
            idempotency_key=e.idempotency_key,
            event_id=e.event_id,
        )
        for e in body.events
    ]
    return await call.engine.record_events(call.project, events, principal=call.key)


async def ingestion_summary(call: Call) -> IngestionSummary:
    return await call.engine.ingestion_summary(call.project, call.path["key"], principal=call.key)


ROUTES = (
    Route(
        method="POST",
        path="/api/v1/events",
        endpoint=record_events,
        operation_id="recordEvents",
        summary="Record exposures and conversions",
        description="A mixed batch: each event names its experiment and its `type` "
        f"(`exposure` or `conversion`). {_ANSWER}",
        tag="events",
        query=(PROJECT,),
        body=JsonBody(
            EventsBatch,
            example={
                "events": [
                    {
                        "type": "exposure",
                        "experiment": "checkout-button",
                        "subject": "user-42",
                        "variant": "green",
                        "event_id": "evt-1",
                    },
                    {
                        "type": "conversion",
                        "experiment": "checkout-button",
                        "metric": "purchase",
                        "subject": "user-42",
                        "value": 19.9,
                    },
                ]
            },
        ),
        response=EventsRecorded,
    ),
    Route(
        method="POST",
        path="/api/v1/experiments/{key}/exposures",
        endpoint=record_exposures,
        operation_id="recordExposures",
        summary="Record exposures to an experiment",
        description="The first exposure per subject wins; the same variant again is a "
        "duplicate, another variant makes the subject a crossover (kept, counted, excluded "
        f"from analysis). {_ANSWER}",
        tag="events",
        query=(PROJECT,),
        body=JsonBody(
            ExposuresBatch,
            example={
                "events": [
                    {"subject": "user-42", "variant": "green", "event_id": "evt-2"},
                    {"subject": "user-43", "variant": "control"},
                ]
            },
        ),
        response=EventsRecorded,
    ),
    Route(
        method="POST",
        path="/api/v1/experiments/{key}/conversions",
        endpoint=record_conversions,
        operation_id="recordConversions",
        summary="Record conversions in an experiment",
        description="For a metric that requires exposure, a conversion arriving before its "
        "subject's exposure waits (`pending`, for the metric's `pending_ttl_hours`) and is "
        f"attributed when the exposure lands. {_ANSWER}",
        tag="events",
        query=(PROJECT,),
        body=JsonBody(
            ConversionsBatch,
            example={
                "events": [
                    {"metric": "purchase", "subject": "user-42", "idempotency_key": "order-7"},
                ]
            },
        ),
        response=EventsRecorded,
    ),
    Route(
        method="GET",
        path="/api/v1/experiments/{key}/ingestion",
        endpoint=ingestion_summary,
        operation_id="getIngestionSummary",
        summary="What an experiment has received",
        description="Subjects per variant: `assigned` (crossovers included), `crossovers` and "
        "`analysed` (assigned minus crossovers; `exposures` is its older name), as "
        "docs/reports.md defines them; conversions per metric and variant within each "
        "metric's attribution window after the subject's first exposure (and not after "
        "the experiment ended), the conversions left out and why, and the pending and "
        "crossover counts. ANALYST and above.",
        tag="events",
        query=(PROJECT,),
        response=IngestionSummary,
    ),
)
