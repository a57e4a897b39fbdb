"""Sticky bucketing through a running engine, on both stores: assignments stored when made
(durably on the async path, written behind on the synchronous one), subjects kept in their
variant when weights, coverage or targeting change, a race between processes settled by the store
(the first assignment wins), versions that go down refused when saved."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import assay
from assay.engine import (
    SYSTEM_KEY,
    Conflict,
    Engine,
    EngineConfig,
    Experiment,
    ExperimentRule,
    ExperimentSpec,
    Flag,
    FlagSpec,
    ProjectSpec,
    Reason,
    Transition,
    ValidationFailed,
    Variant,
)
from assay.engine._core import StickyAssignment, decide

P = "shop"
SUBJECTS = [f"u{i}" for i in range(40)]


def config(store_dsn: str | None) -> EngineConfig:
    if store_dsn is None:
        return EngineConfig(store="memory")
    return EngineConfig(database_url=store_dsn)


@pytest.fixture
async def engine(store_dsn: str | None) -> AsyncIterator[Engine]:
    async with assay.open_engine(config(store_dsn)) as engine:
        service = engine.service
        await service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
        await service.create_object(
            SYSTEM_KEY,
            Experiment,
            P,
            ExperimentSpec(
                key="e",
                variants=[Variant(key="a", value="a"), Variant(key="b", value="b")],
                sticky_bucketing=True,
                fallback_attribute="device",
            ),
        )
        await service.create_object(
            SYSTEM_KEY,
            Flag,
            P,
            FlagSpec(
                key="f", type="string", default_value="-", rules=[ExperimentRule(experiment="e")]
            ),  # type: ignore[arg-type]
        )
        await service.transition_experiment(SYSTEM_KEY, P, "e", Transition.START)
        await engine.refresh()
        yield engine


async def change(engine: Engine, **patch: Any) -> None:
    await engine.service.update_object(SYSTEM_KEY, Experiment, P, "e", patch)
    await engine.refresh()


async def test_assignments_survive_weight_and_coverage_changes(engine: Engine) -> None:
    first = {s: await engine.adecide("f", s) for s in SUBJECTS}
    assert {d.reason for d in first.values()} == {Reason.EXPERIMENT_ASSIGNED}
    assert {d.variant for d in first.values()} == {"a", "b"}
    # Stored durably before adecide returned.
    stored = await engine.store.load_sticky_buckets(
        engine.project_id(P), [("id", s) for s in SUBJECTS]
    )
    assert stored == {("id", s): {"e__0": first[s].variant} for s in SUBJECTS}

    # Everyone to b, and half the traffic: the assigned stay where they were.
    variants = [{"key": "a", "value": "a", "weight": 0}, {"key": "b", "value": "b", "weight": 1}]
    await change(engine, variants=variants, coverage=0.5)
    again = {s: await engine.adecide("f", s) for s in SUBJECTS}
    assert {s: d.variant for s, d in again.items()} == {s: d.variant for s, d in first.items()}
    assert {d.reason for d in again.values()} == {Reason.STICKY_BUCKET}
    assert all(d.sticky_bucket is None for d in again.values())
    # A newcomer is bucketed with the new weights.
    newcomer = await engine.adecide("f", "someone-new", {"device": "d9"})
    assert newcomer.variant in ("b", None)

    # A new bucket version re-buckets; a minimum above the old version keeps the old out.
    await change(engine, bucket_version=1, min_bucket_version=1, coverage=1.0)
    blocked = await engine.adecide("f", "u0")
    assert (blocked.value, blocked.experiment_reason) == ("-", Reason.STICKY_BUCKET_BLOCKED)


@pytest.mark.usefixtures("decide_path")
async def test_assignments_survive_a_change_of_targeting(engine: Engine) -> None:
    """DESIGN: the subject keeps its variant even when targeting changes (the stored
    assignment is read before the condition, as GrowthBook's JavaScript SDK reads it)."""
    await change(engine, condition={"country": "FR"})
    fr = {"country": "FR"}
    first = {s: await engine.adecide("f", s, fr) for s in SUBJECTS[:10]}
    assert {d.reason for d in first.values()} == {Reason.EXPERIMENT_ASSIGNED}
    # The subjects' attributes change: async and sync paths keep them in.
    for s, d in first.items():
        kept = await engine.adecide("f", s, {"country": "DE"})
        assert (kept.variant, kept.reason, kept.sticky_bucket) == (
            d.variant,
            Reason.STICKY_BUCKET,
            None,
        )
        assert engine.decide("f", s, {"country": "DE"}).variant == d.variant
    # The experiment's targeting changes: they stay too, and newcomers who do not match
    # the new condition are out, with nothing stored.
    await change(engine, condition={"country": "DE"})
    for s, d in first.items():
        kept = await engine.adecide("f", s, fr)
        assert (kept.variant, kept.reason) == (d.variant, Reason.STICKY_BUCKET)
    newcomer = await engine.adecide("f", "someone-new", fr)
    assert (newcomer.value, newcomer.experiment_reason, newcomer.sticky_bucket) == (
        "-",
        Reason.TARGETING_MISMATCH,
        None,
    )
    stored = await engine.store.load_sticky_buckets(engine.project_id(P), [("id", "someone-new")])
    assert stored == {}


async def test_sync_decide_reads_the_cache_and_writes_behind(engine: Engine) -> None:
    project_id = engine.project_id(P)
    d = engine.decide("f", "", {"device": "d1"})  # no id: the fallback attribute buckets
    assert d.reason is Reason.EXPERIMENT_ASSIGNED
    assert d.sticky_bucket == StickyAssignment(
        attribute="device", value="d1", key="e__0", variant=d.variant or ""
    )
    # In process at once; in the store once written behind.
    assert engine.decide("f", "", {"device": "d1"}).reason is Reason.STICKY_BUCKET
    for _ in range(200):
        stored = await engine.store.load_sticky_buckets(project_id, [("device", "d1")])
        if stored:
            break
        await engine.refresh()  # yields to the writer
    assert stored == {("device", "d1"): {"e__0": d.variant}}

    # Documents passed by the caller are used as given.
    other = "b" if d.variant == "a" else "a"
    given = engine.decide("f", "", {"device": "d1"}, sticky={("device", "d1"): {"e__0": other}})
    assert (given.variant, given.reason) == (other, Reason.STICKY_BUCKET)


async def test_a_stored_assignment_from_another_process_wins(engine: Engine) -> None:
    project_id = engine.project_id(P)
    await engine.load_sticky_buckets([("u7", None)], project=P)  # cached: no document
    fresh = decide(engine.snapshot, project_id, "f", "u7", sticky={})  # no side effects
    theirs = "b" if fresh.variant == "a" else "a"
    # Another process assigns u7 first.
    await engine.store.save_sticky_buckets(
        project_id, [StickyAssignment(attribute="id", value="u7", key="e__0", variant=theirs)]
    )
    d = await engine.adecide("f", "u7")
    assert (d.variant, d.reason) == (theirs, Reason.STICKY_BUCKET)
    assert engine.decide("f", "u7").variant == theirs


async def test_bucket_versions_are_checked_when_saved(engine: Engine) -> None:
    await change(engine, bucket_version=2)
    with pytest.raises(Conflict) as info:
        await change(engine, bucket_version=1)
    assert info.value.code == "bucket_version_decreased"
    with pytest.raises(ValidationFailed) as vinfo:
        await change(engine, min_bucket_version=3)
    assert vinfo.value.code == "invalid_bucket_version"
    stored = await engine.service.get_object(SYSTEM_KEY, Experiment, P, "e")
    assert (stored.bucket_version, stored.min_bucket_version) == (2, 0)
    # Without sticky bucketing, weights stay frozen while running.
    await change(engine, sticky_bucketing=False)
    with pytest.raises(Conflict) as info:
        await change(
            engine, variants=[{"key": "a", "value": "a", "weight": 3}, {"key": "b", "value": "b"}]
        )
    assert info.value.code == "experiment_locked"


async def test_an_id_among_the_attributes_keys_the_documents(engine: Engine) -> None:
    # decide keeps an id given among the attributes (typed attributes); the documents
    # read before deciding must be that id's, not the subject's.
    project_id = engine.project_id(P)
    assert engine.sticky_keys(project_id, "subject", {"id": 42}) == [("id", "42")]
    first = await engine.adecide("f", "subject", {"id": 42})
    assert first.sticky_bucket == StickyAssignment(
        attribute="id", value="42", key="e__0", variant=first.variant or ""
    )
    other = "b" if first.variant == "a" else "a"
    await engine.store.save_sticky_buckets(
        project_id, [StickyAssignment(attribute="id", value="77", key="e__0", variant=other)]
    )
    d = await engine.adecide("f", "someone-else", {"id": 77})
    assert (d.variant, d.reason) == (other, Reason.STICKY_BUCKET)
