"""GrowthBook feature payloads for the differential tests, written as GrowthBook writes them.

``payloads()`` is a hypothesis strategy of payloads with every rule kind GrowthBook has
(force rules, rollouts, experiments with weights, coverage, explicit ranges, namespaces,
passthrough variations and holdouts in GrowthBook's form, filters, parent conditions,
conditions, hash versions, seeds, hash and fallback attributes, saved groups, sticky
bucketing): one payload, or with sticky bucketing two (the payload, then the same moved).
``attributes(rng)`` draws a subject's attributes of every JSON type from a seeded
``random.Random``. ``snapshot_of`` compiles what ``convert_growthbook`` made of a payload,
as a server would hold it. ``SETTINGS`` are the hypothesis settings the tests run the
strategy with.

``PAYLOAD`` is one payload written by hand, with ``subject(rng, i)`` to draw subjects for
it: force, rollout and experiment rules with conditions, namespaces, weights, coverage,
hash versions 1 and 2, custom seeds, hash and fallback attributes, saved groups, an
experiment key assay cannot use as is and one experiment key shared by two features;
rollout coverages sit exactly on hash-bucket boundaries.

What the strategy writes stays inside what a server can honour: importing a payload must
report no warning but the notice that an experiment key was renamed.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck
from hypothesis import strategies as st

from assay.engine._core import ConditionCompiler, compile_snapshot
from assay.engine._definitions import Definitions
from assay.engine._model import (
    Experiment,
    ExperimentSpec,
    ExperimentStatus,
    Flag,
    FlagSpec,
    Layer,
    Project,
    Segment,
)
from assay.engine._ports import ConfigState
from assay.plugins._growthbook_operators import GROWTHBOOK_OPERATORS

NOW = datetime(2025, 1, 1, tzinfo=UTC)
PID = "p1"
COMPILER = ConditionCompiler(GROWTHBOOK_OPERATORS)
FEATURES = ["f0", "f1", "f2", "f3"]
HOLDOUT = "$holdout:h1"
HASH_ATTRIBUTES = ["id", "deviceId", "company"]
SAVED_VALUES: list[Any] = ["a", "b", "0", "u1", 123, 456, -1]
SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


# --- a payload written by hand ----------------------------------------------------------

COUNTRIES = ["FR", "DE", "US", "JP", "BR"]

PAYLOAD: dict[str, Any] = {
    "status": 200,
    "dateUpdated": "2025-01-01T00:00:00Z",
    "savedGroups": {"grp_beta": ["u1", "u2", "u3", "u10", "u11", "u12", "u100"]},
    "features": {
        "banner": {
            "defaultValue": False,
            "rules": [
                {"id": "fr_beta", "condition": {"id": {"$inGroup": "grp_beta"}}, "force": True},
                {
                    "condition": {"country": {"$in": ["FR", "DE"]}, "age": {"$gte": 30}},
                    "force": True,
                },
            ],
        },
        # Coverages on hash boundaries (0.3 is 300/1000 for v1, 0.5 is 5000/10000 for v2).
        "new-checkout": {
            "defaultValue": "old",
            "rules": [
                {"force": "new", "coverage": 0.3},  # no hashVersion: GrowthBook's default, v1
                {"force": "beta", "coverage": 0.5, "hashVersion": 2, "seed": "checkout-2025"},
            ],
        },
        "price": {
            "defaultValue": 10,
            "rules": [
                {
                    "condition": {"country": "US"},
                    "force": 12.5,
                    "coverage": 0.25,
                    "hashAttribute": "deviceId",
                    "fallbackAttribute": "id",
                    "hashVersion": 2,
                },
                {"force": 11, "range": [0, 0.4], "hashVersion": 1},
            ],
        },
        "button-color": {
            "defaultValue": "blue",
            "rules": [
                {
                    "id": "fr_exp1",
                    "key": "button color test",
                    "variations": ["blue", "green", "red"],
                    "weights": [0.2, 0.3, 0.5],
                    "coverage": 0.8,
                    "hashVersion": 2,
                    "namespace": ["checkout-ns", 0.1, 0.7],
                    "meta": [{"key": "control", "name": "Blue"}, {"key": "g"}, {"key": "r"}],
                    "phase": "0",
                    "name": "Button color",
                }
            ],
        },
        "layout": {
            "defaultValue": {"columns": 1},
            "rules": [
                {
                    "key": "layout-exp",
                    "variations": [{"columns": 1}, {"columns": 2}],
                    "coverage": 0.6,
                    "seed": "layout-seed",
                    "hashAttribute": "deviceId",
                    "fallbackAttribute": "id",
                    "condition": {"age": {"$lt": 50}},
                    "namespace": ["checkout-ns", 0.7, 1],
                }
            ],
        },
        "shared-a": {
            "defaultValue": 0,
            "rules": [{"key": "common", "variations": [0, 1], "weights": [0.5, 0.5]}],
        },
        "shared-b": {
            "defaultValue": "x",
            # Weights GrowthBook rejects (sum 2): it buckets with equal weights.
            "rules": [{"key": "common", "variations": ["x", "y", "z"], "weights": [1, 0.5, 0.5]}],
        },
        "company-plan": {
            "defaultValue": "free",
            "rules": [
                {
                    "force": "team",
                    "condition": {"company": {"$exists": True}, "country": "FR"},
                    "coverage": 1.0,
                },
                {"key": "plan-exp", "variations": ["free", "pro"], "hashAttribute": "company"},
            ],
        },
    },
}


def subject(rng: random.Random, i: int) -> tuple[str, dict[str, Any]]:
    sid = f"u{i}"
    attrs: dict[str, Any] = {
        "id": sid,
        "country": rng.choice(COUNTRIES),
        "age": rng.randrange(15, 70),
    }
    if rng.random() < 0.7:
        attrs["deviceId"] = f"d{rng.randrange(10**9)}"
    if rng.random() < 0.4:
        attrs["company"] = rng.choice([f"c{rng.randrange(500)}", rng.randrange(1, 10**6)])
    return sid, attrs


# --- values and attributes ------------------------------------------------------------

# Subjects come from a seeded ``random.Random`` (the seed drawn by hypothesis): drawing
# thousands of attribute mappings through hypothesis would cost more than all the
# evaluations, and shrinking pays off on the payload, not on the subjects.
SCALARS: list[Any] = [
    None, True, False, 0, 1, -1, 3, 123, 456, 2**53 + 1, 10**20, -(10**12),
    0.0, -0.0, 1.5, 1e21, 1e-7, 123.0, -2.25, "", "a", "b", "0", "123", "é", "中文", "😀-",
]  # fmt: skip
HASH_VALUES: list[Any] = [
    "", "0", "é", "用户", "😀x", 0, 123, 456, 1.5, -0.5, 1e21, True, False, None, [], {},
]  # fmt: skip


def json_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 2 and roll < 0.15:
        return [json_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if depth < 2 and roll < 0.3:
        return {k: json_value(rng, depth + 1) for k in rng.sample(["a", "b"], rng.randrange(3))}
    return rng.choice(SCALARS)


def hash_value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.5:
        return "".join(rng.choice("abcXYZ019-_.") for _ in range(rng.randrange(1, 9)))
    if roll < 0.7:
        return rng.randrange(-(10**6), 10**6)
    return rng.choice(HASH_VALUES)


def attributes(rng: random.Random) -> dict[str, Any]:
    attrs: dict[str, Any] = {"id": hash_value(rng)}  # always present: see compare()
    for name in ("deviceId", "company"):
        if rng.random() < 0.5:
            attrs[name] = hash_value(rng)
    if rng.random() < 0.5:
        attrs["country"] = rng.choice(["FR", "DE", "US", "", None, 1])
    if rng.random() < 0.5:
        attrs["age"] = rng.choice([rng.randrange(91), rng.randrange(91), None, 30.5, "30"])
    if rng.random() < 0.5:
        attrs["tags"] = [rng.choice(["a", "b", 1, True]) for _ in range(rng.randrange(4))]
    if rng.random() < 0.5:
        attrs["extra"] = json_value(rng)
    return attrs


# --- rule parts -----------------------------------------------------------------------

# Comparisons are guarded by ``$type``: on a missing, null or non-number attribute the
# Python SDK (false) and the conformance cases assay follows (JavaScript's coercions, where
# null < 50 and "30" > 10) disagree. That is the condition language, tested apart.
conditions = st.one_of(
    st.just({"country": "FR"}),
    st.builds(lambda n: {"age": {"$type": "number", "$gt": n}}, st.integers(10, 70)),
    st.just({"id": {"$in": [123, 456, "u1", "a"]}}),
    st.just({"company": {"$exists": True}}),
    st.just({"country": {"$in": ["FR", "DE"]}, "age": {"$type": "number", "$lt": 50}}),
    st.just({"$or": [{"country": "US"}, {"tags": {"$elemMatch": {"$eq": "a"}}}]}),
    st.just({"extra": {"$type": "object"}}),
    st.just({"$not": {"deviceId": {"$exists": True}}}),
    # Saved groups (kept as segments by the import; see saved_groups()).
    st.just({"id": {"$inGroup": "ids"}}),
    st.just({"company": {"$notInGroup": "ids"}}),
    st.just({"$savedGroup": {"id": "companies"}}),
    st.just({"$savedGroup": {"id": "fr-or-listed"}}),
    st.just({"$or": [{"deviceId": {"$inGroup": "companies"}}, {"country": "DE"}]}),
)

unit = st.integers(0, 100).map(lambda k: k / 100)
seeds = st.sampled_from([None, "", "s1", "checkout", "ü"])
hash_versions = st.sampled_from([None, 1, 2])


@st.composite
def a_range(draw: st.DrawFn) -> list[float]:
    a, b = sorted((draw(unit), draw(unit)))
    if draw(st.integers(0, 9)) == 0:  # now and then out of [0, 1], as GrowthBook allows
        return [a - 0.2, b + 0.3]
    return [a, b]


@st.composite
def filters(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(1, 2))):
        f: dict[str, Any] = {"ranges": draw(st.lists(a_range(), min_size=1, max_size=3))}
        if draw(st.booleans()):
            f["attribute"] = draw(st.sampled_from(HASH_ATTRIBUTES))
        if draw(st.booleans()):
            f["seed"] = draw(st.sampled_from(["", "ns-a", "ns-b"]))
        if draw(st.booleans()):
            f["hashVersion"] = draw(st.sampled_from([1, 2]))
        out.append(f)
    return out


@st.composite
def parent_conditions(draw: st.DrawFn, feature: str) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(1, 2))):
        # A missing parent reads null; "$holdout:h1" is GrowthBook's holdout, a feature
        # with a key assay cannot take, present in some payloads and missing in others.
        parent = draw(st.sampled_from([*FEATURES, "ghost", HOLDOUT, "$gone:x"]))
        pc: dict[str, Any] = {"id": parent}
        if draw(st.integers(0, 5)):
            pc["condition"] = draw(
                st.sampled_from(
                    [
                        # Not the literal {"value": true}: the Python SDK compares it
                        # strictly, the conformance cases assay follows by truthiness.
                        {"value": {"$eq": True}},
                        {"value": {"$ne": "a"}},
                        {"value": {"$nin": ["a", False]}},
                        {"value": {"$type": "boolean"}},
                        {"value": {"$exists": True}},
                        {"value": {"$exists": False}},
                        {"value": {"$type": "number", "$gt": 0}},
                        {"value": "b"},
                        {"value": {"$in": ["a", 1, True]}},
                    ]
                )
            )
        if draw(st.booleans()):
            pc["gate"] = True
        out.append(pc)
    return out


def _common(draw: st.DrawFn, rule: dict[str, Any], feature: str) -> None:
    if draw(st.integers(0, 2)) == 0:
        rule["condition"] = draw(conditions)
    if draw(st.integers(0, 3)) == 0:
        rule["filters"] = draw(filters())
    if draw(st.integers(0, 3)) == 0:
        rule["parentConditions"] = draw(parent_conditions(feature))
    if draw(st.booleans()):
        rule["id"] = "r"  # made unique per feature by feature()


def _hashing(draw: st.DrawFn, rule: dict[str, Any]) -> None:
    if draw(st.booleans()):
        rule["hashAttribute"] = draw(st.sampled_from(HASH_ATTRIBUTES))
    if draw(st.integers(0, 2)) == 0:
        rule["fallbackAttribute"] = draw(st.sampled_from(HASH_ATTRIBUTES))
    if (s := draw(seeds)) is not None:
        rule["seed"] = s
    if (v := draw(hash_versions)) is not None:
        rule["hashVersion"] = v


@st.composite
def force_rule(draw: st.DrawFn, feature: str, values: st.SearchStrategy[Any]) -> dict[str, Any]:
    rule: dict[str, Any] = {"force": draw(values)}
    _common(draw, rule, feature)
    kind = draw(st.integers(0, 2))
    if kind == 1:
        rule["coverage"] = draw(unit)
        _hashing(draw, rule)
    elif kind == 2:
        rule["range"] = draw(a_range())
        _hashing(draw, rule)
    return rule


@st.composite
def explicit_ranges(draw: st.DrawFn, n: int) -> list[list[float]]:
    """Disjoint ranges, with gaps, in any order; sometimes one too many or too few, and
    sometimes a range overlapping the end of the one before (GrowthBook's first match
    then decides)."""
    count = max(1, n + draw(st.sampled_from([0, 0, 0, -1, 1])))
    cuts = sorted(draw(st.lists(unit, min_size=2 * count, max_size=2 * count)))
    ranges = [[cuts[2 * i], cuts[2 * i + 1]] for i in range(count)]
    if draw(st.booleans()):
        ranges = draw(st.permutations(ranges))
    if count > 1 and draw(st.integers(0, 4)) == 0:
        first, second = ranges[0], ranges[1]
        if first[0] < second[0] <= first[1]:
            second[0] = max(first[0], second[0] - 0.05)
    return ranges


@st.composite
def experiment_rule(
    draw: st.DrawFn,
    feature: str,
    values: st.SearchStrategy[Any],
    holdout: bool,
    sticky_mode: bool = False,
) -> dict[str, Any]:
    n = draw(st.integers(2, 4))
    rule: dict[str, Any] = {"variations": draw(st.lists(values, min_size=n, max_size=n))}
    _common(draw, rule, feature)
    _hashing(draw, rule)
    if draw(st.booleans()):
        rule["key"] = draw(st.sampled_from(["exp-a", "exp-b", "checkout test"]))
    if draw(st.booleans()):
        raw = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))
        total = sum(raw)
        rule["weights"] = [w / total for w in raw] if total > 0 and draw(st.booleans()) else raw
    if draw(st.booleans()):
        rule["coverage"] = draw(unit)
    if draw(st.integers(0, 2)) == 0:
        rule["ranges"] = draw(explicit_ranges(n))
    if draw(st.integers(0, 3)) == 0:
        start = draw(unit)
        ns = draw(st.sampled_from(["ns1", "ns2", "not a key!"]))
        rule["namespace"] = [ns, start, min(1.0, start + draw(unit))]
    keys = ["control", "treatment", "third", "fourth"]
    meta: list[dict[str, Any]] = [{} for _ in range(n)]
    if draw(st.booleans()):
        meta = [{"key": keys[i], "name": keys[i].title()} for i in range(n)]
    if holdout:
        # GrowthBook's holdout: the held-out group gets a value; the others pass through.
        for m in meta[1:]:
            m["passthrough"] = True
    elif draw(st.integers(0, 4)) == 0:
        meta[draw(st.integers(0, n - 1))]["passthrough"] = True
    if sticky_mode:
        if not any(m.get("passthrough") for m in meta) and draw(st.booleans()):
            # Sticky: variation keys to store (GrowthBook finds a stored bucket by its
            # meta key), and a key of its own (GrowthBook keys documents by it).
            for i, m in enumerate(meta):
                m.setdefault("key", keys[i])
            rule["key"] = f"sticky-{feature}"
            if len(rule.get("ranges", ())) > n:
                # A hash in a range past the last variation: GrowthBook leaves the subject
                # out but stores variation 0 as its sticky bucket, and serves it from the
                # next evaluation on (a malformed payload; the import drops such ranges).
                rule["ranges"] = rule["ranges"][:n]
            rule["bucketVersion"] = draw(st.integers(0, 1))
            if draw(st.booleans()):
                rule["minBucketVersion"] = draw(st.integers(0, rule["bucketVersion"]))
        else:
            rule["disableStickyBucketing"] = True
    if any(meta):
        rule["meta"] = meta
    return rule


@st.composite
def feature(draw: st.DrawFn, key: str, sticky_mode: bool) -> dict[str, Any]:
    values = draw(
        st.sampled_from(
            [
                st.booleans(),
                st.sampled_from(["a", "b", "c"]),
                st.sampled_from([0, 1, 2.5, -1]),
                st.one_of(st.booleans(), st.sampled_from(["a", 1]), st.just({"x": [1]})),
            ]
        )
    )
    rules: list[dict[str, Any]] = []
    has_experiment = False
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["force", "force", "experiment", "holdout", "gate"]))
        if kind == "force":
            rules.append(draw(force_rule(key, values)))
            continue
        if kind == "gate":
            # Parent conditions alone (GrowthBook's way to gate a whole feature): the
            # rule never serves a value, but its gate can end the evaluation.
            gate: dict[str, Any] = {"parentConditions": draw(parent_conditions(key))}
            if draw(st.booleans()):
                gate["condition"] = draw(conditions)
            rules.append(gate)
            continue
        holdout = kind == "holdout"
        rule = draw(experiment_rule(key, values, holdout, sticky_mode))
        passes = any(m.get("passthrough") for m in rule.get("meta", []))
        if not passes:
            if has_experiment:  # assay runs one experiment per flag, besides holdouts
                continue
            has_experiment = True
        rules.append(rule)
    for i, rule in enumerate(rules):
        if "id" in rule:
            rule["id"] = f"{key}-r{i + 1}"  # r0 is kept for a holdout rule put first
    return {"defaultValue": draw(values), "rules": rules}


@st.composite
def saved_groups(draw: st.DrawFn) -> dict[str, Any]:
    """Two list groups (with their attribute, as GrowthBook sends them) and a condition
    group using one of them."""
    subset = st.lists(st.sampled_from(SAVED_VALUES), max_size=4, unique=True)
    return {
        "ids": {"type": "list", "attributeKey": "id", "values": draw(subset)},
        "companies": {"type": "list", "attributeKey": "company", "values": draw(subset)},
        "fr-or-listed": {
            "type": "condition",
            "condition": {"$or": [{"country": "FR"}, {"$savedGroup": {"id": "ids"}}]},
        },
    }


def moved(draw: st.DrawFn, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload a while later: sticky experiments' weights and coverage changed, their
    bucket versions sometimes up (and the minimum with them)."""
    features: dict[str, Any] = {}
    for key, f in payload["features"].items():
        rules = []
        for rule in f["rules"]:
            if "bucketVersion" in rule:
                rule = dict(rule)
                n = len(rule["variations"])
                raw = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
                rule["weights"] = [w / sum(raw) for w in raw] if sum(raw) else [1 / n] * n
                rule["coverage"] = draw(st.sampled_from([0.0, 0.3, 1.0]))
                rule.pop("ranges", None)
                if draw(st.booleans()):
                    rule["bucketVersion"] += 1
                    if draw(st.integers(0, 2)):
                        rule["minBucketVersion"] = rule["bucketVersion"]
            rules.append(rule)
        features[key] = {**f, "rules": rules}
    return {**payload, "features": features}


@st.composite
def holdout(draw: st.DrawFn, sticky_mode: bool) -> dict[str, Any]:
    """A GrowthBook holdout: a feature of its own, read by others as a parent."""
    rule: dict[str, Any] = {
        "key": "h1",
        "variations": ["holdoutcontrol", "holdouttreatment"],
        "weights": [0.5, 0.5],
        "meta": [{"key": "holdoutcontrol"}, {"key": "holdouttreatment"}],
        "coverage": draw(unit),
        "hashVersion": draw(st.sampled_from([1, 2])),
    }
    if sticky_mode:
        rule["disableStickyBucketing"] = True
    return {"defaultValue": "genpop", "rules": [rule]}


@st.composite
def payloads(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One payload, or with sticky bucketing two: the payload, then the same moved."""
    sticky_mode = draw(st.integers(0, 2)) == 0
    count = draw(st.integers(1, len(FEATURES)))
    features = {k: draw(feature(k, sticky_mode)) for k in FEATURES[:count]}
    if draw(st.booleans()):
        features[HOLDOUT] = draw(holdout(sticky_mode))
        for f in features.values():
            if f is not features[HOLDOUT] and draw(st.booleans()):
                held = {"value": {"$eq": "holdoutcontrol"}}
                rule = {"parentConditions": [{"id": HOLDOUT, "condition": held}]}
                f["rules"].insert(0, {**rule, "force": f["defaultValue"]})
    payload = {"features": features, "savedGroups": draw(saved_groups())}
    return [payload, moved(draw, payload)] if sticky_mode else [payload]


# --- the snapshot an imported payload compiles to ------------------------------------


def snapshot_of(definitions: Definitions) -> Any:
    experiments = [
        Experiment(
            id=f"e-{d.key}",
            project_id=PID,
            status=d.status or ExperimentStatus.DRAFT,
            started_at=NOW,
            created_at=NOW,
            updated_at=NOW,
            **{f: getattr(d, f) for f in ExperimentSpec.__struct_fields__},
        )
        for d in definitions.experiments
    ]
    flags = [
        Flag(
            id=f"f-{s.key}",
            project_id=PID,
            created_at=NOW,
            updated_at=NOW,
            **{f: getattr(s, f) for f in FlagSpec.__struct_fields__},
        )
        for s in definitions.flags
    ]
    layers = [
        Layer(id=f"l-{x.key}", project_id=PID, key=x.key, created_at=NOW, updated_at=NOW)
        for x in definitions.layers
    ]
    segments = [
        Segment(
            id=f"s-{x.key}",
            project_id=PID,
            created_at=NOW,
            updated_at=NOW,
            **{f: getattr(x, f) for f in x.__struct_fields__},
        )
        for x in definitions.segments
    ]
    state = ConfigState(
        projects=[Project(id=PID, key="proj", created_at=NOW, updated_at=NOW)],
        flags=flags,
        experiments=experiments,
        layers=layers,
        metrics=[],
        segments=segments,
    )
    snapshot = compile_snapshot(state, 1, COMPILER)
    assert snapshot.errors == ()
    return snapshot
