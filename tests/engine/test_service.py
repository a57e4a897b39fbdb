"""The configuration service against both stores: validation codes, revisions, audit
entries and the invariants that span objects. Failed writes leave nothing behind."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from assay.engine import (
    SYSTEM_KEY,
    ConfigService,
    Conflict,
    Experiment,
    ExperimentSpec,
    Flag,
    FlagSpec,
    FlagType,
    Layer,
    LayerSpec,
    Metric,
    MetricSpec,
    NotFound,
    PermissionDenied,
    ProjectSpec,
    Role,
    Store,
    Transition,
    Unauthenticated,
    ValidationFailed,
)
from assay.engine._core import ConditionCompiler
from assay.engine._model import (
    ExperimentRule,
    ForcedVariation,
    ForceRule,
    HashFilter,
    LayerRange,
    ParentCondition,
    Prerequisite,
    RolloutRule,
    Variant,
)
from assay.engine._plugins import condition_validator
from assay.plugins._growthbook_operators import GROWTHBOOK_OPERATORS

P = "shop"


@pytest.fixture
async def service(store: Store) -> ConfigService:
    service = ConfigService(store)
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
    return service


async def audit_actions(service: ConfigService) -> list[str]:
    page = await service.list_audit(SYSTEM_KEY, P, limit=500)
    return [e.action for e in page.items]


def two_variants(**extra: Any) -> ExperimentSpec:
    return ExperimentSpec(
        key=extra.pop("key", "exp"),
        variants=[Variant(key="control", value=False), Variant(key="treatment", value=True)],
        **extra,
    )


async def test_create_update_bumps_revision_and_audits_before_and_after(
    service: ConfigService,
) -> None:
    flag = await service.create_object(SYSTEM_KEY, Flag, P, FlagSpec(key="f"))
    assert flag.revision == 1
    updated = await service.update_object(
        SYSTEM_KEY, Flag, P, "f", {"description": "new"}, expected_revision=1
    )
    assert updated.revision == 2
    assert updated.description == "new"
    assert updated.created_at == flag.created_at
    page = await service.list_audit(SYSTEM_KEY, P, resource_kind="flag", resource_key="f")
    newest = page.items[0]
    assert newest.action == "flag.update"
    assert newest.actor == SYSTEM_KEY.id
    assert newest.before["description"] == ""
    assert newest.after["description"] == "new"
    assert [e.action for e in page.items] == ["flag.update", "flag.create"]


async def test_stale_revision_is_a_conflict_and_changes_nothing(service: ConfigService) -> None:
    await service.create_object(SYSTEM_KEY, Flag, P, FlagSpec(key="f"))
    with pytest.raises(Conflict) as info:
        await service.update_object(
            SYSTEM_KEY, Flag, P, "f", {"enabled": False}, expected_revision=7
        )
    assert info.value.code == "revision_mismatch"
    assert (await service.get_object(SYSTEM_KEY, Flag, P, "f")).enabled is True
    assert await audit_actions(service) == ["flag.create", "project.create"]


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        (FlagSpec(key="f", type=FlagType.NUMBER, default_value="x"), "value_type_mismatch"),
        (FlagSpec(key="bad key!"), "invalid_body"),
        (FlagSpec(key="f", rules=[ForceRule(value=1)]), "value_type_mismatch"),
        (FlagSpec(key="f", prerequisites=[Prerequisite(flag="nope")]), "unknown_reference"),
        (FlagSpec(key="f", prerequisites=[Prerequisite(flag="f")]), "prerequisite_cycle"),
        (FlagSpec(key="f", rules=[ExperimentRule(experiment="nope")]), "unknown_reference"),
        (
            FlagSpec(key="f", rules=[ForceRule(id="a", value=True), ForceRule(id="a", value=True)]),
            "duplicate_rule_id",
        ),
    ],
)
async def test_invalid_flags_are_refused_with_a_code(
    service: ConfigService, spec: FlagSpec, code: str
) -> None:
    with pytest.raises(ValidationFailed) as info:
        await service.create_object(SYSTEM_KEY, Flag, P, spec)
    assert info.value.code == code
    assert (await service.list_objects(SYSTEM_KEY, Flag, P)).items == []
    assert await audit_actions(service) == ["project.create"]


async def test_prerequisite_cycle_through_another_flag(service: ConfigService) -> None:
    await service.create_object(SYSTEM_KEY, Flag, P, FlagSpec(key="a"))
    await service.create_object(
        SYSTEM_KEY, Flag, P, FlagSpec(key="b", prerequisites=[Prerequisite(flag="a")])
    )
    with pytest.raises(ValidationFailed) as info:
        await service.update_object(
            SYSTEM_KEY, Flag, P, "a", {"prerequisites": [{"flag": "b", "value": True}]}
        )
    assert info.value.code == "prerequisite_cycle"


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        (
            ExperimentSpec(
                key="e", variants=[Variant(key="a", value=1), Variant(key="a", value=2)]
            ),
            "duplicate_variant",
        ),
        (
            ExperimentSpec(
                key="e",
                variants=[Variant(key="a", value=1, weight=0), Variant(key="b", value=2, weight=0)],
            ),
            "invalid_weights",
        ),
        (
            ExperimentSpec(key="e", layer=LayerRange(layer="nope", start=0, end=0.5)),
            "unknown_reference",
        ),
        (ExperimentSpec(key="e", primary_metrics=["nope"]), "unknown_reference"),
        (ExperimentSpec(key="e", holdout="nope"), "unknown_reference"),
        (ExperimentSpec(key="e", participation_limit=0), "invalid_body"),  # below its bound
    ],
)
async def test_invalid_experiments_are_refused_with_a_code(
    service: ConfigService, spec: ExperimentSpec, code: str
) -> None:
    with pytest.raises(ValidationFailed) as info:
        await service.create_object(SYSTEM_KEY, Experiment, P, spec)
    assert info.value.code == code
    assert (await service.list_objects(SYSTEM_KEY, Experiment, P)).items == []


def ranged(ranges: list[tuple[float, float]], **extra: Any) -> ExperimentSpec:
    return two_variants(ranges=ranges, **extra)


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        (ranged([(0.0, 0.6), (0.5, 1.0)]), "overlapping_ranges"),
        (ranged([(0.0, 0.5), (0.5, 1.5)]), "invalid_body"),  # leaves [0, 1]
        (two_variants(filters=[HashFilter(ranges=[(-0.1, 0.5)])]), "invalid_body"),
        (ranged([(0.1, 0.5), (0.5, 0.4)]), "invalid_range"),
        (ranged([(0.0, 0.5)]), "invalid_range"),  # one range per variant
        (two_variants(filters=[HashFilter(ranges=[(0.6, 0.2)])]), "invalid_range"),
        (two_variants(filters=[HashFilter(attribute="", ranges=[(0, 1)])]), "invalid_body"),
        (
            two_variants(forced_variations=[ForcedVariation(variant="nope", values=["u1"])]),
            "unknown_reference",
        ),
        (
            two_variants(
                forced_variations=[
                    ForcedVariation(variant="control", values=["u1", 7]),
                    ForcedVariation(variant="treatment", values=[7.0]),
                ]
            ),
            "duplicate_forced_value",
        ),
    ],
)
async def test_bad_rule_language_on_experiments_is_refused_when_saved(
    service: ConfigService, spec: ExperimentSpec, code: str
) -> None:
    with pytest.raises(ValidationFailed) as info:
        await service.create_object(SYSTEM_KEY, Experiment, P, spec)
    assert info.value.code == code
    assert (await service.list_objects(SYSTEM_KEY, Experiment, P)).items == []


async def test_rule_language_that_is_right_is_stored_as_given(service: ConfigService) -> None:
    spec = two_variants(
        ranges=[(0.5, 0.7), (0.1, 0.2)],  # gaps, not from 0, in any order
        filters=[HashFilter(attribute="company", seed="ns", hash_version=1, ranges=[(0, 0.5)])],
        forced_variations=[ForcedVariation(variant="treatment", values=["qa-1", 42, True])],
    )
    created = await service.create_object(SYSTEM_KEY, Experiment, P, spec)
    assert (created.ranges, created.filters, created.forced_variations) == (
        spec.ranges,
        spec.filters,
        spec.forced_variations,
    )
    gate = ParentCondition(flag="later", condition={"value": {"$eq": True}}, gate=True)
    flag = FlagSpec(
        key="f",
        type=FlagType.JSON,
        rules=[
            RolloutRule(value=1, range=(0.25, 0.5), parent_conditions=[gate]),
            ForceRule(value=2, filters=[HashFilter(ranges=[(0.0, 0.1)])]),
            ExperimentRule(experiment="exp"),
        ],
    )
    # A parent that does not exist (yet) reads null, as in GrowthBook: allowed.
    stored = await service.create_object(SYSTEM_KEY, Flag, P, flag)
    assert stored.rules == flag.rules


@pytest.mark.parametrize(
    ("rule", "code"),
    [
        (RolloutRule(value=True, range=(0.6, 0.5)), "invalid_range"),
        (ForceRule(value=True, filters=[HashFilter(ranges=[(0.5, 0.1)])]), "invalid_range"),
        (
            ForceRule(
                value=True,
                parent_conditions=[ParentCondition(flag="f", condition={"value": True})],
            ),
            "prerequisite_cycle",
        ),
        (
            ForceRule(
                value=True,
                parent_conditions=[ParentCondition(flag="p", condition={"value": {"$nope": 1}})],
            ),
            "unknown_operator",
        ),
    ],
)
async def test_bad_rule_language_on_flags_is_refused_when_saved(
    store: Store, rule: Any, code: str
) -> None:
    compiler = ConditionCompiler(GROWTHBOOK_OPERATORS)
    service = ConfigService(store, validate_condition=condition_validator(compiler))
    await service.create_project(SYSTEM_KEY, ProjectSpec(key=P))
    with pytest.raises(ValidationFailed) as info:
        await service.create_object(SYSTEM_KEY, Flag, P, FlagSpec(key="f", rules=[rule]))
    assert info.value.code == code
    assert (await service.list_objects(SYSTEM_KEY, Flag, P)).items == []


async def test_parent_condition_cycle_through_other_flags(service: ConfigService) -> None:
    def on(parent: str) -> FlagSpec:
        return FlagSpec(
            key="x",  # replaced below
            rules=[
                ForceRule(
                    value=True,
                    parent_conditions=[ParentCondition(flag=parent, condition={})],
                )
            ],
        )

    await service.create_object(SYSTEM_KEY, Flag, P, FlagSpec(key="a"))
    await service.create_object(SYSTEM_KEY, Flag, P, msgspec.structs.replace(on("a"), key="b"))
    # a -> (prerequisite) c -> (parent condition) b -> (parent condition) a
    await service.create_object(SYSTEM_KEY, Flag, P, msgspec.structs.replace(on("b"), key="c"))
    with pytest.raises(ValidationFailed) as info:
        await service.update_object(
            SYSTEM_KEY, Flag, P, "a", {"prerequisites": [{"flag": "c", "value": True}]}
        )
    assert info.value.code == "prerequisite_cycle"
    # A flag read by a parent condition cannot be deleted from under it.
    with pytest.raises(Conflict):
        await service.delete_object(SYSTEM_KEY, Flag, P, "a")


async def test_a_holdout_runs_beside_the_flags_experiment(service: ConfigService) -> None:
    holdout = ExperimentSpec(
        key="hold",
        variants=[
            Variant(key="held", value=False),
            Variant(key="rest", value=False, passthrough=True),
        ],
    )
    await service.create_object(SYSTEM_KEY, Experiment, P, holdout)
    await service.create_object(SYSTEM_KEY, Experiment, P, two_variants(key="a"))
    rules = [ExperimentRule(experiment="hold"), ExperimentRule(experiment="a")]
    await service.create_object(SYSTEM_KEY, Flag, P, FlagSpec(key="f", rules=rules))
    await service.transition_experiment(SYSTEM_KEY, P, "a", Transition.START)
    started = await service.transition_experiment(SYSTEM_KEY, P, "hold", Transition.START)
    assert started.status.value == "RUNNING"


async def test_layer_range_must_be_ordered(service: ConfigService) -> None:
    await service.create_object(SYSTEM_KEY, Layer, P, LayerSpec(key="l"))
    with pytest.raises(ValidationFailed) as info:
        await service.create_object(
            SYSTEM_KEY, Experiment, P, two_variants(layer=LayerRange(layer="l", start=0.5, end=0.5))
        )
    assert info.value.code == "invalid_range"


async def test_ratio_metric_needs_existing_parts(service: ConfigService) -> None:
    with pytest.raises(ValidationFailed) as info:
        await service.create_object(SYSTEM_KEY, Metric, P, MetricSpec(key="r", kind="ratio"))
    assert info.value.code == "missing_field"
    await service.create_object(SYSTEM_KEY, Metric, P, MetricSpec(key="rev", kind="mean"))
    with pytest.raises(ValidationFailed) as info:
        await service.create_object(
            SYSTEM_KEY,
            Metric,
            P,
            MetricSpec(key="r", kind="ratio", numerator="rev", denominator="x"),
        )
    assert info.value.code == "unknown_reference"


async def test_one_running_experiment_per_flag(service: ConfigService) -> None:
    await service.create_object(SYSTEM_KEY, Experiment, P, two_variants(key="a"))
    await service.create_object(SYSTEM_KEY, Experiment, P, two_variants(key="b"))
    await service.create_object(
        SYSTEM_KEY,
        Flag,
        P,
        FlagSpec(key="f", rules=[ExperimentRule(experiment="a"), ExperimentRule(experiment="b")]),
    )
    await service.transition_experiment(SYSTEM_KEY, P, "a", Transition.START)
    with pytest.raises(Conflict) as info:
        await service.transition_experiment(SYSTEM_KEY, P, "b", Transition.START)
    assert info.value.code == "flag_has_running_experiment"
    b = await service.get_object(SYSTEM_KEY, Experiment, P, "b")
    assert b.status.value == "DRAFT"
    # Once the first completes, the second may run.
    await service.transition_experiment(SYSTEM_KEY, P, "a", Transition.COMPLETE)
    started = await service.transition_experiment(SYSTEM_KEY, P, "b", Transition.START)
    assert started.status.value == "RUNNING"
    assert started.started_at is not None


async def test_overlapping_layer_ranges_cannot_both_run(service: ConfigService) -> None:
    await service.create_object(SYSTEM_KEY, Layer, P, LayerSpec(key="l"))
    for key, (start, end) in {"a": (0.0, 0.6), "b": (0.5, 1.0), "c": (0.6, 1.0)}.items():
        spec = two_variants(key=key, layer=LayerRange(layer="l", start=start, end=end))
        await service.create_object(SYSTEM_KEY, Experiment, P, spec)
    await service.transition_experiment(SYSTEM_KEY, P, "a", Transition.START)
    with pytest.raises(Conflict) as info:
        await service.transition_experiment(SYSTEM_KEY, P, "b", Transition.START)
    assert info.value.code == "layer_range_overlap"
    await service.transition_experiment(SYSTEM_KEY, P, "c", Transition.START)


async def test_assignment_fields_are_locked_after_start(service: ConfigService) -> None:
    await service.create_object(SYSTEM_KEY, Experiment, P, two_variants())
    await service.transition_experiment(SYSTEM_KEY, P, "exp", Transition.START)
    with pytest.raises(Conflict) as info:
        await service.update_object(SYSTEM_KEY, Experiment, P, "exp", {"seed": "other"})
    assert info.value.code == "experiment_locked"
    # Coverage may still be raised: it only adds subjects.
    raised = await service.update_object(SYSTEM_KEY, Experiment, P, "exp", {"coverage": 0.5})
    assert raised.coverage == 0.5
    await service.transition_experiment(SYSTEM_KEY, P, "exp", Transition.COMPLETE)
    with pytest.raises(Conflict):
        await service.update_object(SYSTEM_KEY, Experiment, P, "exp", {"name": "late"})


async def test_referenced_objects_cannot_be_deleted(service: ConfigService) -> None:
    await service.create_object(SYSTEM_KEY, Metric, P, MetricSpec(key="m"))
    await service.create_object(SYSTEM_KEY, Experiment, P, two_variants(primary_metrics=["m"]))
    await service.create_object(
        SYSTEM_KEY, Flag, P, FlagSpec(key="f", rules=[ExperimentRule(experiment="exp")])
    )
    for kind, key in ((Metric, "m"), (Experiment, "exp")):
        with pytest.raises(Conflict) as info:
            await service.delete_object(SYSTEM_KEY, kind, P, key)
        assert info.value.code == "in_use"
    await service.delete_object(SYSTEM_KEY, Flag, P, "f")
    await service.delete_object(SYSTEM_KEY, Experiment, P, "exp")
    await service.delete_object(SYSTEM_KEY, Metric, P, "m")
    assert (await audit_actions(service))[:3] == [
        "metric.delete",
        "experiment.delete",
        "flag.delete",
    ]


async def test_an_archived_project_refuses_writes(service: ConfigService) -> None:
    await service.set_project_archived(SYSTEM_KEY, P, True)
    with pytest.raises(Conflict) as info:
        await service.create_object(SYSTEM_KEY, Flag, P, FlagSpec(key="f"))
    assert info.value.code == "project_archived"
    await service.set_project_archived(SYSTEM_KEY, P, False)
    await service.create_object(SYSTEM_KEY, Flag, P, FlagSpec(key="f"))


async def test_keys_are_stored_hashed_and_scoped(service: ConfigService, store: Store) -> None:
    key, secret = await service.create_key(SYSTEM_KEY, role=Role.VIEWER, project=P)
    assert secret.startswith("assay_")
    assert secret not in key.secret_hash
    assert (await service.authenticate(secret)).id == key.id
    # A scoped key cannot see another project, nor create global keys.
    await service.create_project(SYSTEM_KEY, ProjectSpec(key="other"))
    with pytest.raises(NotFound):
        await service.list_objects(key, Flag, "other")
    with pytest.raises(PermissionDenied):
        await service.create_object(key, Flag, None, FlagSpec(key="x"))
    await service.revoke_key(SYSTEM_KEY, key.id)
    with pytest.raises(Unauthenticated):
        await service.authenticate(secret)
    with pytest.raises(Unauthenticated):
        await service.authenticate("assay_not-a-key")


async def test_bootstrap_key_is_created_once(store: Store) -> None:
    service = ConfigService(store)
    first = await service.ensure_bootstrap_key()
    assert first is not None
    assert first[0].role is Role.ADMIN
    assert await service.ensure_bootstrap_key() is None


async def test_keys_are_checked_against_their_last_reading_while_the_store_is_away(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the store is unavailable a key read before is taken as it was read (decide
    keeps answering); a key never read cannot be checked (StoreUnavailable, a 503); once
    the store is back, a key revoked meanwhile is refused within the cache's lifetime."""
    import time as time_module

    from assay.engine import StoreUnavailable, Unauthenticated
    from assay.engine import _api_keys as keys_module
    from assay.engine._model import Role

    clock = [time_module.monotonic()]
    monkeypatch.setattr(keys_module.time, "monotonic", lambda: clock[0])
    service = ConfigService(store)
    key, secret = await service.create_key(SYSTEM_KEY, role=Role.VIEWER, project=None)
    _, unseen = await service.create_key(SYSTEM_KEY, role=Role.VIEWER, project=None)
    assert (await service.authenticate(secret)).id == key.id

    real_lookup = store.get_key_by_hash

    async def away(secret_hash: str) -> Any:
        raise StoreUnavailable("the database is away")

    monkeypatch.setattr(store, "get_key_by_hash", away)
    clock[0] += 600  # far past the 2 s cache: the outage is what keeps it
    assert (await service.authenticate(secret)).id == key.id
    with pytest.raises(StoreUnavailable):
        await service.authenticate(unseen)
    clock[0] += keys_module.KEY_OUTAGE_SECONDS
    with pytest.raises(StoreUnavailable):  # past the staleness bound: not taken any more
        await service.authenticate(secret)

    # Back: the key was revoked meanwhile (by another node, say) and is refused.
    monkeypatch.setattr(store, "get_key_by_hash", real_lookup)
    await ConfigService(store).revoke_key(SYSTEM_KEY, key.id)
    with pytest.raises(Unauthenticated):
        await service.authenticate(secret)
