"""Deciding through a running engine: snapshots follow changes (also from another process),
records are written per mode, conditions are validated when saved, plugins supply
operators through their entry point."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import trio

import assay
from assay.engine import (
    SYSTEM_KEY,
    ActorCrashed,
    Decision,
    Engine,
    EngineConfig,
    Experiment,
    ExperimentRule,
    ExperimentSpec,
    Flag,
    FlagSpec,
    ForceRule,
    Ping,
    ProjectSpec,
    Reason,
    StoreUnavailable,
    Transition,
    ValidationFailed,
    Variant,
)

# Both decide paths, compiled and pure Python, must pass (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("decide_path")

P = "shop"


def same_record(stored: Decision | None, decision: Decision) -> bool:
    """PostgreSQL keeps microseconds; everything else round-trips exactly."""
    return (
        stored is not None
        and abs(stored.decided_at - decision.decided_at) < 1e-5
        and msgspec.structs.replace(stored, decided_at=decision.decided_at) == decision
    )


def config_for(store_dsn: str | None, **extra: Any) -> EngineConfig:
    if store_dsn is None:
        return EngineConfig(store="memory", **extra)
    return EngineConfig(database_url=store_dsn, **extra)


async def populate(engine: Engine) -> None:
    service = engine.service
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
    await service.create_object(
        SYSTEM_KEY,
        Experiment,
        P,
        ExperimentSpec(
            key="color-test",
            variants=[Variant(key="control", value="blue"), Variant(key="green", value="green")],
            condition={"country": {"$in": ["DE", "FR"]}},
        ),
    )
    await service.create_object(
        SYSTEM_KEY,
        Flag,
        P,
        FlagSpec(
            key="color",
            type="string",  # type: ignore[arg-type]
            default_value="blue",
            rules=[
                ForceRule(id="staff", condition={"staff": True}, value="red"),
                ExperimentRule(id="test", experiment="color-test"),
            ],
        ),
    )
    await service.transition_experiment(SYSTEM_KEY, P, "color-test", Transition.START)
    await engine.refresh()


@pytest.fixture
async def engine(store_dsn: str | None) -> AsyncIterator[Engine]:
    async with assay.open_engine(config_for(store_dsn)) as engine:
        await populate(engine)
        yield engine


async def test_decide_follows_the_rules(engine: Engine) -> None:
    forced = engine.decide("color", "u1", {"staff": True}, project=P)
    assert (forced.value, forced.reason, forced.rule) == ("red", Reason.FORCED, "staff")
    outside = engine.decide("color", "u1", {"country": "US"}, project=P)
    assert (outside.value, outside.reason) == ("blue", Reason.DEFAULT)
    assert outside.experiment_reason is Reason.TARGETING_MISMATCH
    inside = engine.decide("color", "u1", {"country": "DE"}, project=P)
    assert inside.reason is Reason.EXPERIMENT_ASSIGNED
    assert inside.variant in {"control", "green"}
    assert inside.value == {"control": "blue", "green": "green"}[inside.variant]
    missing = engine.decide("nope", "u1", project=P)
    assert (missing.value, missing.reason) == (None, Reason.FLAG_NOT_FOUND)


async def test_the_only_project_is_the_default(engine: Engine) -> None:
    assert engine.decide("color", "u1", {"staff": True}).reason is Reason.FORCED


async def test_a_cache_hit_is_the_same_outcome_with_a_new_id(engine: Engine) -> None:
    first = engine.decide("color", "u7", {"country": "FR"}, project=P)
    second = engine.decide("color", "u7", {"country": "FR"}, project=P)
    assert second.decision_id != first.decision_id
    assert (second.value, second.variant, second.reason) == (
        first.value,
        first.variant,
        first.reason,
    )
    assert engine.decision_cache.hits >= 1


async def test_decide_all_covers_every_flag(engine: Engine) -> None:
    decisions = engine.decide_all("u1", {"staff": True}, project=P)
    assert [d.flag for d in decisions] == ["color"]


async def test_an_assignment_is_durable_when_adecide_returns(engine: Engine) -> None:
    decision = await engine.adecide("color", "u2", {"country": "DE"}, project=P)
    assert decision.reason is Reason.EXPERIMENT_ASSIGNED
    stored = await engine.get_decision(decision.decision_id)
    assert same_record(stored, decision)


async def test_async_records_are_written_by_the_actor(engine: Engine) -> None:
    decision = engine.decide("color", "u3", {"country": "US"}, project=P)
    with trio.fail_after(5):
        while await engine.get_decision(decision.decision_id) is None:  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert engine.decision_stats["records_written"] >= 1


async def test_records_are_flushed_when_the_engine_closes(store_dsn: str | None) -> None:
    async with assay.open_engine(config_for(store_dsn)) as engine:
        await populate(engine)
        for i in range(200):
            engine.decide("color", f"s{i}", {"country": "US"})
    # Every queued record was written during shutdown, before the store closed.
    assert engine.decision_stats["records_written"] == 200
    assert engine.decision_stats["records_dropped"] == 0


async def test_disabled_records_write_nothing(store_dsn: str | None) -> None:
    async with assay.open_engine(config_for(store_dsn, decision_records="disabled")) as engine:
        await populate(engine)
        decision = await engine.adecide("color", "u2", {"country": "DE"})
        assert decision.reason is Reason.EXPERIMENT_ASSIGNED
        assert await engine.get_decision(decision.decision_id) is None
        assert engine.decision_stats["records_written"] == 0


async def test_sync_records_every_decision_before_returning(store_dsn: str | None) -> None:
    async with assay.open_engine(config_for(store_dsn, decision_records="sync")) as engine:
        await populate(engine)
        decision = await engine.adecide("color", "u2", {"country": "US"})
        assert decision.reason is Reason.DEFAULT
        assert same_record(await engine.get_decision(decision.decision_id), decision)


@pytest.mark.parametrize(
    ("condition", "code"),
    [
        ({"country": {"$bogus": 1}}, "unknown_operator"),
        ({"name": {"$regex": "(a)\\1"}}, "unsafe_regex"),
        ({"name": {"$regex": "[unclosed"}}, "invalid_regex"),
        ({"age": {"$in": 5}}, "invalid_operator_argument"),
    ],
)
async def test_conditions_are_checked_when_saved(
    engine: Engine, condition: dict[str, Any], code: str
) -> None:
    with pytest.raises(ValidationFailed) as info:
        await engine.service.create_object(
            SYSTEM_KEY,
            Flag,
            P,
            FlagSpec(key="bad", rules=[ForceRule(condition=condition, value=True)]),
        )
    assert info.value.code == code
    assert info.value.details is not None
    assert info.value.details["field"] == "rules[0].condition"


async def test_an_entry_point_plugin_supplies_an_operator(engine: Engine) -> None:
    """``$endsWith`` exists only in the separate test plugin package, which is registered
    solely through its ``assay.plugins`` entry point."""
    await engine.service.create_object(
        SYSTEM_KEY,
        Flag,
        P,
        FlagSpec(
            key="corp",
            rules=[ForceRule(condition={"email": {"$endsWith": "@corp.example"}}, value=True)],
        ),
    )
    await engine.refresh()
    assert engine.decide("corp", "u1", {"email": "a@corp.example"}).reason is Reason.FORCED
    assert engine.decide("corp", "u1", {"email": "a@else.example"}).reason is Reason.DEFAULT
    # Its argument checks run when the rule is saved.
    with pytest.raises(ValidationFailed) as info:
        await engine.service.update_object(
            SYSTEM_KEY,
            Flag,
            P,
            "corp",
            {"rules": [{"type": "force", "condition": {"email": {"$endsWith": 3}}, "value": True}]},
        )
    assert info.value.code == "invalid_operator_argument"


async def test_without_entry_points_the_plugin_operator_is_unknown() -> None:
    async with assay.open_engine(EngineConfig(store="memory"), load_entry_points=False) as engine:
        await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
        with pytest.raises(ValidationFailed) as info:
            await engine.service.create_object(
                SYSTEM_KEY,
                Flag,
                P,
                FlagSpec(
                    key="corp", rules=[ForceRule(condition={"e": {"$endsWith": "x"}}, value=True)]
                ),
            )
        assert info.value.code == "unknown_operator"


async def test_two_engines_on_one_database_converge(pg_dsn: str) -> None:
    config = EngineConfig(database_url=pg_dsn)
    async with assay.open_engine(config) as a, assay.open_engine(config) as b:
        await populate(a)
        # B learns of A's changes through LISTEN/NOTIFY, not by being told.
        with trio.fail_after(1.0):
            while b.decide("color", "u1", {"staff": True}, project=P).reason is not Reason.FORCED:  # noqa: ASYNC110
                await trio.sleep(0.01)
        await a.service.transition_experiment(SYSTEM_KEY, P, "color-test", Transition.PAUSE)
        with trio.fail_after(1.0):
            while (  # noqa: ASYNC110
                b.decide("color", "u1", {"country": "DE"}, project=P).experiment_reason
                is not Reason.EXPERIMENT_NOT_RUNNING
            ):
                await trio.sleep(0.01)
        assert a.snapshot.flags.keys() == b.snapshot.flags.keys()


async def test_assignments_log_exposures_when_the_experiment_asks(engine: Engine) -> None:
    await engine.service.update_object(
        SYSTEM_KEY, Experiment, P, "color-test", {"log_exposures_on_assignment": True}
    )
    await engine.refresh()
    assigned = [engine.decide("color", f"u{i}", {"country": "DE"}, project=P) for i in range(50)]
    assert all(d.reason is Reason.EXPERIMENT_ASSIGNED for d in assigned)
    # The same subjects again: first exposure wins, nothing is counted twice.
    for i in range(50):
        engine.decide("color", f"u{i}", {"country": "DE"}, project=P)
    with trio.fail_after(5):
        while (await engine.ingestion_summary(P, "color-test")).exposures < 50:  # noqa: ASYNC110
            await trio.sleep(0.02)
    summary = await engine.ingestion_summary(P, "color-test")
    assert summary.exposures == 50
    assert summary.crossovers == 0
    by_variant = {v.variant: v.exposures for v in summary.variants}
    expected = {"control": 0, "green": 0}
    for d in assigned:
        expected[d.variant or ""] += 1
    assert by_variant == expected


async def test_no_exposures_are_logged_unless_asked(engine: Engine) -> None:
    for i in range(20):
        await engine.adecide("color", f"u{i}", {"country": "DE"}, project=P)
    await engine.ingestion.request(Ping())  # anything queued before this has been handled
    assert (await engine.ingestion_summary(P, "color-test")).exposures == 0


async def test_durable_records_gather_between_writes(store_dsn: str | None) -> None:
    config = config_for(
        store_dsn, decision_records_write_interval_seconds=0.2, decision_cache_size=0
    )
    async with assay.open_engine(config) as engine:
        await populate(engine)
        decided: list[Any] = []

        async def assign(i: int) -> None:
            decided.append(await engine.adecide("color", f"g{i}", {"country": "DE"}, project=P))

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(assign, i)
        assert all(d.reason is Reason.EXPERIMENT_ASSIGNED for d in decided)
        # Fifty callers, one (or, if the first arrived alone, two) writes, and every
        # record durable when its caller returned.
        assert engine.decision_stats["record_batches"] <= 2
        assert engine.decision_stats["records_written"] == 50
        for d in decided:
            assert same_record(await engine.get_decision(d.decision_id), d)


@pytest.mark.parametrize("interval", ["-0.001", "2"])
def test_the_write_interval_is_bounded(interval: str) -> None:
    variable = "ASSAY_DECISION_RECORDS_WRITE_INTERVAL_SECONDS"
    with pytest.raises(ValidationFailed) as info:
        EngineConfig.load(env={variable: interval})
    assert info.value.message == f"{variable}: expected a number from 0 to 1, got {interval!r}"


async def test_a_failed_record_write_is_written_again_and_its_caller_answered() -> None:
    async with assay.open_engine(config_for(None, decision_cache_size=0)) as engine:
        await populate(engine)
        store: Any = engine.store
        real = store.record_decisions
        failures = [StoreUnavailable("connection lost")]
        calls: list[bool] = []

        async def flaky(decisions: Any, *, again: bool = False) -> None:
            calls.append(again)
            if failures:
                raise failures.pop()
            await real(decisions, again=again)

        store.record_decisions = flaky
        with trio.fail_after(5):
            decision = await engine.adecide("color", "f1", {"country": "DE"}, project=P)
        # The second attempt says it is one: records it finds already there are skipped.
        assert calls == [False, True]
        assert same_record(await engine.get_decision(decision.decision_id), decision)


async def test_while_writes_keep_failing_durable_callers_get_store_unavailable() -> None:
    async with assay.open_engine(config_for(None, decision_cache_size=0)) as engine:
        await populate(engine)
        store: Any = engine.store
        real = store.record_decisions
        down = [True]

        async def outage(decisions: Any, *, again: bool = False) -> None:
            if down[0]:
                raise StoreUnavailable("the database is away")
            await real(decisions, again=again)

        store.record_decisions = outage
        # A fire-and-forget record waits for the database; the durable caller is told.
        queued = engine.decide("color", "q1", {"country": "US"}, project=P)
        with trio.fail_after(5), pytest.raises(StoreUnavailable):
            await engine.adecide("color", "f1", {"country": "DE"}, project=P)
        down[0] = False
        with trio.fail_after(5):
            # Durable callers are refused until the writer's back-off ends; the kept
            # record is written by the first attempt after it.
            while await engine.get_decision(queued.decision_id) is None:  # noqa: ASYNC110
                await trio.sleep(0.01)
            decision = await engine.adecide("color", "f2", {"country": "DE"}, project=P)
        assert same_record(await engine.get_decision(decision.decision_id), decision)
        assert same_record(await engine.get_decision(queued.decision_id), queued)
        assert engine.decision_stats["records_dropped"] == 0


async def test_a_durable_caller_arriving_during_the_back_off_is_refused_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Virtual time: the writer's back-off is skipped over, and current_time() says how
    # long each caller waited; the attempts say whether it waited for another write.
    async with assay.open_engine(config_for(None, decision_cache_size=0)) as engine:
        await populate(engine)
        store: Any = engine.store
        real = store.record_decisions
        down = [True]
        attempts: list[int] = []

        async def outage(decisions: Any, *, again: bool = False) -> None:
            attempts.append(len(decisions))
            if down[0]:
                raise StoreUnavailable("the database is away")
            await real(decisions, again=again)

        store.record_decisions = outage
        # A fire-and-forget record keeps the writer retrying; the first durable caller
        # waits for the immediate retries and is told.
        queued = engine.decide("color", "q1", {"country": "US"}, project=P)
        with trio.fail_after(5), pytest.raises(StoreUnavailable):
            await engine.adecide("color", "f1", {"country": "DE"}, project=P)
        tried = len(attempts)
        # The writer now backs off (0.4 s and more): the next durable caller is answered
        # without waiting for the next attempt, and its record is not queued.
        started = trio.current_time()
        with trio.fail_after(5), pytest.raises(StoreUnavailable):
            await engine.adecide("color", "f2", {"country": "DE"}, project=P)
        assert trio.current_time() == started
        assert len(attempts) == tried
        # The database returns: the kept fire-and-forget record is written after the
        # back-off, and a durable write succeeds at its first attempt.
        down[0] = False
        await trio.sleep(5)
        assert same_record(await engine.get_decision(queued.decision_id), queued)
        tried = len(attempts)
        started = trio.current_time()
        decision = await engine.adecide("color", "f3", {"country": "DE"}, project=P)
        assert trio.current_time() == started
        assert attempts[tried:] == [1]
        assert same_record(await engine.get_decision(decision.decision_id), decision)
        assert engine.decision_stats["records_dropped"] == 0
        assert engine.decision_stats["records_written"] == 2  # q1 and f3; f1, f2 refused


async def test_a_record_the_store_refuses_fails_only_its_own_caller() -> None:
    async with assay.open_engine(
        config_for(None, decision_cache_size=0, decision_records_write_interval_seconds=0.2)
    ) as engine:
        await populate(engine)
        store: Any = engine.store
        real = store.record_decisions

        async def picky(decisions: Any, *, again: bool = False) -> None:
            if any(d.subject == "poison" for d in decisions):
                raise RuntimeError("refused")
            await real(decisions, again=again)

        store.record_decisions = picky
        outcomes: dict[str, Any] = {}

        async def assign(subject: str) -> None:
            try:
                outcomes[subject] = await engine.adecide(
                    "color", subject, {"country": "DE"}, project=P
                )
            except ActorCrashed as exc:
                outcomes[subject] = exc

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for subject in ["a", "b", "poison", "c", "d", "e"]:
                    nursery.start_soon(assign, subject)
        assert isinstance(outcomes.pop("poison"), ActorCrashed)
        for decision in outcomes.values():
            assert isinstance(decision, Decision)
            assert same_record(await engine.get_decision(decision.decision_id), decision)


async def test_durable_records_are_refused_once_the_engine_is_closed() -> None:
    async with assay.open_engine(config_for(None)) as engine:
        await populate(engine)
        decision = engine.decide("color", "c1", {"country": "DE"}, project=P)
    assert decision.reason is Reason.EXPERIMENT_ASSIGNED
    with trio.fail_after(5), pytest.raises(ActorCrashed, match="closed"):
        await engine.record_decisions([decision])


async def test_a_write_waits_for_the_interval_only_after_a_recent_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Virtual time: each sleep is skipped over, and current_time() says how long it was.
    config = config_for(None, decision_records_write_interval_seconds=1.0, decision_cache_size=0)
    async with assay.open_engine(config) as engine:
        await populate(engine)
        await trio.sleep(5)  # idle: no write for longer than the interval

        async def durable(subject: str) -> float:
            started = trio.current_time()
            decision = await engine.adecide("color", subject, {"country": "DE"}, project=P)
            assert decision.reason is Reason.EXPERIMENT_ASSIGNED
            return trio.current_time() - started

        assert await durable("w1") < 0.5  # written at once
        assert await durable("w2") >= 0.5  # the last write started just now: it waits
        await trio.sleep(5)
        assert await durable("w3") < 0.5
