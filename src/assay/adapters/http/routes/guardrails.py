"""Guardrails over HTTP: an experiment's triggers, its notification outbox, and a check
on demand. ANALYST and above read; DEVELOPER and above may ask for a check; VIEWER and
SDK keys get 404."""

# No ``from __future__ import annotations``: the route table's types are read at runtime.

from assay.adapters.http._routing import CURSOR, LIMIT, NO_BODY, PROJECT, Call, Route
from assay.engine import Page
from assay.engine._guardrails import ExperimentCheck, GuardrailTrigger, NotificationStatus


async def list_triggers(call: Call) -> Page[GuardrailTrigger]:
    return await call.engine.guardrail_triggers(
        call.project,
        call.path["key"],
        cursor=call.text("cursor"),
        limit=call.integer("limit"),
        principal=call.key,
    )


async def list_outbox(call: Call) -> Page[NotificationStatus]:
    return await call.engine.guardrail_outbox(
        call.project,
        call.path["key"],
        cursor=call.text("cursor"),
        limit=call.integer("limit"),
        principal=call.key,
    )


async def check(call: Call) -> ExperimentCheck:
    return await call.engine.check_guardrails(call.project, call.path["key"], principal=call.key)


ROUTES = (
    Route(
        method="GET",
        path="/api/v1/experiments/{key}/guardrails/triggers",
        endpoint=list_triggers,
        operation_id="listGuardrailTriggers",
        summary="List an experiment's guardrail triggers",
        description="Breaches, newest first: the check (a guardrail, `srm`, `crossover_rate` "
        "or `no_traffic`), what was observed (the lift and its always-valid interval, the "
        "p-value, the rate), the threshold, the action and its outcome. One trigger per "
        "check and experiment revision. ANALYST and above.",
        tag="guardrails",
        query=(PROJECT, CURSOR, LIMIT),
        response=Page[GuardrailTrigger],
    ),
    Route(
        method="GET",
        path="/api/v1/experiments/{key}/guardrails/outbox",
        endpoint=list_outbox,
        operation_id="listGuardrailNotifications",
        summary="List an experiment's guardrail notifications and their delivery",
        description="Every notification, newest first, with its status (`pending`, "
        "`retrying`, `delivered`), attempts, next attempt and last error. Channel settings "
        "(URLs, secrets) are not shown. ANALYST and above.",
        tag="guardrails",
        query=(PROJECT, CURSOR, LIMIT),
        response=Page[NotificationStatus],
    ),
    Route(
        method="POST",
        path="/api/v1/experiments/{key}/guardrails/check",
        endpoint=check,
        operation_id="checkGuardrails",
        summary="Check an experiment's guardrails now",
        description="Judges every guardrail (sequential test) and health check (SRM, "
        "crossover rate, no traffic) of a running experiment now, records and acts on "
        "breaches as the periodic check would, and answers what each check found. Anything "
        "but a running experiment is 409 `experiment_not_running`. Written to the audit "
        "log. DEVELOPER and above.",
        tag="guardrails",
        query=(PROJECT,),
        body=NO_BODY,
        response=ExperimentCheck,
    ),
)
