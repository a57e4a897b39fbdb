"""Experiment lifecycle: one route per transition of DESIGN's state machine."""

from __future__ import annotations

from assay.adapters.http._routing import PROJECT, Call, Endpoint, JsonBody, Route
from assay.adapters.http._schemas import TransitionRequest
from assay.engine import Experiment, Transition

_SUMMARIES = {
    Transition.START: "Start a DRAFT experiment",
    Transition.PAUSE: "Pause a RUNNING experiment",
    Transition.RESUME: "Resume a PAUSED experiment",
    Transition.COMPLETE: "Complete a RUNNING or PAUSED experiment",
    Transition.ARCHIVE: "Archive a COMPLETED or ROLLED_BACK experiment",
    Transition.ROLLBACK: "Roll back a RUNNING or PAUSED experiment",
}

_REASONS = {
    Transition.START: "sample size planned for two weeks",
    Transition.PAUSE: "checkout errors rose; investigating",
    Transition.RESUME: "fixed the error reporting",
    Transition.COMPLETE: "reached the planned sample size",
    Transition.ARCHIVE: "results written up",
    Transition.ROLLBACK: "treatment breaks the checkout on Safari",
}
"""The request example of each transition."""


def _transition_endpoint(transition: Transition) -> Endpoint:
    async def transition_experiment(call: Call) -> Experiment:
        request: TransitionRequest | None = call.body
        return await call.service.transition_experiment(
            call.key,
            call.project,
            call.path["key"],
            transition,
            expected_revision=call.expected_revision,
            reason=request.reason if request is not None else None,
        )

    return transition_experiment


ROUTES = tuple(
    Route(
        method="POST",
        path=f"/api/v1/experiments/{{key}}/{transition.value}",
        endpoint=_transition_endpoint(transition),
        operation_id=f"{transition.value}Experiment",
        summary=_SUMMARIES[transition],
        description="Any other starting status is refused with 409 `illegal_transition`. "
        "The optional reason is kept in the audit log.",
        tag="experiments",
        query=(PROJECT,),
        body=JsonBody(TransitionRequest, required=False, example={"reason": _REASONS[transition]}),
        if_match=True,
        response=Experiment,
    )
    for transition in Transition
)
