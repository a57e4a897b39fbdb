"""Seeded projects of assay's own model, for the SDK payload differential tests (the
Python SDK's in test_payload_differential.py, the JavaScript SDK's in test_payload_js.py).

``project(seed)`` draws one project from a seeded ``random.Random``: flags with every rule
kind (force, rollout by coverage, on exact hash multiples too, and by range, experiment
rules), flag prerequisites (met, failed, on missing or disabled flags, expecting every JSON
type), parent conditions with gates, missing parents and cycles, experiments in every
status with relative weights, coverage, explicit ranges, seeds, hash versions, hash and
fallback attributes, conditions, layers, filters, forced variations, passthrough variants,
holdouts, participation limits and sticky bucketing, segments (list and condition) and a
plugin operator (``$startsWith``, compiled by ``COMPILER``: conditions using it must never
reach a payload). ``moved(state, rng)`` is the project a while later (sticky experiments
changed); ``subjects_from(seed)`` the subjects to decide it for. A seed always gives the
same project: the tests' case counts depend on it.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import msgspec

from assay.engine._core import ConditionCompiler
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
from tests.adapters.growthbook.growthbook_payloads import attributes

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


def subjects_from(seed_: int) -> list[dict[str, Any]]:
    rng = random.Random(seed_)
    return [attributes(rng) for _ in range(SUBJECTS)]
