"""Differential test of the SDK payload export: GrowthBook's own Python SDK, evaluating the
payload ``build_payload`` writes, against ``decide`` on the snapshot it was written from.

Two sources of configuration, both seeded:

- **assay's own model**, from a seeded generator (``project``): flags with every rule kind
  (force, rollout by coverage, on exact hash multiples too, and by range, experiment rules),
  flag prerequisites (met, failed, on missing or disabled flags, expecting every JSON
  type), parent conditions with gates, missing parents and cycles, experiments in every
  status with relative weights, coverage, explicit ranges, seeds, hash versions, hash and
  fallback attributes, conditions, layers, filters, forced variations, passthrough
  variants, holdouts, participation limits and sticky bucketing, segments (list and
  condition) and a plugin operator;
- **GrowthBook payloads**, the import differential test's strategy, imported with
  ``convert_growthbook``, then exported again.

For every flag the payload carries, every subject: the value (type-exact), whether the
subject is in an experiment and the variant's key must be what the SDK evaluates. The SDK
runs with an ``InMemoryStickyBucketService`` (the exact setting for sticky experiments),
decide with the sticky documents its decisions ask to store. The round trip,
``convert_growthbook(payload_document(p))``, must decide as the original too. Flags left
out must be named in ``remote_only`` with a documented reason (each reason is built one by
one in test_payload.py).

The default run is seeded (about 100,000 flag-subject cases); ``-m slow`` runs ten times
as many projects.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from growthbook import GrowthBook, InMemoryStickyBucketService
from hypothesis import given, seed, settings

from assay.adapters.growthbook import (
    REMOTE_ONLY_REASONS,
    SdkPayload,
    build_payload,
    convert_growthbook,
    payload_document,
)
from assay.engine._core import ConditionCompiler, Reason, Snapshot, compile_snapshot, decide
from assay.engine._core._conditions import CompileContext, ValuePredicate
from assay.engine._model import (
    Experiment,
    ExperimentRule,
    ExperimentStatus,
    Flag,
    FlagType,
    ForcedVariation,
    ForceRule,
    HashFilter,
    Layer,
    LayerRange,
    ParentCondition,
    Prerequisite,
    Project,
    RolloutRule,
    Rule,
    Segment,
    Variant,
)
from assay.engine._ports import ConfigState
from assay.plugins._growthbook_operators import GROWTHBOOK_OPERATORS
from tests.adapters.growthbook.test_import_differential import (
    SETTINGS,
    attributes,
    payloads,
    snapshot_of,
)

NOW = datetime(2025, 1, 1, tzinfo=UTC)
PID = "p1"
PROJECT = "proj"


def _starts_with(argument: Any, ctx: CompileContext) -> ValuePredicate:
    prefix = str(argument)
    return lambda value: isinstance(value, str) and value.startswith(prefix)


# A plugin's operator: conditions using it must never reach the payload.
COMPILER = ConditionCompiler({**GROWTHBOOK_OPERATORS, "$startsWith": _starts_with})
FLAGS = [f"f{i}" for i in range(6)]
ATTRIBUTES = ["id", "deviceId", "company"]
SUBJECTS = 60
DEFAULT_PROJECTS = 300
DEFAULT_PAYLOADS = 60


@pytest.fixture(autouse=True)
def quiet_sdk() -> Iterator[None]:
    sdk = logging.getLogger("growthbook")
    level = sdk.level
    sdk.setLevel(logging.CRITICAL)
    yield
    sdk.setLevel(level)


# --- assay's own model, generated -----------------------------------------------------

# Guarded by ``$type`` where the Python SDK and the JavaScript semantics assay follows
# disagree (comparisons on mixed types; see the import differential test).
CONDITIONS: list[dict[str, Any]] = [
    {"country": "FR"},
    {"age": {"$type": "number", "$gt": 30}},
    {"id": {"$in": [123, 456, "u1", "a"]}},
    {"company": {"$exists": True}},
    {"country": {"$in": ["FR", "DE"]}, "age": {"$type": "number", "$lt": 50}},
    {"$or": [{"country": "US"}, {"tags": {"$elemMatch": {"$eq": "a"}}}]},
    {"$not": {"deviceId": {"$exists": True}}},
    {"id": {"$inGroup": "ids"}},
    {"company": {"$notInGroup": "ids"}},
    {"$savedGroup": {"id": "companies"}},
    {"$savedGroup": {"id": "fr-or-listed"}},
]
PLUGIN_CONDITION = {"country": {"$startsWith": "F"}}
PARENT_CONDITIONS: list[dict[str, Any]] = [
    {},
    {"value": {"$eq": True}},
    {"value": {"$ne": "a"}},
    {"value": {"$type": "number", "$gt": 0}},
    {"value": {"$exists": True}},
    {"value": {"$in": ["a", 1, True]}},
]
VALUE_POOLS: list[list[Any]] = [
    [True, False],
    ["a", "b", "c"],
    [0, 1, 2.5, -1],
    [True, "a", 1, {"x": [1]}],
]
COVERAGES = [0.0, 0.1, 0.25, 0.5, 0.5001, 0.9999, 1.0, 0.123456, 0.001]


class Gen:
    """One project of assay configuration, drawn from a seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.experiments: list[Experiment] = []
        self.pools: dict[str, list[Any]] = {k: rng.choice(VALUE_POOLS) for k in FLAGS}
        self.holdout: str | None = None
        self.sticky = rng.random() < 0.4

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def condition(self) -> dict[str, Any] | None:
        if self.chance(0.6):
            return None
        if self.chance(0.02):
            return dict(PLUGIN_CONDITION)
        return dict(self.rng.choice(CONDITIONS))

    def filters(self) -> list[HashFilter]:
        if self.chance(0.8):
            return []
        out = []
        for _ in range(self.rng.randint(1, 2)):
            a, b = sorted((self.rng.random(), self.rng.random()))
            out.append(
                HashFilter(
                    attribute=self.rng.choice(ATTRIBUTES),
                    seed=self.rng.choice(["", "ns-a"]),
                    hash_version=self.rng.choice([1, 2]),
                    ranges=[(round(a, 2), round(b, 2))],
                )
            )
        return out

    def parents(self, flag: str) -> list[ParentCondition]:
        if self.chance(0.85):
            return []
        return [
            ParentCondition(
                flag=self.rng.choice([*FLAGS, "ghost"]),
                condition=dict(self.rng.choice(PARENT_CONDITIONS)),
                gate=self.chance(0.3),
            )
            for _ in range(self.rng.randint(1, 2))
        ]

    def hashing(self) -> dict[str, Any]:
        return {
            "hash_attribute": self.rng.choice(ATTRIBUTES),
            "seed": self.rng.choice([None, "", "s1"]),
            "hash_version": self.rng.choice([1, 2]),
        }

    def value(self, flag: str) -> Any:
        if self.chance(0.005):
            return None
        return self.rng.choice(self.pools[flag])

    def experiment(self, flag: str, index: int) -> str:
        rng = self.rng
        key = f"e-{flag}-{index}"
        n = rng.choice([1, 2, 2, 3, 4]) if self.chance(0.97) else 0
        keys = ["control", "treatment", "third", "fourth"][:n]
        variants = [
            Variant(
                key=k,
                value=self.value(flag),
                weight=rng.choice([1.0, 1.0, 2.0, 0.5, 0.0]),
                name=k.title() if self.chance(0.5) else "",
                passthrough=self.chance(0.04),
            )
            for k in keys
        ]
        if variants and not any(v.weight for v in variants):
            variants[0] = msgspec.structs.replace(variants[0], weight=1.0)
        fields: dict[str, Any] = self.hashing()
        if self.chance(0.1):
            fields["fallback_attribute"] = rng.choice(ATTRIBUTES)
            fields["fallback_sticky_only"] = self.chance(0.5)
        if self.chance(0.2) and n:
            cuts = sorted(round(rng.random(), 3) for _ in range(2 * n))
            fields["ranges"] = [(cuts[2 * i], cuts[2 * i + 1]) for i in range(n)]
        if self.chance(0.2):
            start = round(rng.random(), 2)
            fields["layer"] = LayerRange(
                layer=rng.choice(["ns1", "ns2"]), start=start, end=min(1.0, start + 0.5)
            )
        if self.chance(0.15) and n:
            fields["forced_variations"] = [
                ForcedVariation(
                    variant=rng.choice(keys),
                    attribute=rng.choice(["id", "company"]),
                    values=rng.sample(["a", "b", "0", 123, 456, True, 1.5], 3),
                )
            ]
        if self.chance(0.05):
            fields["participation_limit"] = rng.choice([1, 2])
        sticky = self.sticky and self.chance(0.7)
        if self.holdout is not None and self.chance(0.1 if sticky else 0.3):
            fields["holdout"] = self.holdout
        if sticky:
            fields["sticky_bucketing"] = True
            fields["bucket_version"] = rng.randint(0, 2)
            fields["min_bucket_version"] = rng.randint(0, fields["bucket_version"])
        status = rng.choice(
            [ExperimentStatus.RUNNING] * 6
            + [
                ExperimentStatus.DRAFT,
                ExperimentStatus.PAUSED,
                ExperimentStatus.COMPLETED,
                ExperimentStatus.ROLLED_BACK,
            ]
        )
        self.experiments.append(
            Experiment(
                id=f"id-{key}",
                project_id=PID,
                key=key,
                name=f"Experiment {key}" if self.chance(0.5) else "",
                variants=variants,
                coverage=rng.choice(COVERAGES),
                condition=self.condition(),
                filters=self.filters(),
                status=status,
                started_at=datetime(2025, 1, 1 + index, tzinfo=UTC),
                created_at=NOW,
                updated_at=NOW,
                **fields,
            )
        )
        return key

    def holdout_experiment(self) -> None:
        self.holdout = "h1"
        attribute = self.rng.choice(["id", "id", "company"])
        self.experiments.append(
            Experiment(
                id="id-h1",
                project_id=PID,
                key="h1",
                variants=[
                    Variant(key="holdoutcontrol", value="held"),
                    Variant(key="holdouttreatment", value="general"),
                ],
                coverage=self.rng.choice([0.2, 0.5, 1.0]),
                hash_attribute=attribute,
                condition=self.condition() if self.chance(0.3) else None,
                layer=LayerRange(layer="ns1", start=0.1, end=0.9) if self.chance(0.2) else None,
                filters=self.filters(),
                is_holdout=True,
                status=ExperimentStatus.RUNNING,
                started_at=NOW,
                created_at=NOW,
                updated_at=NOW,
            )
        )

    def rule(self, flag: str, index: int) -> Rule:
        kind = self.rng.choice(["force", "rollout", "rollout", "experiment", "experiment"])
        common: dict[str, Any] = {"parent_conditions": self.parents(flag)}
        if self.chance(0.3):
            common["id"] = f"{flag}-r{index}"
        if kind == "force":
            return ForceRule(
                condition=self.condition(),
                value=self.value(flag),
                filters=self.filters(),
                **common,
            )
        if kind == "rollout":
            rng = self.rng
            extra: dict[str, Any] = self.hashing()
            if self.chance(0.2):
                extra["fallback_attribute"] = rng.choice(ATTRIBUTES)
            if self.chance(0.25):
                a, b = sorted((round(rng.random(), 2), round(rng.random(), 2)))
                extra["range"] = (a, b)
            return RolloutRule(
                condition=self.condition(),
                coverage=rng.choice(COVERAGES),
                value=self.value(flag),
                filters=self.filters(),
                **extra,
                **common,
            )
        key = self.experiment(flag, index) if self.chance(0.95) else "missing-experiment"
        return ExperimentRule(experiment=key, **common)

    def flag(self, key: str) -> Flag:
        rng = self.rng
        prerequisites = []
        if self.chance(0.2):
            other = rng.choice([*FLAGS, "ghost"])
            if other != key:
                pool = self.pools.get(other, [True])
                expected = rng.choice([*pool, *pool, *pool, None, [1]])
                prerequisites.append(Prerequisite(flag=other, value=expected))
        return Flag(
            id=f"id-{key}",
            project_id=PID,
            key=key,
            type=FlagType.JSON,
            default_value=self.value(key) if self.chance(0.97) else None,
            enabled=self.chance(0.92),
            prerequisites=prerequisites,
            rules=[self.rule(key, i) for i in range(rng.randint(0, 4))],
            created_at=NOW,
            updated_at=NOW,
        )

    def segments(self) -> list[Segment]:
        values: list[Any] = ["a", "b", "0", "u1", 123, 456, -1]
        plugin = self.chance(0.1)
        return [
            Segment(
                id="s-ids",
                project_id=PID,
                key="ids",
                attribute="id",
                values=self.rng.sample(values, 3),
                created_at=NOW,
                updated_at=NOW,
            ),
            Segment(
                id="s-companies",
                project_id=PID,
                key="companies",
                attribute="company",
                values=self.rng.sample(values, 3),
                created_at=NOW,
                updated_at=NOW,
            ),
            Segment(
                id="s-fr",
                project_id=PID,
                key="fr-or-listed",
                type="condition",
                condition={
                    "$or": [
                        PLUGIN_CONDITION if plugin else {"country": "FR"},
                        {"$savedGroup": {"id": "ids"}},
                    ]
                },
                created_at=NOW,
                updated_at=NOW,
            ),
        ]


def project(seed_: int) -> ConfigState:
    gen = Gen(random.Random(seed_))
    if gen.chance(0.4):
        gen.holdout_experiment()
    flags = [gen.flag(k) for k in FLAGS]
    layers = [
        Layer(id=f"l-{k}", project_id=PID, key=k, created_at=NOW, updated_at=NOW)
        for k in ("ns1", "ns2")
    ]
    return ConfigState(
        projects=[Project(id=PID, key=PROJECT, created_at=NOW, updated_at=NOW)],
        flags=flags,
        experiments=gen.experiments,
        layers=layers,
        metrics=[],
        segments=gen.segments(),
    )


def moved(state: ConfigState, rng: random.Random) -> ConfigState:
    """The project a while later: sticky experiments' weights, coverage and ranges changed,
    their bucket versions sometimes up (and the minimum with them)."""
    experiments = []
    for e in state.experiments:
        if e.sticky_bucketing:
            bucket = e.bucket_version + rng.choice([0, 0, 1])
            e = msgspec.structs.replace(
                e,
                variants=[
                    msgspec.structs.replace(v, weight=rng.choice([0.0, 1.0, 3.0]) or 0.5)
                    for v in e.variants
                ],
                coverage=rng.choice([0.0, 0.3, 1.0]),
                ranges=None,
                bucket_version=bucket,
                min_bucket_version=rng.choice([e.min_bucket_version, bucket]),
                revision=e.revision + 1,
            )
        experiments.append(e)
    return msgspec.structs.replace(state, experiments=experiments)


# --- the comparison -------------------------------------------------------------------


def _json(value: Any) -> bytes:
    return msgspec.json.encode(value)


class Seen:
    cases = 0
    reasons: set[Reason] = set()
    remote: set[str] = set()
    exported = 0
    round_trips = 0


def outcome(d: Any) -> tuple[bytes, bool, str | None, str | None]:
    return (
        _json(d.value),
        d.in_experiment,
        d.experiment if d.in_experiment else None,
        d.variant if d.in_experiment else None,
    )


def compare(
    snapshot: Snapshot,
    payload: SdkPayload,
    subjects: list[dict[str, Any]],
    service: InMemoryStickyBucketService,
    docs: dict[tuple[str, str], dict[str, str]],
) -> None:
    """The SDK on ``payload`` against decide on ``snapshot``, every flag and subject."""
    assert set(payload.remote_only.values()) <= set(REMOTE_ONLY_REASONS)
    flags = snapshot.project_flags.get(PID, {})
    assert set(payload.features) | set(payload.remote_only) == set(flags)
    assert not set(payload.features) & set(payload.remote_only)
    Seen.remote |= set(payload.remote_only.values())
    gb = GrowthBook(
        features=payload.features,
        saved_groups=payload.saved_groups,
        sticky_bucket_service=service,
    )
    for attrs in subjects:
        gb.set_attributes(attrs)
        for key in payload.features:
            expected = gb.eval_feature(key)
            got = decide(snapshot, PID, key, "subject", attrs, sticky=docs)
            er = expected.experimentResult
            in_gb = er is not None and er.inExperiment
            theirs = (
                _json(expected.value),
                in_gb,
                expected.experiment.key if in_gb and expected.experiment else None,
                er.key if in_gb and er else None,
            )
            assert outcome(got) == theirs, (key, attrs, got, expected.to_dict(), payload)
            write = got.sticky_bucket
            if write is not None:
                docs.setdefault((write.attribute, write.value), {})[write.key] = write.variant
            Seen.reasons.add(got.reason)
            if got.experiment_reason is not None:
                Seen.reasons.add(got.experiment_reason)
            Seen.cases += 1
    Seen.exported += len(payload.features)


def round_trip(snapshot: Snapshot, payload: SdkPayload, subjects: list[dict[str, Any]]) -> None:
    """The payload imported again decides as the snapshot it was written from (stateless:
    the sticky experiments are compared in ``compare``)."""
    imported = convert_growthbook(payload_document(payload))
    again = snapshot_of(imported.definitions)
    # Where the import supports it: it warns about what it leaves out or changes (e.g. a
    # second running experiment on one flag, which assay's model refuses).
    warned = {w.location.split(".")[1] for w in imported.warnings}
    reads = {
        key: {pc["id"] for r in f.get("rules", ()) for pc in r.get("parentConditions", ())}
        for key, f in payload.features.items()
    }
    grown = True
    while grown:  # and what reads them, which the import keeps as it is
        grown = False
        for key, parents in reads.items():
            if key not in warned and parents & warned:
                warned.add(key)
                grown = True
    for key, feature in payload.features.items():
        if key in warned or any("bucketVersion" in r for r in feature.get("rules", ())):
            continue
        Seen.round_trips += 1
        for attrs in subjects:
            ours = decide(snapshot, PID, key, "subject", attrs)
            theirs = decide(again, PID, key, "subject", attrs)
            assert outcome(ours) == outcome(theirs), (key, attrs, ours, theirs, feature)


def subjects_from(seed_: int) -> list[dict[str, Any]]:
    rng = random.Random(seed_)
    return [attributes(rng) for _ in range(SUBJECTS)]


def check_project(seed_: int) -> None:
    state = project(seed_)
    subjects = subjects_from(seed_)
    service = InMemoryStickyBucketService()
    docs: dict[tuple[str, str], dict[str, str]] = {}
    snapshot = compile_snapshot(state, 1, COMPILER)
    payload = build_payload(snapshot, PROJECT)
    compare(snapshot, payload, subjects, service, docs)
    round_trip(snapshot, payload, subjects[:20])
    if snapshot.sticky_projects:
        # A change, and every subject again, with the sticky buckets both sides stored.
        snapshot = compile_snapshot(moved(state, random.Random(seed_)), 2, COMPILER)
        compare(snapshot, build_payload(snapshot, PROJECT), subjects, service, docs)


def test_generated_projects_decide_as_growthbooks_sdk() -> None:
    Seen.cases, Seen.exported, Seen.reasons, Seen.remote = 0, 0, set(), set()
    for i in range(DEFAULT_PROJECTS):
        check_project(20261205 + i)
    assert Seen.cases >= 20_000
    assert {
        Reason.FORCED,
        Reason.ROLLOUT,
        Reason.EXPERIMENT_ASSIGNED,
        Reason.STICKY_BUCKET,
        Reason.STICKY_BUCKET_BLOCKED,
        Reason.FORCED_VARIATION,
        Reason.PREREQUISITE_FAILED,
        Reason.PREREQUISITE_GATE,
        Reason.ROLLED_BACK,
        Reason.FLAG_OFF,
        Reason.DEFAULT,
        Reason.PASSTHROUGH,
        Reason.TARGETING_MISMATCH,
        Reason.LAYER_CONFLICT,
        Reason.OUTSIDE_TRAFFIC_ALLOCATION,
        Reason.EXPERIMENT_NOT_RUNNING,
        Reason.NO_ACTIVE_EXPERIMENT,
    } <= Seen.reasons, Seen.reasons
    print(f"{Seen.cases} cases, {Seen.exported} flags exported, {Seen.round_trips} round trips")
    assert Seen.round_trips >= 500
    # The generator reaches most reasons to leave a flag out (each one is built on its
    # own in test_payload.py), so remote_only is exercised beside the exact flags.
    assert len(Seen.remote) >= 6, Seen.remote


@pytest.mark.slow
def test_generated_projects_decide_as_growthbooks_sdk_at_length() -> None:
    for i in range(10 * DEFAULT_PROJECTS):
        check_project(7_000_000 + i)


# --- GrowthBook payloads, imported, exported again ------------------------------------


def check_payload(phases: list[dict[str, Any]], subjects: list[dict[str, Any]]) -> None:
    service = InMemoryStickyBucketService()
    docs: dict[tuple[str, str], dict[str, str]] = {}
    for original in phases:
        snapshot = snapshot_of(convert_growthbook(original).definitions)
        payload = build_payload(snapshot, PROJECT)
        compare(snapshot, payload, subjects, service, docs)
        if len(phases) == 1:
            round_trip(snapshot, payload, subjects[:20])


@seed(20261206)
@settings(max_examples=DEFAULT_PAYLOADS, **SETTINGS)  # type: ignore[arg-type]
@given(phases=payloads())
def test_growthbook_payloads_exported_again_decide_as_growthbooks_sdk(
    phases: list[dict[str, Any]],
) -> None:
    check_payload(phases, subjects_from(len(str(phases))))


@pytest.mark.slow
@settings(max_examples=10 * DEFAULT_PAYLOADS, **SETTINGS)  # type: ignore[arg-type]
@given(phases=payloads())
def test_growthbook_payloads_exported_again_at_length(phases: list[dict[str, Any]]) -> None:
    check_payload(phases, subjects_from(len(str(phases))))
