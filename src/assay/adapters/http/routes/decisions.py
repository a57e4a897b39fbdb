"""Deciding over HTTP: one flag for one subject, a batch, and looking a decision up.

The decide routes resolve the project from the published snapshot, not the store, so a
decision costs no database round trip beyond its record (durable only where it must be).
"""

from typing import Annotated, Any

import msgspec

from assay.adapters.http._routing import PROJECT, Call, JsonBody, Route
from assay.engine import Action, Decision, NotFound, Resource, ValidationFailed, authorize

MAX_BATCH = 1_000

SubjectId = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=512, description="The subject (user, device, ...) id."),
]
FlagKey = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Attributes = Annotated[
    dict[str, Any],
    msgspec.Meta(
        description="Targeting attributes, of any JSON type; `id` is the subject unless "
        "given here (then kept as given, a number stays a number)."
    ),
]


NumericSubject = Annotated[
    int,
    msgspec.Meta(description="A numeric subject id: it is the `id` attribute as a number."),
]


class DecideRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    flag: FlagKey
    subject: SubjectId | NumericSubject
    attributes: Attributes = {}


def decide_arguments(r: DecideRequest) -> tuple[str, str, dict[str, Any]]:
    # A numeric subject keeps its type as the ``id`` attribute (conditions such as
    # ``{"id": {"$in": [123]}}`` match it, as in GrowthBook); the decision names it as text.
    subject = r.subject
    if type(subject) is str:
        return (r.flag, subject, r.attributes)
    attributes = r.attributes if "id" in r.attributes else {**r.attributes, "id": subject}
    return (r.flag, str(subject), attributes)


class BatchDecideRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    requests: list[DecideRequest]
    """Up to 1,000 (flag, subject) pairs, decided against one snapshot."""


class BatchDecideResponse(msgspec.Struct, frozen=True, kw_only=True):
    decisions: list[Decision]


async def _project_id(call: Call) -> str:
    project = await call.engine.addressed_project(call.key, call.project)
    authorize(call.key, Resource.DECISION, Action.WRITE, project_id=project.id)
    return project.id


async def decide(call: Call) -> Decision:
    body: DecideRequest = call.body
    project_id = await _project_id(call)
    decisions = await call.engine.adecide_many([decide_arguments(body)], project_id=project_id)
    return decisions[0]


async def decide_batch(call: Call) -> BatchDecideResponse:
    body: BatchDecideRequest = call.body
    if len(body.requests) > MAX_BATCH:
        raise ValidationFailed(
            f"a batch holds at most {MAX_BATCH} requests, not {len(body.requests)}",
            code="batch_too_large",
            details={"max": MAX_BATCH, "received": len(body.requests)},
        )
    project_id = await _project_id(call)
    decisions = await call.engine.adecide_many(
        [decide_arguments(r) for r in body.requests], project_id=project_id
    )
    return BatchDecideResponse(decisions=decisions)


async def get_decision(call: Call) -> Decision:
    decision_id = call.path["decision_id"]
    decision = await call.engine.get_decision(decision_id)
    if decision is None:
        if await call.engine.decision_expired(decision_id):
            raise NotFound(
                "decision record expired (past decision_record_retention_days)",
                code="decision_expired",
            )
        raise NotFound("decision not found")
    authorize(call.key, Resource.DECISION, Action.READ, project_id=decision.project_id)
    return decision


ROUTES = (
    Route(
        method="POST",
        path="/api/v1/decide",
        endpoint=decide,
        operation_id="decide",
        summary="Decide one flag for one subject",
        description="The value, the variant (if any), the rule that decided and one reason "
        "code. An unknown flag is a normal answer (`flag_not_found`). An "
        "`experiment_assigned` decision is durably recorded before it is returned.",
        tag="decide",
        query=(PROJECT,),
        body=JsonBody(
            DecideRequest,
            example={
                "flag": "checkout-color",
                "subject": "user-42",
                "attributes": {"country": "DE", "staff": False},
            },
        ),
        response=Decision,
    ),
    Route(
        method="POST",
        path="/api/v1/decide/batch",
        endpoint=decide_batch,
        operation_id="decideBatch",
        summary="Decide up to 1,000 (flag, subject) pairs",
        description="All pairs are decided against the same configuration snapshot; over "
        "1,000 is a 422 `batch_too_large`.",
        tag="decide",
        query=(PROJECT,),
        body=JsonBody(
            BatchDecideRequest,
            example={
                "requests": [
                    {
                        "flag": "checkout-color",
                        "subject": "user-42",
                        "attributes": {"country": "DE"},
                    },
                    {"flag": "checkout-color", "subject": "user-43"},
                ]
            },
        ),
        response=BatchDecideResponse,
    ),
    Route(
        method="GET",
        path="/api/v1/decisions/{decision_id}",
        endpoint=get_decision,
        operation_id="getDecision",
        summary="Look up a recorded decision",
        description="Records are written per the `decision_records` mode; in `async` mode a "
        "decision that was not an assignment may take a moment to appear. Records are kept "
        "`decision_record_retention_days` (30 by default); a record past that answers 404 "
        "`decision_expired`.",
        tag="decide",
        response=Decision,
    ),
)
