"""Segments through a running engine, on both stores: created, changed and deleted through
the service with audit entries and revisions; used from conditions through ``$inGroup``,
``$notInGroup`` and ``$savedGroup``; compiled into the snapshot (a change reaches decide
without touching the flag, and misses the decision cache); bad references refused when
saved, never at decide time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
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
    ForceRule,
    ProjectSpec,
    Reason,
    Segment,
    SegmentSpec,
    Transition,
    ValidationFailed,
    Variant,
)
from assay.engine._model import ParentCondition

P = "shop"


@pytest.fixture
async def engine(store_dsn: str | None) -> AsyncIterator[Engine]:
    config = (
        EngineConfig(store="memory") if store_dsn is None else EngineConfig(database_url=store_dsn)
    )
    async with assay.open_engine(config) as engine:
        await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
        yield engine


async def create(engine: Engine, kind: Any, spec: Any) -> Any:
    return await engine.service.create_object(SYSTEM_KEY, kind, P, spec)


def force(condition: dict[str, Any], value: Any = True) -> FlagSpec:
    return FlagSpec(key="f", rules=[ForceRule(id="r", condition=condition, value=value)])


async def test_list_segment_decides_and_follows_changes(engine: Engine) -> None:
    await create(engine, Segment, SegmentSpec(key="beta", values=["u1", "u2"]))
    await create(engine, Flag, force({"id": {"$inGroup": "beta"}}))
    await engine.refresh()
    assert engine.decide("f", "u1").reason is Reason.FORCED
    assert engine.decide("f", "u3").reason is Reason.DEFAULT

    # Changing the segment changes the decision though the flag did not change (and the
    # decision cache, keyed by the flag's revision, does not serve the old answer).
    updated = await engine.service.update_object(SYSTEM_KEY, Segment, P, "beta", {"values": ["u3"]})
    assert updated.revision == 2
    await engine.refresh()
    assert engine.decide("f", "u1").reason is Reason.DEFAULT
    assert engine.decide("f", "u3").reason is Reason.FORCED

    page = await engine.service.list_audit(SYSTEM_KEY, P, resource_kind="segment")
    assert [e.action for e in page.items] == ["segment.update", "segment.create"]
    assert page.items[0].before["values"] == ["u1", "u2"]
    assert page.items[0].after["values"] == ["u3"]


async def test_not_in_group_and_saved_group_references(engine: Engine) -> None:
    await create(engine, Segment, SegmentSpec(key="staff", attribute="email", values=["a@x"]))
    await create(
        engine,
        Segment,
        SegmentSpec(
            key="eu-staff",
            type="condition",
            condition={"country": "DE", "$savedGroup": {"id": "staff"}},
        ),
    )
    await create(
        engine,
        Flag,
        FlagSpec(
            key="f",
            default_value="none",
            type="string",  # type: ignore[arg-type]
            rules=[
                ForceRule(condition={"$savedGroup": {"id": "eu-staff"}}, value="eu-staff"),
                ForceRule(condition={"email": {"$notInGroup": "staff"}}, value="outsider"),
            ],
        ),
    )
    await engine.refresh()
    assert engine.decide("f", "s", {"email": "a@x", "country": "DE"}).value == "eu-staff"
    assert engine.decide("f", "s", {"email": "a@x", "country": "FR"}).value == "none"
    assert engine.decide("f", "s", {"email": "b@x", "country": "DE"}).value == "outsider"


async def test_experiment_condition_uses_segment(engine: Engine) -> None:
    await create(engine, Segment, SegmentSpec(key="beta", values=["u1"]))
    await create(
        engine,
        Experiment,
        ExperimentSpec(
            key="e",
            variants=[Variant(key="a", value=False), Variant(key="b", value=True)],
            condition={"id": {"$inGroup": "beta"}},
        ),
    )
    await create(engine, Flag, FlagSpec(key="f", rules=[ExperimentRule(experiment="e")]))
    await engine.service.transition_experiment(SYSTEM_KEY, P, "e", Transition.START)
    await engine.refresh()
    assert engine.decide("f", "u1").reason is Reason.EXPERIMENT_ASSIGNED
    assert engine.decide("f", "u2").experiment_reason is Reason.TARGETING_MISMATCH


@pytest.mark.parametrize(
    ("condition", "code"),
    [
        ({"id": {"$inGroup": "nope"}}, "segment_not_found"),
        ({"$or": [{"id": {"$notInGroup": "nope"}}]}, "segment_not_found"),
        ({"$savedGroup": {"id": "nope"}}, "segment_not_found"),
        ({"$savedGroup": "cond"}, "invalid_segment_reference"),
        ({"id": {"$inGroup": "cond"}}, "segment_type_mismatch"),
    ],
)
async def test_bad_references_refused_when_saved(
    engine: Engine, condition: dict[str, Any], code: str
) -> None:
    await create(
        engine, Segment, SegmentSpec(key="cond", type="condition", condition={"country": "DE"})
    )
    with pytest.raises(ValidationFailed) as info:
        await create(engine, Flag, force(condition))
    assert info.value.code == code
    with pytest.raises(ValidationFailed) as info:
        await create(
            engine,
            Experiment,
            ExperimentSpec(key="e", variants=[Variant(key="a", value=1)], condition=condition),
        )
    assert info.value.code == code
    # Nothing half-written.
    page = await engine.service.list_objects(SYSTEM_KEY, Flag, P)
    assert page.items == []


async def test_segment_in_use_cannot_be_deleted_and_type_cannot_change(engine: Engine) -> None:
    await create(engine, Segment, SegmentSpec(key="beta", values=["u1"]))
    await create(
        engine,
        Segment,
        SegmentSpec(key="wrap", type="condition", condition={"id": {"$inGroup": "beta"}}),
    )
    with pytest.raises(Conflict) as info:
        await engine.service.delete_object(SYSTEM_KEY, Segment, P, "beta")
    assert info.value.code == "in_use"
    assert info.value.details == {"used_by": ["segment wrap"]}
    await create(engine, Flag, force({"$savedGroup": {"id": "wrap"}}))
    with pytest.raises(Conflict) as info:
        await engine.service.delete_object(SYSTEM_KEY, Segment, P, "wrap")
    assert info.value.details == {"used_by": ["flag f"]}
    with pytest.raises(ValidationFailed) as vinfo:
        await engine.service.update_object(SYSTEM_KEY, Segment, P, "beta", {"type": "condition"})
    assert vinfo.value.code == "immutable_field"

    await engine.service.delete_object(SYSTEM_KEY, Flag, P, "f")
    await engine.service.delete_object(SYSTEM_KEY, Segment, P, "wrap")
    await engine.service.delete_object(SYSTEM_KEY, Segment, P, "beta")
    assert (await engine.service.list_objects(SYSTEM_KEY, Segment, P)).items == []


async def test_parent_condition_segments_checked_when_saved_and_kept_from_deletion(
    engine: Engine,
) -> None:
    await create(engine, Flag, FlagSpec(key="parent", type="string", default_value="u1"))  # type: ignore[arg-type]

    def child(segment: str) -> FlagSpec:
        rule = ForceRule(
            value=True,
            parent_conditions=[
                ParentCondition(flag="parent", condition={"value": {"$inGroup": segment}})
            ],
        )
        return FlagSpec(key="child", rules=[rule])

    with pytest.raises(ValidationFailed) as info:
        await create(engine, Flag, child("beta"))
    assert info.value.code == "segment_not_found"
    assert info.value.details == {
        "field": "rules[0].parent_conditions[0].condition",
        "segment": "beta",
    }
    page = await engine.service.list_objects(SYSTEM_KEY, Flag, P)
    assert [f.key for f in page.items] == ["parent"]

    await create(engine, Segment, SegmentSpec(key="beta", values=["u1"]))
    await create(engine, Flag, child("beta"))
    await engine.refresh()
    assert engine.decide("child", "s").reason is Reason.FORCED

    # Used only from the parent condition, the segment cannot be deleted.
    with pytest.raises(Conflict) as conflict:
        await engine.service.delete_object(SYSTEM_KEY, Segment, P, "beta")
    assert conflict.value.code == "in_use"
    assert conflict.value.details == {"used_by": ["flag child"]}
    assert (await engine.service.get_object(SYSTEM_KEY, Segment, P, "beta")).revision == 1

    # An update naming a missing segment is refused too, and leaves the flag as it was.
    with pytest.raises(ValidationFailed) as info:
        await engine.service.update_object(
            SYSTEM_KEY, Flag, P, "child", {"rules": [msgspec.to_builtins(child("gone").rules[0])]}
        )
    assert info.value.code == "segment_not_found"
    assert (await engine.service.get_object(SYSTEM_KEY, Flag, P, "child")).revision == 1


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        (SegmentSpec(key="s", condition={"a": 1}), "invalid_segment"),
        (SegmentSpec(key="s", type="condition"), "invalid_segment"),
        (SegmentSpec(key="s", type="condition", values=[1], condition={"a": 1}), "invalid_segment"),
        (SegmentSpec(key="s", type="condition", condition={"a": {"$bad": 1}}), "unknown_operator"),
        (
            SegmentSpec(key="s", type="condition", condition={"$savedGroup": {"id": "s"}}),
            "segment_not_found",
        ),
    ],
)
async def test_invalid_segments_refused(engine: Engine, spec: SegmentSpec, code: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        await create(engine, Segment, spec)
    assert info.value.code == code


async def test_segment_cycle_refused(engine: Engine) -> None:
    await create(engine, Segment, SegmentSpec(key="a", type="condition", condition={"x": 1}))
    await create(
        engine,
        Segment,
        SegmentSpec(key="b", type="condition", condition={"$savedGroup": {"id": "a"}}),
    )
    with pytest.raises(ValidationFailed) as info:
        await engine.service.update_object(
            SYSTEM_KEY, Segment, P, "a", {"condition": {"$savedGroup": {"id": "b"}}}
        )
    assert info.value.code == "segment_cycle"
    stored = await engine.service.get_object(SYSTEM_KEY, Segment, P, "a")
    assert stored.revision == 1
