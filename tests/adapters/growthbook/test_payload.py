"""The SDK payload export, one behaviour at a time: each reason a flag is left out (and its
twin that is written), the rollout boundary, what a payload document holds, and the cache
per snapshot version on a real engine. The differential test
(test_payload_differential.py) holds the written flags to GrowthBook's SDK at large."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from growthbook import GrowthBook, InMemoryStickyBucketService

import assay
from assay.adapters.growthbook import (
    REMOTE_ONLY_REASONS,
    SdkPayload,
    build_payload,
    import_growthbook,
    payload_document,
    sdk_payload,
)
from assay.adapters.growthbook.payload import _SDK_OPERATORS, _rollout_coverage
from assay.engine import SYSTEM_KEY, Engine, NotFound
from assay.engine._core import ConditionCompiler, Snapshot, compile_snapshot, decide
from assay.engine._core._bucketing import gb_hash
from assay.engine._model import (
    Experiment,
    ExperimentRule,
    ExperimentSpec,
    ExperimentStatus,
    Flag,
    FlagSpec,
    FlagType,
    ForcedVariation,
    ForceRule,
    HashFilter,
    LayerRange,
    ParentCondition,
    Prerequisite,
    Project,
    ProjectSpec,
    RolloutRule,
    Rule,
    Segment,
    SegmentSpec,
    Transition,
    Variant,
)
from assay.engine._ports import ConfigState
from assay.plugins._growthbook_operators import GROWTHBOOK_OPERATORS
from tests.adapters.growthbook.assay_projects import COMPILER, NOW, PID, PROJECT

# GrowthBook's SDK logs a warning for every missing parent and cycle it meets.
pytestmark = pytest.mark.usefixtures("quiet_growthbook_sdk")

VARIANTS = [Variant(key="control", value="a"), Variant(key="treatment", value="b")]


def flag(key: str, *rules: Rule, **fields: Any) -> Flag:
    return Flag(
        id=f"id-{key}",
        project_id=PID,
        key=key,
        type=FlagType.JSON,
        default_value=fields.pop("default", "off"),
        rules=list(rules),
        created_at=NOW,
        updated_at=NOW,
        **fields,
    )


def experiment(key: str, *, started: int = 1, **fields: Any) -> Experiment:
    fields.setdefault("variants", VARIANTS)
    return Experiment(
        id=f"id-{key}",
        project_id=PID,
        key=key,
        status=fields.pop("status", ExperimentStatus.RUNNING),
        started_at=datetime(2025, 1, started, tzinfo=UTC),
        created_at=NOW,
        updated_at=NOW,
        **fields,
    )


def segment(key: str, **fields: Any) -> Segment:
    return Segment(
        id=f"id-{key}", project_id=PID, key=key, created_at=NOW, updated_at=NOW, **fields
    )


def snapshot(
    flags: Sequence[Flag],
    experiments: Sequence[Experiment] = (),
    segments: Sequence[Segment] = (),
    compiler: ConditionCompiler = COMPILER,
) -> Snapshot:
    state = ConfigState(
        projects=[Project(id=PID, key=PROJECT, created_at=NOW, updated_at=NOW)],
        flags=list(flags),
        experiments=list(experiments),
        layers=[],
        metrics=[],
        segments=list(segments),
    )
    return compile_snapshot(state, 1, compiler)


def uses(key: str) -> ExperimentRule:
    return ExperimentRule(experiment=key)


def parent(key: str, **fields: Any) -> ParentCondition:
    return ParentCondition(flag=key, condition=fields.pop("condition", {}), **fields)


PLUGIN = {"country": {"$startsWith": "F"}}

# reason -> (flags, experiments, segments, the flag left out for it); every flag else in
# the case is the twin that differs only where it matters, and must be written.
CASES: dict[str, tuple[list[Flag], list[Experiment], list[Segment], str]] = {
    "plugin_operator": (
        [
            flag("out", ForceRule(condition=PLUGIN, value="on")),
            flag("via-segment", ForceRule(condition={"$savedGroup": {"id": "fr"}}, value="on")),
            flag("in", ForceRule(condition={"country": "FR"}, value="on")),
        ],
        [],
        [segment("fr", type="condition", condition=PLUGIN)],
        "out",
    ),
    "participation_limit": (
        [flag("first", uses("e1")), flag("out", uses("e2")), flag("in", uses("e0"))],
        [
            experiment("e0", participation_limit=1, started=1),  # no one before it
            experiment("e1", started=2),
            experiment("e2", participation_limit=1, started=3),
        ],
        [],
        "out",
    ),
    "fallback_attribute": (
        [
            flag("out", uses("e1")),
            flag("rollout", RolloutRule(value="on", hash_attribute="a.b", fallback_attribute="c")),
            flag("in", uses("e2")),
            flag("sticky", uses("e3")),
        ],
        [
            # A condition would read "a.b" as a path: "has no hash value" cannot be said.
            experiment("e1", hash_attribute="user.id", fallback_attribute="deviceId"),
            # A second rule hashes the fallback for subjects without the hash attribute.
            experiment("e2", fallback_attribute="deviceId"),
            experiment("e3", fallback_attribute="deviceId", sticky_bucketing=True),
        ],
        [],
        "out",
    ),
    "holdout": (
        [flag("out", uses("e1")), flag("in", uses("e2")), flag("other", uses("e3"))],
        [
            experiment("h1", is_holdout=True),
            experiment("h2", is_holdout=True, hash_attribute="company"),
            # assay keeps a sticky experiment's stored assignments ahead of the holdout.
            experiment("e1", holdout="h1", sticky_bucketing=True),
            experiment("e2", holdout="h1", fallback_attribute="deviceId"),
            experiment("e3", holdout="h2"),
        ],
        [],
        "out",
    ),
    "forced_passthrough": (
        [flag("out", uses("e1")), flag("in", uses("e2"))],
        [
            experiment(
                key,
                variants=[VARIANTS[0], Variant(key="treatment", value="b", passthrough=True)],
                forced_variations=[ForcedVariation(variant=variant, values=["u1"])],
            )
            for key, variant in (("e1", "treatment"), ("e2", "control"))
        ],
        [],
        "out",
    ),
    "forced_attribute_path": (
        [flag("out", uses("e1")), flag("in", uses("e2"))],
        [
            experiment(
                key,
                forced_variations=[ForcedVariation(variant="control", attribute=a, values=[1])],
            )
            for key, a in (("e1", "user.id"), ("e2", "user_id"))
        ],
        [],
        "out",
    ),
    "namespace_with_filters": (
        [flag("out", uses("e1")), flag("in", uses("e2"))],
        [
            experiment(
                key,
                layer=LayerRange(layer="ns", start=0.0, end=0.5),
                filters=[HashFilter(seed="x", ranges=[(0.0, 0.7)])],
                sticky_bucketing=sticky,
            )
            for key, sticky in (("e1", True), ("e2", False))
        ],
        [],
        "out",
    ),
    "sticky_passthrough": (
        [flag("out", uses("e1")), flag("in", uses("e2"))],
        [
            experiment(
                key,
                variants=[VARIANTS[0], Variant(key="treatment", value="b", passthrough=True)],
                sticky_bucketing=sticky,
            )
            for key, sticky in (("e1", True), ("e2", False))
        ],
        [],
        "out",
    ),
    "sticky_condition": (
        [flag("out", uses("e1")), flag("in", uses("e2"))],
        [
            experiment("e1", sticky_bucketing=True, condition={"country": "FR"}),
            experiment("e2", sticky_bucketing=True),
        ],
        [],
        "out",
    ),
    "sticky_parent": (
        [
            flag("sticky", uses("e1")),
            flag("plain", uses("e2")),
            flag("out", ForceRule(value="on", parent_conditions=[parent("sticky")])),
            flag("in", ForceRule(value="on", parent_conditions=[parent("plain")])),
        ],
        [experiment("e1", sticky_bucketing=True), experiment("e2")],
        [],
        "out",
    ),
    "null_value": (
        [flag("out", ForceRule(value=None)), flag("in", ForceRule(value="on"))],
        [],
        [],
        "out",
    ),
    "prerequisite_value": (
        [
            flag("p", ForceRule(value=[1])),
            flag("out", ForceRule(value="on"), prerequisites=[Prerequisite(flag="p", value=[1])]),
            flag("in", ForceRule(value="on"), prerequisites=[Prerequisite(flag="p", value="x")]),
        ],
        [],
        [],
        "out",
    ),
    "prerequisite_cycle": (
        [
            flag("b", ForceRule(value="on", parent_conditions=[parent("c")])),
            flag("c", ForceRule(value="on", parent_conditions=[parent("b")])),
            flag("d", ForceRule(value="on")),
            flag("out", prerequisites=[Prerequisite(flag="b", value="on")]),
            flag("in", prerequisites=[Prerequisite(flag="d", value="on")]),
        ],
        [],
        [],
        "out",
    ),
    "compile_error": (
        [
            flag("out", ForceRule(condition={"x": {"$gt": {"bad": 1}}}, value="on")),
            flag("in", ForceRule(condition={"x": {"$gt": 1}}, value="on")),
        ],
        [],
        [],
        "out",
    ),
    "dependency_remote_only": (
        [
            flag("null", ForceRule(value=None)),
            flag("fine", ForceRule(value="on")),
            flag("out", ForceRule(value="on", parent_conditions=[parent("null")])),
            flag("in", ForceRule(value="on", parent_conditions=[parent("fine")])),
        ],
        [],
        [],
        "out",
    ),
}


def test_every_reason_is_documented_and_built_here() -> None:
    assert set(CASES) == set(REMOTE_ONLY_REASONS)
    with open("docs/growthbook.md", encoding="utf-8") as doc:
        text = doc.read()
    for code in REMOTE_ONLY_REASONS:
        assert f"`{code}`" in text, code


@pytest.mark.parametrize("reason", sorted(CASES))
def test_a_flag_is_remote_only_exactly_for_its_reason(reason: str) -> None:
    flags, experiments, segments, out = CASES[reason]
    snap = snapshot(flags, experiments, segments)
    payload = build_payload(snap, PROJECT)
    assert payload.remote_only.get(out) == reason, payload.remote_only
    assert out not in payload.features
    if reason == "fallback_attribute":
        assert payload.remote_only["rollout"] == reason
    # The twins are written, and the SDK decides them as decide does.
    assert "in" in payload.features, payload.remote_only
    gb = GrowthBook(
        features=payload.features,
        saved_groups=payload.saved_groups,
        # Sticky experiments are exact with a sticky bucket service (each subject is new).
        sticky_bucket_service=InMemoryStickyBucketService(),
    )
    for attrs in subjects():
        gb.set_attributes(attrs)
        for key in payload.features:
            got = decide(snap, PID, key, "s", attrs)
            expected = gb.eval_feature(key)
            assert msgspec.json.encode(got.value) == msgspec.json.encode(expected.value)
            assert got.in_experiment == bool(
                expected.experimentResult and expected.experimentResult.inExperiment
            )


def subjects() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, c in zip(range(300), itertools.cycle(["FR", "DE", None]), strict=False):
        attrs = {"id": f"u{i}" if i % 5 else "", "country": c, "deviceId": f"d{i}"}
        if i % 4:
            attrs["company"] = f"c{i % 7}"
        if i % 3:
            attrs["user_id"] = i % 3
        out.append(attrs)
    return out


# --- the parts of a payload -----------------------------------------------------------


def test_rollout_coverage_includes_what_assay_includes() -> None:
    # assay: hash <= coverage; GrowthBook: hash < coverage.
    assert _rollout_coverage(0.5, 2) == 0.50005
    assert _rollout_coverage(0.5, 1) == 0.5005
    assert _rollout_coverage(0.12345678, 2) == 0.12345
    assert _rollout_coverage(0.0, 2) == 0.0
    assert _rollout_coverage(1.0, 1) == 1.0
    # A subject hashing exactly on the coverage is in, in both.
    subject = next(f"u{i}" for i in range(100_000) if gb_hash("r", f"u{i}", 2) == 0.5)
    snap = snapshot([flag("r", RolloutRule(coverage=0.5, value="on"))])
    payload = build_payload(snap, PROJECT)
    assert decide(snap, PID, "r", subject).value == "on"
    gb = GrowthBook(features=payload.features, attributes={"id": subject})
    assert gb.eval_feature("r").value == "on"


def test_off_flags_and_failed_prerequisites_serve_the_default_to_everyone() -> None:
    snap = snapshot(
        [
            flag("off", ForceRule(value="on"), enabled=False),
            flag("orphan", ForceRule(value="on"), prerequisites=[Prerequisite(flag="ghost")]),
            flag("child", ForceRule(value="on"), prerequisites=[Prerequisite(flag="off")]),
        ]
    )
    features = build_payload(snap, PROJECT).features
    assert features == {
        "off": {"defaultValue": "off"},
        "orphan": {"defaultValue": "off"},
        "child": {"defaultValue": "off"},
    }


def test_prerequisites_are_written_as_rules_before_the_flags_own() -> None:
    snap = snapshot(
        [
            flag("p", ForceRule(condition={"country": "FR"}, value=True), default=False),
            flag("gated", ForceRule(value="on"), prerequisites=[Prerequisite(flag="p")]),
            flag(
                "null", ForceRule(value="on"), default=None, prerequisites=[Prerequisite(flag="p")]
            ),
        ]
    )
    payload = build_payload(snap, PROJECT)
    assert payload.features["gated"]["rules"][0] == {
        "parentConditions": [{"id": "p", "condition": {"value": {"$not": {"$eq": True}}}}],
        "force": "off",
    }
    # With a null default, a gate (the SDKs skip ``force: null``).
    assert payload.features["null"]["rules"][0]["parentConditions"][0]["gate"] is True
    gb = GrowthBook(features=payload.features)
    for country in ("FR", "DE"):
        gb.set_attributes({"id": "u", "country": country})
        for key in ("gated", "null"):
            expected = decide(snap, PID, key, "u", {"country": country}).value
            assert gb.eval_feature(key).value == expected


def test_a_running_experiment_carries_everything_the_sdk_needs() -> None:
    snap = snapshot(
        [flag("f", ExperimentRule(id="exp", experiment="e"))],
        [
            experiment(
                "e",
                name="Checkout",
                variants=[
                    Variant(key="control", value="a", weight=1, name="Control"),
                    Variant(key="treatment", value="b", weight=3),
                ],
                coverage=0.5,
                condition={"country": "FR"},
                layer=LayerRange(layer="ns", start=0.2, end=0.8),
            )
        ],
    )
    rule = build_payload(snap, PROJECT).features["f"]["rules"][0]
    assert rule == {
        "id": "exp",
        "key": "e",
        "name": "Checkout",
        "condition": {"country": "FR"},
        "variations": ["a", "b"],
        "ranges": [[0.0, 0.125], [0.25, 0.625]],  # weights 1:3, half the traffic
        "seed": "e",
        "hashVersion": 2,
        "hashAttribute": "id",
        "namespace": ["ns", 0.2, 0.8],
        "meta": [{"key": "control", "name": "Control"}, {"key": "treatment"}],
        "disableStickyBucketing": True,
    }


def test_experiments_that_assign_no_one_leave_only_their_gates() -> None:
    snap = snapshot(
        [
            flag(
                "f",
                ExperimentRule(experiment="draft", parent_conditions=[parent("g", gate=True)]),
                ExperimentRule(experiment="paused"),
                ExperimentRule(experiment="missing"),
                ExperimentRule(experiment="back"),
            ),
            flag("g", ForceRule(value=True)),
        ],
        [
            experiment("draft", status=ExperimentStatus.DRAFT),
            experiment("paused", status=ExperimentStatus.PAUSED),
            experiment("back", status=ExperimentStatus.ROLLED_BACK),
        ],
    )
    rules = build_payload(snap, PROJECT).features["f"]["rules"]
    assert rules == [
        {"parentConditions": [{"id": "g", "condition": {}, "gate": True}]},
        {"force": "a"},  # rolled back: the control value to everyone
    ]


def test_only_the_segments_written_features_use_are_sent() -> None:
    snap = snapshot(
        [flag("f", ForceRule(condition={"$savedGroup": {"id": "either"}}, value="on"))],
        segments=[
            segment("ids", values=["u1"]),
            segment("either", type="condition", condition={"$savedGroup": {"id": "ids"}}),
            segment("unused", values=["u2"]),
        ],
    )
    groups = build_payload(snap, PROJECT).saved_groups
    assert groups == {
        "either": {"type": "condition", "condition": {"$savedGroup": {"id": "ids"}}},
        "ids": {"type": "list", "attributeKey": "id", "values": ["u1"]},
    }


def test_the_document_is_what_growthbook_sdks_download() -> None:
    snap = snapshot([flag("f", ForceRule(value="on"))])
    payload = build_payload(snap, PROJECT)
    document = payload_document(payload)
    assert document == {
        "status": 200,
        "features": {"f": {"defaultValue": "off", "rules": [{"force": "on"}]}},
        "experiments": [],
        "dateUpdated": "2025-01-01T00:00:00.000Z",
        "savedGroups": {},
    }
    assert msgspec.json.decode(msgspec.json.encode(document)) == document
    with pytest.raises(NotFound) as info:
        build_payload(snap, "nope")
    assert info.value.code == "project_not_found"


# --- on an engine ---------------------------------------------------------------------


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with assay.open_engine(
        assay.EngineConfig(store="memory"), load_entry_points=False
    ) as engine:
        service = engine.service
        for key in ("shop", "blog"):
            await service.create_project(SYSTEM_KEY, ProjectSpec(key=key))
            spec = FlagSpec(key="f", default_value=False, rules=[ForceRule(value=True)])
            await service.create_object(SYSTEM_KEY, Flag, key, spec)
        await engine.refresh()
        yield engine


async def test_built_once_per_snapshot_version_and_project(engine: Engine) -> None:
    first = sdk_payload(engine, "shop")
    assert isinstance(first, SdkPayload)
    assert first.version == engine.snapshot.version
    assert sdk_payload(engine, "shop") is first
    assert sdk_payload(engine, "blog") is not first
    spec = FlagSpec(key="g", type=FlagType.STRING, default_value="x")
    await engine.service.create_object(SYSTEM_KEY, Flag, "shop", spec)
    await engine.refresh()
    second = sdk_payload(engine, "shop")
    assert second.version > first.version
    assert set(second.features) == {"f", "g"}
    assert second.date_updated >= first.date_updated
    with pytest.raises(NotFound):
        sdk_payload(engine, "nope")


async def test_the_date_moves_whenever_the_content_does(engine: Engine) -> None:
    # SDKs keep the payload they hold while dateUpdated is the same.
    first = sdk_payload(engine, "shop")
    spec = FlagSpec(key="g", type=FlagType.STRING, default_value="x")
    await engine.service.create_object(SYSTEM_KEY, Flag, "shop", spec)
    await engine.refresh()
    second = sdk_payload(engine, "shop")
    # A deletion does not move the project's latest change; the date moves anyway.
    await engine.service.delete_object(SYSTEM_KEY, Flag, "shop", "g")
    await engine.refresh()
    third = sdk_payload(engine, "shop")
    assert third.features == first.features
    assert first.date_updated < second.date_updated < third.date_updated
    # A change elsewhere gives a new snapshot, and the same content keeps its date.
    await engine.service.create_object(SYSTEM_KEY, Flag, "blog", spec)
    await engine.refresh()
    fourth = sdk_payload(engine, "shop")
    assert fourth.version > third.version
    assert fourth.date_updated == third.date_updated


def test_the_operators_sent_are_growthbooks() -> None:
    # assay's built-in operators are GrowthBook's language: a condition using only them is
    # written; any other operator came from a plugin (``plugin_operator``).
    logical = {"$and", "$or", "$nor", "$savedGroup"}
    assert set(GROWTHBOOK_OPERATORS) | logical == _SDK_OPERATORS


async def test_an_engine_project_through_the_service_decides_as_the_sdk(engine: Engine) -> None:
    """The whole path: objects saved through the service (an imported GrowthBook payload
    beside assay's own holdout, forced variations, segment, prerequisite and fallback),
    the engine's snapshot, ``sdk_payload``, and ``engine.decide`` against the SDK."""
    from tests.adapters.growthbook.growthbook_payloads import PAYLOAD, subject

    service = engine.service
    await import_growthbook(service, SYSTEM_KEY, "shop", PAYLOAD)
    await service.create_object(
        SYSTEM_KEY, Segment, "shop", SegmentSpec(key="vip", values=["u1", "u7", "u42"])
    )
    variants = [Variant(key="control", value="a"), Variant(key="treatment", value="b")]
    holdout = ExperimentSpec(
        key="global-holdout",
        variants=[Variant(key="held", value="x"), Variant(key="general", value="y")],
        coverage=0.2,
        is_holdout=True,
    )
    native = ExperimentSpec(
        key="native",
        variants=variants,
        coverage=0.7,
        hash_attribute="deviceId",
        fallback_attribute="id",
        condition={"country": {"$in": ["FR", "DE", "US"]}},
        holdout="global-holdout",
        forced_variations=[ForcedVariation(variant="treatment", values=["u3", "u5"])],
    )
    for spec in (holdout, native):
        await service.create_object(SYSTEM_KEY, Experiment, "shop", spec)
        await service.transition_experiment(SYSTEM_KEY, "shop", spec.key, Transition.START)
    flags = [
        FlagSpec(
            key="native-flag",
            type=FlagType.STRING,
            default_value="off",
            rules=[
                ForceRule(condition={"id": {"$inGroup": "vip"}}, value="vip"),
                ExperimentRule(experiment="native"),
                RolloutRule(coverage=0.5, value="half", hash_attribute="company"),
            ],
        ),
        FlagSpec(
            key="gated",
            type=FlagType.STRING,
            default_value="closed",
            prerequisites=[Prerequisite(flag="native-flag", value="b")],
            rules=[ForceRule(value="open")],
        ),
    ]
    for spec in flags:
        await service.create_object(SYSTEM_KEY, Flag, "shop", spec)
    await engine.refresh()

    payload = sdk_payload(engine, "shop")
    assert payload.remote_only == {}
    assert set(payload.features) == {*PAYLOAD["features"], "f", "native-flag", "gated"}
    assert "vip" in payload.saved_groups
    gb = GrowthBook(features=payload.features, saved_groups=payload.saved_groups)
    rng = random.Random(20261205)
    outcomes: dict[str, set[Any]] = {}
    for i in range(1500):
        sid, attrs = subject(rng, i)
        gb.set_attributes(attrs)
        for key in payload.features:
            got = engine.decide(key, sid, attrs, project="shop")
            expected = gb.eval_feature(key)
            er = expected.experimentResult
            in_gb = er is not None and er.inExperiment
            theirs = (
                msgspec.json.encode(expected.value),
                in_gb,
                expected.experiment.key if in_gb and expected.experiment else None,
                er.key if in_gb and er else None,
            )
            ours = (
                msgspec.json.encode(got.value),
                got.in_experiment,
                got.experiment if got.in_experiment else None,
                got.variant if got.in_experiment else None,
            )
            assert ours == theirs, (key, attrs, got, expected.to_dict())
            outcomes.setdefault(key, set()).add((got.reason, got.experiment))
    assert {
        ("forced", None),
        ("experiment_assigned", "native"),
        ("experiment_assigned", "global-holdout"),
        ("forced_variation", "native"),
    } <= outcomes["native-flag"], outcomes["native-flag"]
    assert {r for r, _ in outcomes["gated"]} == {"forced", "prerequisite_failed"}
