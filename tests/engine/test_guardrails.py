"""Guardrails through a whole engine, on both stores: events are ingested, the guardrail
actor judges them (periodically and on demand), records triggers, acts through the
built-in actions and notifies from the outbox; definitions are validated when saved."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import trio

import assay
from assay.engine import (
    SYSTEM_KEY,
    Conflict,
    Engine,
    EngineConfig,
    Experiment,
    ExperimentRule,
    ExperimentSpec,
    ExperimentStatus,
    Flag,
    FlagSpec,
    Metric,
    MetricSpec,
    ProjectSpec,
    Transition,
    ValidationFailed,
    Variant,
)
from assay.engine._events import Conversion, Event, Exposure
from assay.engine._guardrails import GuardrailTrigger
from assay.engine._messages import CheckGuardrails
from assay.engine._model import Guardrail

P, E, F = "shop", "new-checkout", "checkout"


def _config(dsn: str | None, **extra: Any) -> EngineConfig:
    base: dict[str, Any] = {"guardrail_interval_seconds": 3600.0, "pool_size": 4}
    base.update(extra)
    if dsn is None:
        return EngineConfig(store="memory", **base)
    return EngineConfig(database_url=dsn, **base)


@pytest.fixture
async def engine(store_dsn: str | None) -> AsyncIterator[Engine]:
    async with assay.open_engine(_config(store_dsn), load_entry_points=False) as engine:
        yield engine


def errors_guardrail(**overrides: Any) -> Guardrail:
    """ "Errors must not rise by more than 2%"."""
    fields: dict[str, Any] = {
        "metric": "errors",
        "harmful_direction": "increase",
        "threshold": 0.02,
        "min_sample": 500,
        "action": "pause",
    }
    fields.update(overrides)
    return Guardrail(**fields)


async def setup(
    engine: Engine, guardrails: Sequence[Guardrail], *, start: bool = True
) -> Experiment:
    """A project with an ``errors`` metric, a two-variant experiment behind a flag."""
    service = engine.service
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
    await service.create_object(
        SYSTEM_KEY, Metric, P, MetricSpec(key="errors", higher_is_better=False)
    )
    experiment = await service.create_object(
        SYSTEM_KEY,
        Experiment,
        P,
        ExperimentSpec(
            key=E,
            variants=[Variant(key="control", value=False), Variant(key="treatment", value=True)],
            guardrails=list(guardrails),
        ),
    )
    await service.create_object(
        SYSTEM_KEY, Flag, P, FlagSpec(key=F, rules=[ExperimentRule(experiment=E)])
    )
    if start:
        experiment = await service.transition_experiment(SYSTEM_KEY, P, E, Transition.START)
    await engine.refresh()  # ingestion checks events against the snapshot
    return experiment


async def ingest(
    engine: Engine,
    *,
    units: int = 5000,
    control_rate: float = 0.50,
    treatment_rate: float = 0.55,
    prefix: str = "",
) -> None:
    """``units`` subjects per arm, the first ``rate`` share of each converting: the same
    data on every run."""
    events: list[Event] = []
    # Arms interleaved, so a check between two batches sees balanced traffic (no SRM).
    for i in range(units):
        for arm, rate in (("control", control_rate), ("treatment", treatment_rate)):
            subject = f"{prefix}{arm}-{i}"
            events.append(Exposure(experiment=E, subject=subject, variant=arm))
            if i < rate * units:
                events.append(Conversion(experiment=E, metric="errors", subject=subject))
    for start in range(0, len(events), 10_000):
        result = await engine.record_events(P, events[start : start + 10_000])
        assert not result.rejected, result.rejected[:3]


async def wait_until(predicate: Callable[[], Awaitable[bool]], seconds: float = 20) -> None:
    with trio.fail_after(seconds):
        while not await predicate():  # noqa: ASYNC110 - the state lives in the store
            await trio.sleep(0.02)


async def triggers(engine: Engine) -> list[GuardrailTrigger]:
    return (await engine.guardrail_triggers(P, E)).items


async def status(engine: Engine) -> ExperimentStatus:
    return (await engine.service.get_object(SYSTEM_KEY, Experiment, P, E)).status


# --- end to end -----------------------------------------------------------------------


async def test_a_real_harm_is_caught_on_the_interval_and_the_experiment_paused(
    store_dsn: str | None,
) -> None:
    config = _config(store_dsn, guardrail_interval_seconds=0.05, guardrail_outbox_poll_seconds=0.05)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        await setup(engine, [])
        assert engine.decide(F, "someone", project=P).reason == "experiment_assigned"
        await ingest(engine)  # errors: 50% in control, 55% in treatment (a 10% rise)
        # The guardrail goes on once every event is in. The events take several
        # transactions, and a round between two of them judges part of the data: on a
        # busy machine one did, and paused on other numbers than these.
        guardrail = msgspec.to_builtins(errors_guardrail(channels=[{"type": "log"}]))
        await engine.service.update_object(
            SYSTEM_KEY, Experiment, P, E, {"guardrails": [guardrail]}
        )

        async def paused() -> bool:
            return await status(engine) is ExperimentStatus.PAUSED

        await wait_until(paused)

        # The new snapshot was published before the action returned: decide stopped.
        decision = engine.decide(F, "someone", project=P)
        assert decision.reason == "default"
        assert decision.experiment_reason == "experiment_not_running"

        (trigger,) = await triggers(engine)
        assert (trigger.kind, trigger.metric, trigger.variant) == (
            "guardrail",
            "errors",
            "treatment",
        )
        assert trigger.observed == pytest.approx(0.10)
        assert trigger.ci_low is not None
        assert trigger.ci_low > 0.02
        assert trigger.threshold == 0.02
        assert trigger.statistic is not None
        assert trigger.statistic < 0.05
        assert trigger.units == {"control": 5000, "treatment": 5000}
        assert (trigger.action, trigger.action_status) == ("pause", "done")

        # Audited as the guardrail, with the reason.
        audit = await engine.service.list_audit(
            SYSTEM_KEY, P, resource_kind="experiment", resource_key=E
        )
        pause = next(a for a in audit.items if a.action == "experiment.pause")
        assert pause.actor == "guardrail"
        assert trigger.id in pause.after["reason"]

        async def delivered() -> bool:
            return (await engine.guardrail_outbox(P, E)).items[0].status == "delivered"

        await wait_until(delivered)
        # Further rounds see a paused experiment: nothing more is triggered.
        rounds = engine.guardrail_status["rounds"]

        async def two_more_rounds() -> bool:
            return bool(engine.guardrail_status["rounds"] >= rounds + 2)

        await wait_until(two_more_rounds)
        assert len(await triggers(engine)) == 1


async def test_rollback_on_demand_serves_control_to_everyone(engine: Engine) -> None:
    await setup(engine, [errors_guardrail(action="rollback")])
    await ingest(engine)

    result = await engine.check_guardrails(P, E)

    assert result.status == "ROLLED_BACK"
    (outcome,) = [o for o in result.outcomes if o.kind == "guardrail"]
    assert outcome.status == "breached"
    (trigger,) = result.triggers
    assert outcome.trigger_id == trigger.id
    assert (trigger.action, trigger.action_status) == ("rollback", "done")
    decision = engine.decide(F, "anyone", project=P)
    assert (decision.reason, decision.value) == ("rolled_back", False)
    # The check itself is audited too, as whoever asked for it.
    audit = await engine.service.list_audit(SYSTEM_KEY, P, resource_key=E)
    check = next(a for a in audit.items if a.action == "experiment.guardrails_check")
    assert check.actor == SYSTEM_KEY.id
    assert check.after["triggers"] == [trigger.id]


async def test_a_harmless_experiment_triggers_nothing(engine: Engine) -> None:
    await setup(engine, [errors_guardrail(threshold=0.0)])
    await ingest(engine, control_rate=0.5, treatment_rate=0.5)

    result = await engine.check_guardrails(P, E)

    assert result.status == "RUNNING"
    assert {o.kind: o.status for o in result.outcomes} == {
        "guardrail": "ok",
        "srm": "ok",
        "crossover_rate": "ok",
        "no_traffic": "ok",
    }
    assert result.triggers == []
    assert await triggers(engine) == []


async def test_too_small_a_sample_is_not_judged(engine: Engine) -> None:
    await setup(engine, [errors_guardrail(min_sample=1000)])
    await ingest(engine, units=800, control_rate=0.1, treatment_rate=0.9)
    (outcome, *_) = (await engine.check_guardrails(P, E)).outcomes
    assert outcome.status == "insufficient_sample"
    assert await status(engine) is ExperimentStatus.RUNNING


async def test_a_notify_only_breach_is_recorded_once_per_revision(engine: Engine) -> None:
    await setup(engine, [errors_guardrail(action="notify")])
    await ingest(engine)

    first = await engine.check_guardrails(P, E)
    again = await engine.check_guardrails(P, E)

    assert first.status == again.status == "RUNNING"
    (trigger,) = first.triggers
    assert (trigger.action, trigger.action_status) == ("notify", "done")
    assert again.triggers == []  # still breached, already recorded
    assert again.outcomes[0].trigger_id == trigger.id
    assert len((await engine.guardrail_outbox(P, E)).items) == 1  # the log channel

    # A change to the experiment is a new revision: a breach still there is news again.
    await engine.service.update_object(SYSTEM_KEY, Experiment, P, E, {"description": "v2"})
    third = await engine.check_guardrails(P, E)
    assert len(third.triggers) == 1
    assert len(await triggers(engine)) == 2


async def test_health_checks_notify_without_acting(store_dsn: str | None) -> None:
    config = _config(store_dsn, guardrail_no_traffic_minutes=0.001)
    channel = {"type": "log"}
    async with assay.open_engine(config, load_entry_points=False) as engine:
        await setup(engine, [errors_guardrail(action="pause", channels=[channel])])
        # 600 against 400 on equal weights: a sample ratio mismatch; and 20 subjects seen
        # in both variants: a 2% crossover rate.
        events: list[Event] = []
        for i in range(600):
            events.append(Exposure(experiment=E, subject=f"a{i}", variant="control"))
        for i in range(400):
            events.append(Exposure(experiment=E, subject=f"b{i}", variant="treatment"))
        for i in range(20):
            events.append(Exposure(experiment=E, subject=f"a{i}", variant="treatment"))
        await engine.record_events(P, events)
        await trio.sleep(0.1)  # longer than the 0.06 s no-traffic allowance

        result = await engine.check_guardrails(P, E)

        breached = {o.kind: o for o in result.outcomes if o.status == "breached"}
        assert set(breached) == {"srm", "crossover_rate", "no_traffic"}
        assert breached["srm"].observed is not None
        assert breached["srm"].observed < 0.001
        assert breached["crossover_rate"].observed == pytest.approx(20 / 1000)
        assert {t.kind: t.action for t in result.triggers} == {
            "srm": "notify",
            "crossover_rate": "notify",
            "no_traffic": "notify",
        }
        assert result.status == "RUNNING"  # health checks never pause on their own
        outbox = (await engine.guardrail_outbox(P, E)).items
        # One notification per trigger, to the channels the guardrails name.
        assert sorted(n.trigger_id for n in outbox) == sorted(t.id for t in result.triggers)
        assert {n.channel_type for n in outbox} == {"log"}


async def test_an_unfinished_action_is_finished_by_the_next_round(engine: Engine) -> None:
    experiment = await setup(engine, [errors_guardrail()])
    # As if a process recorded these triggers and died before acting: one for the
    # experiment as it is, one for a revision it has since left.
    now = datetime.now(UTC)

    def pending(trigger_id: str, revision: int) -> GuardrailTrigger:
        return GuardrailTrigger(
            id=trigger_id,
            project_id=experiment.project_id,
            experiment_id=experiment.id,
            experiment_key=E,
            experiment_revision=revision,
            check="guardrail:0:errors",
            kind="guardrail",
            metric="errors",
            threshold=0.02,
            message="recorded before a crash",
            action="pause",
            triggered_at=now,
        )

    await engine.store.record_trigger(pending("grt_0000000000010000", revision=1), [])
    await engine.store.record_trigger(pending("grt_0000000000020000", revision=2), [])
    assert experiment.revision == 2

    await engine.guardrail.request(CheckGuardrails())  # a round: check, then finish

    assert await status(engine) is ExperimentStatus.PAUSED
    settled = {t.id: t for t in await triggers(engine)}
    assert settled["grt_0000000000020000"].action_status == "done"
    assert settled["grt_0000000000010000"].action_status == "skipped"
    assert "changed since the breach" in (settled["grt_0000000000010000"].action_result or "")


async def test_only_a_running_experiment_is_checked(engine: Engine) -> None:
    await setup(engine, [errors_guardrail()], start=False)
    with pytest.raises(Conflict) as info:
        await engine.check_guardrails(P, E)
    assert info.value.code == "experiment_not_running"


# --- definitions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("guardrail", "code", "field"),
    [
        ({"metric": "nope"}, "unknown_reference", "guardrails[0].metric"),
        ({"action": "explode"}, "unknown_action", "guardrails[0].action"),
        ({"channels": [{"type": "pager"}]}, "unknown_channel", "guardrails[0].channels[0].type"),
        ({"channels": [{"url": "http://x"}]}, "invalid_channel", "guardrails[0].channels[0]"),
        (
            {"channels": [{"type": "webhook", "url": "ftp://example.invalid/hook"}]},
            "invalid_channel",
            "guardrails[0].channels[0]",
        ),
        (
            {"channels": [{"type": "webhook", "url": "http://127.0.0.1/h", "color": "red"}]},
            "invalid_channel",
            "guardrails[0].channels[0]",
        ),
        (
            {"channels": [{"type": "slack", "url": "https://127.0.0.1/h", "timeout": -1}]},
            "invalid_channel",
            "guardrails[0].channels[0]",
        ),
    ],
)
async def test_guardrails_are_validated_when_saved(
    engine: Engine, guardrail: dict[str, Any], code: str, field: str
) -> None:
    await setup(engine, [], start=False)
    definition = {"metric": "errors", "harmful_direction": "increase", **guardrail}
    before = await engine.store.load_config()
    with pytest.raises(ValidationFailed) as info:
        await engine.service.update_object(
            SYSTEM_KEY, Experiment, P, E, {"guardrails": [definition]}
        )
    assert info.value.code == code
    assert info.value.details["field"] == field
    assert (await engine.store.load_config()).content() == before.content()


async def test_the_shape_of_a_guardrail_is_checked_by_the_decoder(engine: Engine) -> None:
    await setup(engine, [], start=False)
    for bad in (
        {"metric": "errors", "harmful_direction": "sideways"},
        {"metric": "errors", "harmful_direction": "increase", "threshold": -0.1},
        {"metric": "errors", "harmful_direction": "increase", "min_sample": 0},
        {"metric": "errors", "harmful_direction": "increase", "alpha": 0.5},
    ):
        with pytest.raises(ValidationFailed) as info:
            await engine.service.update_object(SYSTEM_KEY, Experiment, P, E, {"guardrails": [bad]})
        assert info.value.code == "invalid_body", bad


async def test_valid_channels_are_accepted_and_a_guarded_metric_is_in_use(engine: Engine) -> None:
    channels = [
        {"type": "log"},
        {"type": "webhook", "url": "https://hooks.example.com/assay", "secret": "s3cret"},
        {"type": "webhook", "url": "http://127.0.0.1:9/h", "secret_env": "HOOK_SECRET"},
        {"type": "slack", "url": "https://hooks.slack.com/services/T/B/X", "timeout": 5},
    ]
    experiment = await setup(engine, [errors_guardrail(channels=channels)], start=False)
    assert msgspec.to_builtins(experiment.guardrails[0].channels) == channels
    with pytest.raises(Conflict) as info:
        await engine.service.delete_object(SYSTEM_KEY, Metric, P, "errors")
    assert info.value.code == "in_use"


async def test_the_leader_purges_delivered_notifications_past_their_retention() -> None:
    from datetime import timedelta

    from assay.engine._guardrails import Notification

    config = _config(None, guardrail_outbox_retention_days=1.0)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        store = engine.store
        now = datetime.now(UTC)

        def notification(notification_id: str) -> Notification:
            return Notification(
                id=notification_id,
                trigger_id="grt_1",
                project_id="prj_1",
                experiment_id="exp_1",
                channel={"type": "log"},
                payload={"id": notification_id},
                created_at=now - timedelta(days=3),
                next_attempt_at=now + timedelta(days=1),
            )

        trigger = GuardrailTrigger(
            id="grt_1",
            project_id="prj_1",
            experiment_id="exp_1",
            experiment_key=E,
            experiment_revision=1,
            check="health:srm",
            kind="srm",
            threshold=0.001,
            message="delivered long ago",
            action="notify",
            triggered_at=now - timedelta(days=3),
        )
        await store.record_trigger(trigger, [notification("ntf_old"), notification("ntf_new")])
        for notification_id, age in (("ntf_old", timedelta(days=2)), ("ntf_new", timedelta(0))):
            await store.record_delivery(
                notification_id,
                attempts=1,
                delivered_at=now - age,
                next_attempt_at=now,
                error=None,
            )
        actor: Any = engine.guardrail.actor
        actor.wake_outbox()
        with trio.fail_after(5):
            while actor.purged < 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
        left = await store.list_notifications(experiment_id="exp_1", limit=10)
        assert [n.id for n in left] == ["ntf_new"]
        assert actor.purged == 1


async def test_the_three_counts_agree_in_ingestion_report_and_health_checks(
    engine: Engine,
) -> None:
    """Assigned, crossovers, analysed (docs/reports.md): the same numbers under the same
    names in the ingestion summary, the report and the health checks; SRM tests the
    assigned subjects. Here control loses 150 subjects to crossovers and treatment none:
    the analysed split (450 / 600) looks broken, the assignment (600 / 600) is not."""
    await setup(engine, [errors_guardrail()])
    events: list[Event] = []
    for i in range(600):
        events.append(Exposure(experiment=E, subject=f"c{i}", variant="control"))
        events.append(Exposure(experiment=E, subject=f"t{i}", variant="treatment"))
    for i in range(150):
        events.append(Exposure(experiment=E, subject=f"c{i}", variant="treatment"))
    result = await engine.record_events(P, events)
    assert not result.rejected

    summary = await engine.ingestion_summary(P, E)
    report = await engine.report(P, E)
    check = await engine.check_guardrails(P, E)

    expected = {"control": (600, 150, 450), "treatment": (600, 0, 600)}
    assert {v.variant: (v.assigned, v.crossovers, v.analysed) for v in summary.variants} == (
        expected
    )
    assert {v.key: (v.assigned, v.crossovers, v.analysed) for v in report.variants} == expected
    assert (summary.assigned, summary.crossovers, summary.analysed) == (1200, 150, 1050)
    assert (report.assigned, report.crossovers, report.analysed) == (1200, 150, 1050)
    # The older names carry the same numbers.
    assert summary.exposures == summary.analysed
    assert [(v.exposed, v.subjects) for v in report.variants] == [(600, 450), (600, 600)]

    assert report.srm.observed == [600, 600]
    assert report.srm.counts == "assigned"
    assert not report.srm.flagged
    assert report.srm.sequential_p_value == 1.0
    outcomes = {o.kind: o for o in check.outcomes}
    assert outcomes["srm"].status == "ok"
    assert outcomes["srm"].units == {"control": 600, "treatment": 600}
    assert "assigned subjects [600, 600]" in outcomes["srm"].message
    assert outcomes["crossover_rate"].observed == pytest.approx(150 / 1200)
    assert "150 of 1200 assigned subjects" in outcomes["crossover_rate"].message


async def test_srm_counts_crossovers_where_they_were_first_assigned(engine: Engine) -> None:
    """The other way round: 900 / 700 assigned, of which control's 200 crossed over, so the
    analysed split is an even 700 / 700. SRM over assigned subjects sees the mismatch."""
    await setup(engine, [errors_guardrail()])
    events: list[Event] = []
    for i in range(900):
        events.append(Exposure(experiment=E, subject=f"c{i}", variant="control"))
    for i in range(700):
        events.append(Exposure(experiment=E, subject=f"t{i}", variant="treatment"))
    for i in range(200):
        events.append(Exposure(experiment=E, subject=f"c{i}", variant="treatment"))
    assert not (await engine.record_events(P, events)).rejected

    report = await engine.report(P, E)
    check = await engine.check_guardrails(P, E)

    assert [v.analysed for v in report.variants] == [700, 700]
    assert report.srm.observed == [900, 700]
    assert report.srm.flagged
    assert report.srm.sequential_p_value < 0.001
    srm = next(o for o in check.outcomes if o.kind == "srm")
    assert srm.status == "breached"
    assert srm.units == {"control": 900, "treatment": 700}


async def test_resuming_restarts_the_no_traffic_allowance(
    store_dsn: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started, silent past the allowance (breached), paused for hours, resumed: the
    allowance counts from the resume, not from the start."""
    from datetime import timedelta

    from assay.engine import _guardrail_checks, _service

    clock = [datetime(2030, 1, 1, tzinfo=UTC)]
    monkeypatch.setattr(_service, "now", lambda: clock[0])
    monkeypatch.setattr(_guardrail_checks, "_now", lambda: clock[0])
    config = _config(store_dsn, guardrail_no_traffic_minutes=60)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        await setup(engine, [])

        def no_traffic(check: Any) -> str:
            return next(o.status for o in check.outcomes if o.kind == "no_traffic")

        clock[0] += timedelta(minutes=30)
        assert no_traffic(await engine.check_guardrails(P, E)) == "ok"
        clock[0] += timedelta(minutes=40)  # 70 minutes since the start
        assert no_traffic(await engine.check_guardrails(P, E)) == "breached"
        await engine.service.transition_experiment(SYSTEM_KEY, P, E, Transition.PAUSE)
        clock[0] += timedelta(hours=5)
        await engine.service.transition_experiment(SYSTEM_KEY, P, E, Transition.RESUME)
        clock[0] += timedelta(minutes=30)
        assert no_traffic(await engine.check_guardrails(P, E)) == "ok"
        clock[0] += timedelta(minutes=40)  # 70 minutes since the resume
        assert no_traffic(await engine.check_guardrails(P, E)) == "breached"
