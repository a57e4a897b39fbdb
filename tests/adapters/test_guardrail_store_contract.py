"""The guardrail half of the Store port, on both adapters: triggers are unique per
(experiment, check, revision) and written with their outbox atomically; a trigger's action
is claimed by one caller; the outbox hands out what is due and records each attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from assay.engine._guardrails import GuardrailTrigger, Notification
from assay.engine._ports import Store

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _trigger(trigger_id: str, *, experiment: str = "exp_1", revision: int = 2) -> GuardrailTrigger:
    return GuardrailTrigger(
        id=trigger_id,
        project_id="prj_1",
        experiment_id=experiment,
        experiment_key="e",
        experiment_revision=revision,
        check="guardrail:0:errors",
        kind="guardrail",
        metric="errors",
        variant="treatment",
        observed=0.1,
        ci_low=0.04,
        ci_high=0.16,
        threshold=0.02,
        threshold_type="relative",
        harmful_direction="increase",
        statistic=1e-4,
        units={"control": 5000, "treatment": 5000},
        message="errors rose",
        action="pause",
        triggered_at=T0,
    )


def _notification(
    notification_id: str, trigger_id: str, *, experiment: str = "exp_1"
) -> Notification:
    return Notification(
        id=notification_id,
        trigger_id=trigger_id,
        project_id="prj_1",
        experiment_id=experiment,
        channel={"type": "webhook", "url": "https://example.com/h", "secret": "s"},
        payload={"id": notification_id, "nested": {"list": [1, 2.5, None, "x"]}},
        created_at=T0,
        next_attempt_at=T0,
    )


async def test_a_trigger_is_recorded_once_with_its_notifications(store: Store) -> None:
    first = _trigger("grt_01")
    stored, created = await store.record_trigger(first, [_notification("ntf_01", "grt_01")])
    assert created
    assert stored == first

    # The same breach again (another process, the next interval): nothing new.
    again, created = await store.record_trigger(
        _trigger("grt_02"), [_notification("ntf_02", "grt_02")]
    )
    assert not created
    assert again == first
    assert [n.id for n in await store.list_notifications(experiment_id="exp_1", limit=10)] == [
        "ntf_01"
    ]

    # A new revision of the experiment is a new trigger.
    _, created = await store.record_trigger(_trigger("grt_03", revision=3), [])
    assert created
    listed = await store.list_triggers(experiment_id="exp_1", limit=10)
    assert [t.id for t in listed] == ["grt_03", "grt_01"]
    assert [
        t.id for t in await store.list_triggers(experiment_id="exp_1", before="grt_03", limit=10)
    ] == ["grt_01"]
    assert await store.list_triggers(experiment_id="exp_2", limit=10) == []


async def test_an_action_is_claimed_by_one_caller(store: Store) -> None:
    await store.record_trigger(_trigger("grt_01"), [])
    lease = T0 + timedelta(minutes=2)
    assert await store.claim_trigger("grt_01", now=T0, lease_until=lease)
    assert not await store.claim_trigger("grt_01", now=T0, lease_until=lease)
    (acting,) = await store.list_triggers(experiment_id=None, action_status="acting", limit=10)
    assert acting.id == "grt_01"
    # A claimer that died: its claim lapses, and someone else may take it.
    assert await store.claim_trigger("grt_01", now=lease, lease_until=lease + timedelta(minutes=2))

    settled = await store.settle_trigger("grt_01", status="done", result="paused", at=T0)
    assert settled is not None
    assert (settled.action_status, settled.action_result, settled.acted_at) == (
        "done",
        "paused",
        T0,
    )
    assert not await store.claim_trigger("grt_01", now=T0 + timedelta(days=1), lease_until=lease)
    assert not await store.claim_trigger("grt_missing", now=T0, lease_until=lease)
    assert await store.settle_trigger("grt_missing", status="done", result=None, at=T0) is None


async def test_the_outbox_hands_out_what_is_due_and_records_attempts(store: Store) -> None:
    await store.record_trigger(
        _trigger("grt_01"), [_notification("ntf_01", "grt_01"), _notification("ntf_02", "grt_01")]
    )
    due = await store.due_notifications(T0, limit=10)
    assert [n.id for n in due] == ["ntf_01", "ntf_02"]
    assert due[0].payload == {"id": "ntf_01", "nested": {"list": [1, 2.5, None, "x"]}}
    assert due[0].channel["secret"] == "s"
    assert await store.due_notifications(T0 - timedelta(seconds=1), limit=10) == []
    assert len(await store.due_notifications(T0, limit=1)) == 1

    later = T0 + timedelta(seconds=30)
    await store.record_delivery(
        "ntf_01", attempts=1, delivered_at=None, next_attempt_at=later, error="answered 503"
    )
    await store.record_delivery(
        "ntf_02", attempts=1, delivered_at=T0, next_attempt_at=T0, error=None
    )
    assert await store.due_notifications(T0, limit=10) == []
    (retry,) = await store.due_notifications(later, limit=10)
    assert (retry.id, retry.attempts, retry.last_error) == ("ntf_01", 1, "answered 503")
    listed = {n.id: n for n in await store.list_notifications(experiment_id="exp_1", limit=10)}
    assert listed["ntf_02"].delivered_at == T0


async def test_traffic_of_an_experiment_without_exposures(store: Store) -> None:
    traffic = await store.guardrail_traffic("exp_none")
    assert (traffic.exposures, traffic.crossovers, traffic.last_exposure_at) == ({}, 0, None)
    assert traffic.assigned == {}


async def test_the_memory_store_always_leads(memory_store: Store) -> None:
    async with memory_store.guardrail_leadership() as leadership:
        assert await leadership.acquire()
        assert await leadership.acquire()


async def test_only_notifications_delivered_before_the_cutoff_are_purged(store: Store) -> None:
    await store.record_trigger(
        _trigger("grt_01"), [_notification(f"ntf_0{i}", "grt_01") for i in range(1, 5)]
    )
    day = timedelta(days=1)
    for notification_id, delivered in (("ntf_01", T0), ("ntf_02", T0 + 10 * day)):
        await store.record_delivery(
            notification_id, attempts=1, delivered_at=delivered, next_attempt_at=T0, error=None
        )
    # ntf_03 is still being retried, ntf_04 never attempted: neither may ever be purged.
    await store.record_delivery(
        "ntf_03", attempts=5, delivered_at=None, next_attempt_at=T0 + 20 * day, error="503"
    )
    assert await store.purge_delivered_notifications(T0 + 5 * day) == 1
    left = {n.id for n in await store.list_notifications(experiment_id="exp_1", limit=10)}
    assert left == {"ntf_02", "ntf_03", "ntf_04"}
    assert await store.purge_delivered_notifications(T0 + 5 * day) == 0
    assert await store.purge_delivered_notifications(T0 + 100 * day) == 1
    left = {n.id for n in await store.list_notifications(experiment_id="exp_1", limit=10)}
    assert left == {"ntf_03", "ntf_04"}
