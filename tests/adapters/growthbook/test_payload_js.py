"""Differential test: GrowthBook's JavaScript SDK, evaluating the payload assay exports for a
project (``sdk_payload``), against ``engine.decide``.

A seeded generator builds projects through ``engine.service`` as a person would: segments
(lists and conditions), layers, experiments (weights, coverage, seeds, hash versions 1 and
2, hash and fallback attributes, conditions, layer ranges, filters, forced variations,
holdouts, and some in draft, paused or rolled back, or with a participation limit), and
flags of every type whose rules cover every kind (force with conditions, filters and
parent conditions, rollouts by coverage or range and with fallback attributes,
experiments), with flag prerequisites and flags turned off.
For every flag the payload carries (those in ``remote_only`` are not exact by design, and
are checked to be absent), Node evaluates thousands of subjects in one process with
``GrowthBookClient.evalFeature``: the value, and when the subject is in an experiment the
experiment and variant keys, must be what ``engine.decide`` answers. Then flags are
edited through ``engine.service`` (rules replaced, coverage moved, flags turned off or on)
and the new payload is checked the same way.

The default run checks 3 seeded projects of 16 flags, before and after the change, with
2,000 subjects each (90 flag payloads, 180,000 cases); ``-m slow`` checks 5 projects of 30
flags with 10,000 subjects (297 flag payloads, 2,970,000 cases).

The projects of ``test_payload_differential`` (the Python SDK's differential: sticky
bucketing, plugin operators, cycles, ...) go through the JavaScript SDK too, with sticky
bucketing where a project has sticky experiments and the SDK's sticky documents kept from
one phase to the next: 300 projects, about 121,000 cases, in one Node process (``-m
slow``: 3,000 projects).

Two behaviours of GrowthBook's JavaScript SDK differ from its Python SDK, which decide
follows; the generated cases avoid them and a strict xfail test pins the second down: a hash
attribute that is a boolean, an array or an object (JavaScript hashes ``String(value)``),
and a sticky bucket that keeps a subject in an experiment whose condition it does not
match (JavaScript checks the condition only without a sticky bucket). A third, the
JavaScript SDK ignoring a rollout's ``fallbackAttribute`` without sticky bucketing, the
export works around (a test here holds it to that).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

import assay
from assay.adapters.growthbook import build_payload, payload_document, sdk_payload
from assay.engine import (
    SYSTEM_KEY,
    AssayError,
    Engine,
    Experiment,
    ExperimentRule,
    ExperimentSpec,
    Flag,
    FlagSpec,
    FlagType,
    ForceRule,
    Layer,
    LayerRange,
    LayerSpec,
    Metric,
    MetricSpec,
    Prerequisite,
    ProjectSpec,
    RolloutRule,
    Segment,
    SegmentSpec,
    Transition,
    Variant,
)
from assay.engine._core import Snapshot, compile_snapshot, decide
from assay.engine._model import ForcedVariation, HashFilter, ParentCondition
from assay.engine._ports import ConfigState
from tests.adapters.growthbook.test_payload_differential import (
    COMPILER,
    PID,
    PROJECT,
    moved,
    project,
    subjects_from,
)

from .conftest import GrowthBookJs, Job

HASH_ATTRIBUTES = ["id", "id", "deviceId", "company"]
COUNTRIES = ["FR", "DE", "US", "JP", ""]
IDS = [f"u{i}" for i in range(40)]

# --- the project ------------------------------------------------------------------------


def condition(rng: random.Random) -> dict[str, Any]:
    return rng.choice(
        [
            {"country": rng.choice(COUNTRIES[:4])},
            {"country": {"$in": rng.sample(COUNTRIES, 2)}},
            {"age": {"$gte": rng.randrange(10, 70)}},
            {"age": {"$type": "number", "$lt": rng.randrange(20, 80)}},
            {"tags": {"$elemMatch": {"$eq": rng.choice(["a", "b"])}}},
            {"tags": {"$size": {"$gt": 1}}},
            {"company": {"$exists": rng.random() < 0.5}},
            {"version": {"$vgte": rng.choice(["1.2.0", "2.0.0", "1.10.3"])}},
            {"email": {"$regex": "@example\\.(com|org)$"}},
            {"$or": [{"country": "US"}, {"age": {"$lt": 25}}]},
            {"$not": {"deviceId": {"$exists": True}}},
            {"id": {"$inGroup": "listed"}},
            {"id": {"$notInGroup": "listed"}},
            {"$savedGroup": {"id": "adults-fr"}},
            {"$and": [{"age": {"$exists": True}}, {"$savedGroup": {"id": "adults-fr"}}]},
        ]
    )


def maybe_condition(rng: random.Random, p: float = 0.5) -> dict[str, Any] | None:
    return condition(rng) if rng.random() < p else None


def hash_filters(rng: random.Random) -> list[HashFilter]:
    out = []
    for _ in range(rng.randint(1, 2)):
        a, b = sorted((rng.random(), rng.random()))
        out.append(
            HashFilter(
                attribute=rng.choice(HASH_ATTRIBUTES),
                seed=rng.choice(["", "ns-a", "ns-b"]),
                hash_version=rng.choice([1, 2]),
                ranges=[(round(a, 3), round(b, 3))],
            )
        )
    return out


def value_of(rng: random.Random, flag_type: FlagType) -> Any:
    match flag_type:
        case FlagType.BOOLEAN:
            return rng.random() < 0.5
        case FlagType.STRING:
            return rng.choice(["red", "green", "blue", "", "é"])
        case FlagType.NUMBER:
            return rng.choice([0, 1, 2.5, -3, 100, 1e6])
        case FlagType.JSON:
            return rng.choice([{"a": 1}, {"b": [1, 2]}, [1, "x"], {"nested": {"c": None}}])
    raise AssertionError(flag_type)


class Builder:
    """Creates one project's objects through ``engine.service``; a random combination
    the service refuses (two running experiments on a flag, overlapping layer ranges) is
    skipped, and counted."""

    def __init__(self, engine: Engine, project: str, rng: random.Random) -> None:
        self.engine = engine
        self.project = project
        self.rng = rng
        self.refused = 0
        self.experiments: dict[str, FlagType] = {}
        self.flags: list[str] = []
        self.used: set[str] = set()  # experiments a flag already uses
        self.flag_types: dict[str, FlagType] = {}

    async def create(self, kind: Any, spec: Any) -> bool:
        try:
            await self.engine.service.create_object(SYSTEM_KEY, kind, self.project, spec)
        except AssayError:
            self.refused += 1
            return False
        return True

    async def build(self, n_experiments: int, n_flags: int) -> None:
        service = self.engine.service
        await service.create_project(SYSTEM_KEY, ProjectSpec(key=self.project))
        await self.create(Metric, MetricSpec(key="m"))
        await self.create(Layer, LayerSpec(key="layer"))
        await self.create(
            Segment, SegmentSpec(key="listed", type="list", attribute="id", values=IDS[::3])
        )
        await self.create(
            Segment,
            SegmentSpec(
                key="adults-fr",
                type="condition",
                condition={"country": "FR", "age": {"$type": "number", "$gte": 18}},
            ),
        )
        holdout = ExperimentSpec(
            key="hold",
            is_holdout=True,
            variants=[
                Variant(key="held", value=None, weight=0.1),
                Variant(key="through", value=None, weight=0.9, passthrough=True),
            ],
        )
        has_holdout = await self.create(Experiment, holdout)
        if has_holdout:
            await service.transition_experiment(SYSTEM_KEY, self.project, "hold", Transition.START)
        layer_start = 0.0
        for i in range(n_experiments):
            await self.experiment(f"e{i}", has_holdout, layer_start)
            layer_start += 0.3
        for i in range(n_flags):
            await self.flag(f"f{i}")
        await self.engine.refresh()

    async def experiment(self, key: str, has_holdout: bool, layer_start: float) -> None:
        rng = self.rng
        flag_type = rng.choice(list(FlagType))
        # Variant keys are compared too, so values may repeat.
        if flag_type is FlagType.BOOLEAN:
            values: list[Any] = [False, True]
        else:
            values = [value_of(rng, flag_type) for _ in range(rng.randint(2, 4))]
        variants = [
            Variant(key=f"v{j}", value=value, weight=rng.choice([1, 1, 2, 3]))
            for j, value in enumerate(values)
        ]
        spec = ExperimentSpec(
            key=key,
            variants=variants,
            coverage=rng.choice([1.0, 1.0, 0.5, 0.83, 0.1]),
            seed=rng.choice([None, None, "s1", "checkout", "ü"]),
            hash_version=rng.choice([1, 2, 2]),
            hash_attribute=rng.choice(HASH_ATTRIBUTES),
            fallback_attribute="deviceId" if rng.random() < 0.2 else None,
            condition=maybe_condition(rng, 0.4),
            layer=(
                LayerRange(layer="layer", start=layer_start, end=min(1.0, layer_start + 0.25))
                if rng.random() < 0.25 and layer_start < 1.0
                else None
            ),
            filters=hash_filters(rng) if rng.random() < 0.2 else [],
            forced_variations=(
                [ForcedVariation(variant="v1", attribute="id", values=rng.sample(IDS, 3))]
                if rng.random() < 0.25
                else []
            ),
            holdout="hold" if has_holdout and rng.random() < 0.2 else None,
            participation_limit=1 if rng.random() < 0.1 else None,
            primary_metrics=["m"],
        )
        if not await self.create(Experiment, spec):
            return
        self.experiments[key] = flag_type
        fate = rng.choice(["run"] * 6 + ["pause", "rollback", "draft"])
        service, p = self.engine.service, self.project
        try:
            if fate != "draft":
                await service.transition_experiment(SYSTEM_KEY, p, key, Transition.START)
            if fate == "pause":
                await service.transition_experiment(SYSTEM_KEY, p, key, Transition.PAUSE)
            elif fate == "rollback":
                await service.transition_experiment(SYSTEM_KEY, p, key, Transition.ROLLBACK)
        except AssayError:
            self.refused += 1

    def rules(self, flag_type: FlagType, experiment: str | None) -> list[Any]:
        rng = self.rng
        rules: list[Any] = []
        for _ in range(rng.randint(0, 3)):
            kind = rng.random()
            parents = self.parents() if rng.random() < 0.2 else []
            if kind < 0.45:
                rules.append(
                    ForceRule(
                        condition=maybe_condition(rng, 0.8),
                        value=value_of(rng, flag_type),
                        filters=hash_filters(rng) if rng.random() < 0.2 else [],
                        parent_conditions=parents,
                    )
                )
            else:
                a, b = sorted((rng.random(), rng.random()))
                rules.append(
                    RolloutRule(
                        condition=maybe_condition(rng, 0.4),
                        coverage=round(rng.random(), 4),
                        range=(round(a, 3), round(b, 3)) if rng.random() < 0.25 else None,
                        value=value_of(rng, flag_type),
                        hash_attribute=rng.choice(HASH_ATTRIBUTES),
                        fallback_attribute="deviceId" if rng.random() < 0.25 else None,
                        seed=rng.choice([None, "r1", ""]),
                        hash_version=rng.choice([1, 2]),
                        filters=hash_filters(rng) if rng.random() < 0.15 else [],
                        parent_conditions=parents,
                    )
                )
        if experiment is not None:
            rules.insert(rng.randrange(len(rules) + 1), ExperimentRule(experiment=experiment))
        return rules

    def parents(self) -> list[ParentCondition]:
        rng = self.rng
        if not self.flags:
            return []
        return [
            ParentCondition(
                flag=rng.choice(self.flags),
                condition=rng.choice(
                    [{"value": {"$exists": True}}, {"value": {"$ne": False}}, {"value": True}]
                ),
                gate=rng.random() < 0.3,
            )
        ]

    async def flag(self, key: str) -> None:
        rng = self.rng
        unused = [e for e in self.experiments if e not in self.used]
        experiment = rng.choice(unused) if unused and rng.random() < 0.6 else None
        flag_type = self.experiments[experiment] if experiment else rng.choice(list(FlagType))
        prerequisites = []
        booleans = [k for k, t in self.flag_types.items() if t is FlagType.BOOLEAN]
        if booleans and rng.random() < 0.15:
            prerequisites = [Prerequisite(flag=rng.choice(booleans), value=rng.random() < 0.7)]
        spec = FlagSpec(
            key=key,
            type=flag_type,
            default_value=value_of(rng, flag_type),
            enabled=rng.random() < 0.9,
            prerequisites=prerequisites,
            rules=self.rules(flag_type, experiment),
        )
        if await self.create(Flag, spec):
            self.flags.append(key)
            self.flag_types[key] = flag_type
            if experiment:
                self.used.add(experiment)

    async def change(self, n: int) -> int:
        """Edits ``n`` flags through the service: rules replaced, the flag turned off or
        on, or rollout coverage moved. Returns how many edits the service took."""
        rng = self.rng
        done = 0
        for key in rng.sample(self.flags, min(n, len(self.flags))):
            flag: Flag = await self.engine.service.get_object(SYSTEM_KEY, Flag, self.project, key)
            roll = rng.random()
            if roll < 0.3:
                patch: dict[str, Any] = {"enabled": not flag.enabled}
            elif roll < 0.6:
                rules = [
                    msgspec.structs.replace(r, coverage=round(rng.random(), 4))
                    if isinstance(r, RolloutRule)
                    else r
                    for r in flag.rules
                ]
                patch = {"rules": msgspec.to_builtins(rules)}
            else:
                kept = [r.experiment for r in flag.rules if isinstance(r, ExperimentRule)]
                new = self.rules(flag.type, kept[0] if kept else None)
                patch = {"rules": msgspec.to_builtins(new), "default_value": flag.default_value}
            try:
                await self.engine.service.update_object(SYSTEM_KEY, Flag, self.project, key, patch)
                done += 1
            except AssayError:
                self.refused += 1
        await self.engine.refresh()
        return done


# --- subjects and the comparison ----------------------------------------------------------


def subjects(rng: random.Random, n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        attrs: dict[str, Any] = {"id": IDS[i] if i < len(IDS) else f"s{rng.getrandbits(40):x}"}
        if rng.random() < 0.6:
            attrs["deviceId"] = f"d{rng.randrange(10**6)}"
        if rng.random() < 0.4:
            attrs["company"] = rng.choice(["acme", "globex", "initech", "umbrella"])
        if rng.random() < 0.8:
            attrs["country"] = rng.choice(COUNTRIES)
        if rng.random() < 0.7:
            attrs["age"] = rng.randrange(10, 90)
        if rng.random() < 0.5:
            attrs["tags"] = rng.sample(["a", "b", "c"], rng.randint(0, 3))
        if rng.random() < 0.5:
            attrs["version"] = rng.choice(["1.0.0", "1.2.0", "1.10.3", "2.0.0", "2.1.0-beta"])
        if rng.random() < 0.3:
            attrs["email"] = rng.choice(["a@example.com", "b@example.org", "c@other.net"])
        out.append(attrs)
    return out


def canon(value: Any) -> Any:
    """Equal when JSON-equal: a boolean is never a number, 1 and 1.0 are one number."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    if isinstance(value, list):
        return ("list", tuple(canon(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, canon(v)) for k, v in value.items())))
    raise AssertionError(value)


def compare(
    engine: Engine, project: str, js: GrowthBookJs, people: list[dict[str, Any]]
) -> tuple[int, int, dict[str, int]]:
    """Compares every exported flag for every subject; returns (flags, cases, reasons)."""
    payload = sdk_payload(engine, project)
    document = payload_document(payload)
    flags = sorted(payload.features)
    results = js.evaluate(document, flags, people)
    mismatches = []
    reasons: dict[str, int] = {}
    for attrs, row in zip(people, results, strict=True):
        for key, got in zip(flags, row, strict=True):
            d = engine.decide(key, attrs["id"], attrs, project=project)
            reasons[d.reason] = reasons.get(d.reason, 0) + 1
            expected = (
                canon(d.value),
                d.in_experiment,
                d.experiment if d.in_experiment else None,
                d.variant if d.in_experiment else None,
            )
            actual = (canon(got["value"]), got["in_experiment"], got["experiment"], got["variant"])
            if expected != actual:
                mismatches.append((key, attrs, d.reason, expected, actual))
    assert not mismatches, (
        f"{len(mismatches)} mismatches, first: {mismatches[:3]}\n"
        f"features: {[document['features'][m[0]] for m in mismatches[:1]]}"
    )
    return len(flags), len(flags) * len(people), reasons


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    config = assay.EngineConfig(store="memory")
    async with assay.open_engine(config, load_entry_points=False) as engine:
        yield engine


async def check_projects(
    engine: Engine, js: GrowthBookJs, seeds: range, flags: int, people: int
) -> None:
    compared = cases = refused = 0
    reasons: dict[str, int] = {}
    rule_fields: set[str] = set()
    remote: set[str] = set()
    for seed in seeds:
        rng = random.Random(seed)
        builder = Builder(engine, f"p{seed}", rng)
        await builder.build(n_experiments=max(4, flags // 2), n_flags=flags)
        crowd = subjects(rng, people)
        payload = sdk_payload(engine, builder.project)
        assert set(payload.features) | set(payload.remote_only) == set(builder.flags)
        assert not set(payload.features) & set(payload.remote_only)
        n, c, r = compare(engine, builder.project, js, crowd)
        compared, cases = compared + n, cases + c
        for k, v in r.items():
            reasons[k] = reasons.get(k, 0) + v
        remote.update(payload.remote_only.values())
        refused += builder.refused
        for feature in payload.features.values():
            for rule in feature.get("rules", []):
                rule_fields.update(rule)
        # A change made through the service: the new payload decides as decide does.
        assert await builder.change(max(3, flags // 3)) > 0
        changed = sdk_payload(engine, builder.project)
        assert changed.version > payload.version
        n, c, r = compare(engine, builder.project, js, crowd)
        compared, cases = compared + n, cases + c
        for k, v in r.items():
            reasons[k] = reasons.get(k, 0) + v
    print(
        f"JS SDK vs decide: {compared} flag payloads, {cases} cases; reasons {reasons}; "
        f"remote-only {sorted(remote)}; {refused} random objects refused by the service"
    )
    # Every part of GrowthBook's rule format was written and evaluated.
    assert {
        "force",
        "coverage",
        "range",
        "hashAttribute",
        "hashVersion",
        "seed",
        "filters",
        "parentConditions",
        "condition",
        "variations",
        "ranges",
        "meta",
        "namespace",
        "key",
    } <= rule_fields, rule_fields
    # Every way a flag ends is reached, so every rule kind was exported and evaluated.
    assert {
        "forced",
        "rollout",
        "experiment_assigned",
        "default",
        "flag_off",
        "rolled_back",
    } <= set(reasons)


async def test_the_javascript_sdk_decides_what_decide_answers(
    engine: Engine, growthbook_js: GrowthBookJs
) -> None:
    await check_projects(engine, growthbook_js, range(3), flags=16, people=2000)


@pytest.mark.slow
async def test_the_javascript_sdk_decides_what_decide_answers_many(
    engine: Engine, growthbook_js: GrowthBookJs
) -> None:
    await check_projects(engine, growthbook_js, range(100, 105), flags=30, people=10_000)


# --- the Python SDK differential's projects, through the JavaScript SDK ----------------


HASHED = ("id", "deviceId", "company")
"""The attributes the generated projects hash (``test_payload_differential.ATTRIBUTES``)."""


def hashable(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` without hash attributes that are booleans, arrays or objects (an ``id``
    becomes a string instead: decide would hash the subject in its place). There
    GrowthBook's two SDKs disagree: the JavaScript SDK hashes any truthy value as
    ``String()`` writes it (``true`` as "true", ``[]`` as "", ``{}`` as "[object Object]"),
    while its Python SDK, and assay with it, treat them as missing."""
    out = {}
    for k, v in attrs.items():
        if k in HASHED and isinstance(v, (bool, list, dict)):
            if k == "id":
                out[k] = f"id-{v!r}"
            continue
        out[k] = v
    return out


def without_sticky_conditions(state: ConfigState) -> ConfigState:
    """``state`` with no targeting condition on sticky experiments. There GrowthBook's two
    SDKs disagree: the JavaScript SDK checks an experiment rule's condition only when the
    subject has no sticky bucket (a subject with one stays in, matching or not), its Python
    SDK, and assay with it, check the condition first."""
    experiments = [
        msgspec.structs.replace(e, condition=None) if e.sticky_bucketing else e
        for e in state.experiments
    ]
    return msgspec.structs.replace(state, experiments=experiments)


def check_generated(js: GrowthBookJs, seeds: range) -> tuple[int, set[str]]:
    """``test_payload_differential``'s seeded projects (its generator: sticky bucketing,
    plugin operators, cycles, every status...), decided by the JavaScript SDK, with sticky
    bucketing where the project has sticky experiments (one store of sticky documents per
    project, kept between the phases), then again after those moved. Returns (cases,
    reasons)."""
    reasons: set[str] = set()
    cases = 0
    states = {s: without_sticky_conditions(project(s)) for s in seeds}
    docs: dict[int, dict[tuple[str, str], dict[str, str]]] = {s: {} for s in seeds}

    def phase(snapshots: dict[int, Snapshot], sticky: dict[int, Any]) -> dict[int, Any]:
        nonlocal cases
        payloads = {s: build_payload(snap, PROJECT) for s, snap in snapshots.items()}
        jobs = [
            Job(
                payload_document(p),
                list(p.features),
                [hashable(a) for a in subjects_from(s)],
                sticky.get(s),
            )
            for s, p in payloads.items()
        ]
        out = js.evaluate_jobs(jobs)
        for (s, snap), job, done in zip(snapshots.items(), jobs, out, strict=True):
            assert set(payloads[s].features) | set(payloads[s].remote_only) == set(
                snap.project_flags.get(PID, {})
            )
            for attrs, row in zip(done["attributes"], done["results"], strict=True):
                for key, got in zip(job.flags, row, strict=True):
                    d = decide(snap, PID, key, "subject", attrs, sticky=docs[s])
                    expected = (
                        canon(d.value),
                        d.in_experiment,
                        d.experiment if d.in_experiment else None,
                        d.variant if d.in_experiment else None,
                    )
                    actual = (
                        canon(got["value"]),
                        got["in_experiment"],
                        got["experiment"],
                        got["variant"],
                    )
                    assert expected == actual, (s, key, attrs, d, got, job.payload)
                    if d.sticky_bucket is not None:
                        w = d.sticky_bucket
                        docs[s].setdefault((w.attribute, w.value), {})[w.key] = w.variant
                    reasons.add(d.reason)
                    if d.experiment_reason is not None:
                        reasons.add(d.experiment_reason)
                    cases += 1
        return {s: done["sticky"] for s, done in zip(snapshots, out, strict=True)}

    first = {s: compile_snapshot(state, 1, COMPILER) for s, state in states.items()}
    # Sticky bucketing on where the project has sticky experiments, off elsewhere (as most
    # applications run the SDK).
    sticky = phase(first, {s: {} for s, snap in first.items() if snap.sticky_projects})
    moved_states = {
        s: compile_snapshot(moved(states[s], random.Random(s)), 2, COMPILER)
        for s, snap in first.items()
        if snap.sticky_projects
    }
    phase(moved_states, sticky)
    return cases, reasons


def test_generated_projects_decide_as_the_javascript_sdk(growthbook_js: GrowthBookJs) -> None:
    cases, reasons = check_generated(growthbook_js, range(20261205, 20261205 + 300))
    print(f"JS SDK vs decide on generated projects: {cases} cases")
    assert cases >= 100_000
    assert {"sticky_bucket", "sticky_bucket_blocked", "passthrough", "experiment_assigned"} <= (
        reasons
    ), reasons


@pytest.mark.slow
def test_generated_projects_decide_as_the_javascript_sdk_at_length(
    growthbook_js: GrowthBookJs,
) -> None:
    for start in range(7_000_000, 7_003_000, 500):
        check_generated(growthbook_js, range(start, start + 500))


# --- where the JavaScript SDK and decide part (known, reported) ------------------------


async def divergence_project(engine: Engine, experiment: ExperimentSpec, flag: FlagSpec) -> None:
    service = engine.service
    await service.create_project(SYSTEM_KEY, ProjectSpec(key="gap"))
    await service.create_object(SYSTEM_KEY, Experiment, "gap", experiment)
    await service.transition_experiment(SYSTEM_KEY, "gap", experiment.key, Transition.START)
    await service.create_object(SYSTEM_KEY, Flag, "gap", flag)
    await engine.refresh()


async def test_a_sticky_experiment_with_targeting_is_remote_only(
    engine: Engine, growthbook_js: GrowthBookJs
) -> None:
    experiment = ExperimentSpec(
        key="sticky",
        variants=[Variant(key="off", value=False), Variant(key="on", value=True)],
        hash_attribute="company",
        condition={"country": "FR"},
        sticky_bucketing=True,
    )
    flag = FlagSpec(key="f", rules=[ExperimentRule(experiment="sticky")])
    await divergence_project(engine, experiment, flag)
    # Two people of one company (the hash value): the first matches the targeting.
    people = [{"id": "a", "company": "acme", "country": "FR"}, {"id": "b", "company": "acme"}]
    exported = sdk_payload(engine, "gap")
    assert "f" not in exported.features
    assert exported.remote_only == {"f": "sticky_condition"}
    # Why: the rule as GrowthBook writes it, evaluated by the JS SDK, keeps b in through
    # acme's sticky bucket; GrowthBook's Python SDK and decide check the targeting first.
    rule = {
        "key": "sticky",
        "variations": [False, True],
        "weights": [0.5, 0.5],
        "hashAttribute": "company",
        "condition": {"country": "FR"},
        "bucketVersion": 0,
        "minBucketVersion": 0,
        "meta": [{"key": "off"}, {"key": "on"}],
    }
    payload = {"features": {"f": {"defaultValue": False, "rules": [rule]}}}
    (job,) = growthbook_js.evaluate_jobs([Job(payload, ["f"], people, sticky={})])
    theirs = [row[0]["in_experiment"] for row in job["results"]]
    ours = [engine.decide("f", p["id"], p, project="gap").in_experiment for p in people]
    assert theirs == [True, True]
    assert ours == [True, False]


async def test_a_rollout_fallback_attribute_without_sticky_bucketing(
    engine: Engine, growthbook_js: GrowthBookJs
) -> None:
    experiment = ExperimentSpec(key="unused", variants=[Variant(key="a", value=False)])
    rollout = RolloutRule(
        value=True, coverage=1.0, hash_attribute="company", fallback_attribute="deviceId"
    )
    await divergence_project(engine, experiment, FlagSpec(key="f", rules=[rollout]))
    person = {"id": "a", "deviceId": "d1"}  # no company: the fallback is hashed
    payload = payload_document(sdk_payload(engine, "gap"))
    assert "f" in payload["features"]  # exported as exact
    # GrowthBook's JS SDK uses a rollout's fallbackAttribute only with sticky bucketing on
    # (its Python SDK and decide always): the export writes the fallback as its own rule.
    for sticky in (None, {}):
        (job,) = growthbook_js.evaluate_jobs([Job(payload, ["f"], [person], sticky=sticky)])
        assert job["results"][0][0]["value"] is True
    assert engine.decide("f", "a", person, project="gap").value is True
