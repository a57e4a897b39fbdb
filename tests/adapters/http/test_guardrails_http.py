"""Guardrails over HTTP: a check on demand acts on a breach and answers what it found; the
triggers and the outbox are listed; the outbox never shows a channel's secret."""

from __future__ import annotations

from assay.engine import (
    SYSTEM_KEY,
    Experiment,
    ExperimentRule,
    ExperimentSpec,
    Flag,
    FlagSpec,
    Metric,
    MetricSpec,
    Role,
    Transition,
    Variant,
)
from assay.engine._events import Conversion, Event, Exposure
from assay.engine._model import Guardrail


async def _harmful_experiment(world, project: str, *, start: bool = True) -> str:
    """A running experiment whose treatment raises errors by 10% (rollback on breach),
    with a webhook channel whose secret must never be shown."""
    service = world.engine.service
    metric = world.unique("errors")
    await service.create_object(SYSTEM_KEY, Metric, project, MetricSpec(key=metric))
    key = world.unique("exp")
    guardrail = Guardrail(
        metric=metric,
        harmful_direction="increase",
        threshold=0.02,
        action="rollback",
        channels=[{"type": "webhook", "url": "http://127.0.0.1:9/unreachable", "secret": "s3"}],
    )
    spec = ExperimentSpec(
        key=key,
        variants=[Variant(key="control", value=False), Variant(key="treatment", value=True)],
        guardrails=[guardrail],
    )
    await service.create_object(SYSTEM_KEY, Experiment, project, spec)
    flag = world.unique("flag")
    await service.create_object(
        SYSTEM_KEY, Flag, project, FlagSpec(key=flag, rules=[ExperimentRule(experiment=key)])
    )
    if not start:
        return key
    await service.transition_experiment(SYSTEM_KEY, project, key, Transition.START)
    await world.engine.refresh()
    events: list[Event] = []
    for i in range(4000):
        for arm, rate in (("control", 0.5), ("treatment", 0.55)):
            subject = f"{arm}-{i}"
            events.append(Exposure(experiment=key, subject=subject, variant=arm))
            if i < rate * 4000:
                events.append(Conversion(experiment=key, metric=metric, subject=subject))
    for offset in range(0, len(events), 10_000):
        await world.engine.record_events(project, events[offset : offset + 10_000])
    return key


async def test_a_check_acts_and_the_trigger_and_outbox_are_listed(world) -> None:
    project = await world.project()
    key = await _harmful_experiment(world, project)
    developer = await world.api_as(Role.DEVELOPER)
    analyst = await world.api_as(Role.ANALYST)
    q = f"?project={project}"

    checked = await developer.post(f"/api/v1/experiments/{key}/guardrails/check{q}")
    assert checked.status == 200, checked.body
    assert checked.body["status"] == "ROLLED_BACK"
    breached = [o for o in checked.body["outcomes"] if o["status"] == "breached"]
    assert [o["kind"] for o in breached] == ["guardrail"]
    (trigger,) = checked.body["triggers"]
    assert (trigger["action"], trigger["action_status"]) == ("rollback", "done")

    triggers = await analyst.get(f"/api/v1/experiments/{key}/guardrails/triggers{q}")
    assert triggers.status == 200
    assert [t["id"] for t in triggers.body["items"]] == [trigger["id"]]
    assert triggers.body["items"][0]["ci_low"] > 0.02

    outbox = await analyst.get(f"/api/v1/experiments/{key}/guardrails/outbox{q}")
    assert outbox.status == 200
    (notification,) = outbox.body["items"]
    assert notification["trigger_id"] == trigger["id"]
    assert notification["channel_type"] == "webhook"
    assert notification["status"] in ("pending", "retrying")
    assert "s3" not in str(outbox.body)
    assert "127.0.0.1:9" not in str(outbox.body)

    experiment = await analyst.get(f"/api/v1/experiments/{key}{q}")
    assert experiment.body["status"] == "ROLLED_BACK"
    # A second check finds the experiment no longer running.
    again = await developer.post(f"/api/v1/experiments/{key}/guardrails/check{q}")
    assert (again.status, again.code) == (409, "experiment_not_running")


async def test_lists_page_with_a_cursor(world) -> None:
    project = await world.project()
    key = await _harmful_experiment(world, project, start=False)
    api = await world.api_as(Role.ANALYST)
    empty = await api.get(f"/api/v1/experiments/{key}/guardrails/triggers?project={project}")
    assert empty.body == {"items": [], "next_cursor": None}
    bad = await api.get(
        f"/api/v1/experiments/{key}/guardrails/outbox?project={project}&cursor=%21%21"
    )
    assert (bad.status, bad.code) == (422, "invalid_cursor")
    missing = await api.get(f"/api/v1/experiments/nope/guardrails/triggers?project={project}")
    assert (missing.status, missing.code) == (404, "not_found")


async def test_the_routes_are_documented(admin) -> None:
    document = await admin.get("/api/v1/openapi.json")
    paths = document.body["paths"]
    assert "post" in paths["/api/v1/experiments/{key}/guardrails/check"]
    assert "get" in paths["/api/v1/experiments/{key}/guardrails/triggers"]
    assert "get" in paths["/api/v1/experiments/{key}/guardrails/outbox"]
