"""Properties users rely on, checked through ``decide`` (not just the bucketing helpers):
ramping coverage up never reshuffles anyone, layers keep experiments mutually exclusive,
and deciding leaves the snapshot and the caller's attributes untouched."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from assay.engine._core import ConditionCompiler, Reason, Snapshot, compile_snapshot, decide
from assay.engine._model import (
    Experiment,
    ExperimentRule,
    ExperimentStatus,
    Flag,
    ForceRule,
    LayerRange,
    Project,
    RolloutRule,
    Variant,
)
from assay.engine._ports import ConfigState
from assay.plugins._growthbook_operators import GROWTHBOOK_OPERATORS

if TYPE_CHECKING:
    from collections.abc import Sequence

# Both decide paths, compiled and pure Python, must pass (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("decide_path")

NOW = datetime(2025, 1, 1, tzinfo=UTC)
PID = "p1"
COMPILER = ConditionCompiler(GROWTHBOOK_OPERATORS)
ALPHA = 0.001


def experiment(key: str, weights: Sequence[float], **fields: Any) -> Experiment:
    return Experiment(
        id=f"id-{key}",
        project_id=PID,
        key=key,
        variants=[Variant(key=f"v{i}", value=i, weight=w) for i, w in enumerate(weights)],
        status=ExperimentStatus.RUNNING,
        started_at=NOW,
        created_at=NOW,
        updated_at=NOW,
        **fields,
    )


def flag(key: str, rules: Sequence[Any]) -> Flag:
    return Flag(
        id=f"id-{key}",
        project_id=PID,
        key=key,
        default_value=None,
        rules=list(rules),
        created_at=NOW,
        updated_at=NOW,
    )


def snapshot(flags: Sequence[Flag], experiments: Sequence[Experiment] = ()) -> Snapshot:
    state = ConfigState(
        projects=[Project(id=PID, key="proj", created_at=NOW, updated_at=NOW)],
        flags=flags,
        experiments=experiments,
        layers=[],
        metrics=[],
    )
    return compile_snapshot(state, 1, COMPILER)


subjects = st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=60, unique=True)
weights = st.lists(st.floats(min_value=0.05, max_value=10.0), min_size=2, max_size=5)
coverage_pairs = st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).map(sorted)


@settings(max_examples=150, deadline=None)
@given(
    weights=weights,
    coverages=coverage_pairs,
    seed=st.one_of(st.none(), st.text(max_size=10)),
    hash_version=st.sampled_from([1, 2]),
    ids=subjects,
)
def test_raising_experiment_coverage_never_moves_an_assigned_subject(
    weights: list[float],
    coverages: list[float],
    seed: str | None,
    hash_version: int,
    ids: list[str],
) -> None:
    low, high = coverages
    f = flag("f", [ExperimentRule(experiment="exp")])

    def at(coverage: float) -> Snapshot:
        e = experiment("exp", weights, coverage=coverage, seed=seed, hash_version=hash_version)
        return snapshot([f], [e])

    before, after = at(low), at(high)
    for subject in ids:
        d_low = decide(before, PID, "f", subject, {})
        d_high = decide(after, PID, "f", subject, {})
        if d_low.in_experiment:
            assert d_high.in_experiment
            assert d_high.variant == d_low.variant
        else:
            assert d_low.experiment_reason is Reason.OUTSIDE_TRAFFIC_ALLOCATION


@settings(max_examples=150, deadline=None)
@given(
    coverages=coverage_pairs,
    seed=st.one_of(st.none(), st.text(max_size=10)),
    hash_version=st.sampled_from([1, 2]),
    ids=subjects,
)
def test_raising_rollout_coverage_only_adds_subjects(
    coverages: list[float], seed: str | None, hash_version: int, ids: list[str]
) -> None:
    low, high = coverages

    def at(coverage: float) -> Snapshot:
        rule = RolloutRule(coverage=coverage, seed=seed, hash_version=hash_version, value=True)  # type: ignore[arg-type]
        return snapshot([flag("f", [rule])])

    before, after = at(low), at(high)
    for subject in ids:
        if decide(before, PID, "f", subject, {}).reason is Reason.ROLLOUT:
            assert decide(after, PID, "f", subject, {}).reason is Reason.ROLLOUT


def layered(split: float, start: float = 0.0, end: float = 1.0, coverage: float = 1.0) -> Snapshot:
    """Two running experiments sharing layer "L": one on [start, split), one on [split, end)."""
    left = experiment(
        "left", [1, 1], coverage=coverage, layer=LayerRange(layer="L", start=start, end=split)
    )
    right = experiment(
        "right", [1, 1, 1], coverage=coverage, layer=LayerRange(layer="L", start=split, end=end)
    )
    flags = [flag("fl", [ExperimentRule(experiment="left")])]
    flags.append(flag("fr", [ExperimentRule(experiment="right")]))
    return snapshot(flags, [left, right])


@settings(max_examples=100, deadline=None)
@given(
    bounds=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).map(sorted),
    ids=subjects,
)
def test_experiments_in_one_layer_never_share_a_subject(
    bounds: list[float], ids: list[str]
) -> None:
    start, split, end = bounds
    snap = layered(split, start, end)
    for subject in ids:
        left = decide(snap, PID, "fl", subject, {})
        right = decide(snap, PID, "fr", subject, {})
        assert not (left.in_experiment and right.in_experiment)


def _namespace_share(start: float, end: float) -> float:
    # Namespaces hash with v1, i.e. onto the thousand points k/1000.
    return sum(start <= k / 1000 < end for k in range(1000)) / 1000


@pytest.mark.parametrize(
    ("start", "split", "end", "coverage"),
    [(0.0, 0.5, 1.0, 1.0), (0.1, 0.3, 0.75, 1.0), (0.2, 0.25, 0.9, 0.6)],
)
def test_layer_shares_add_up_to_the_union(
    start: float, split: float, end: float, coverage: float
) -> None:
    snap = layered(split, start, end, coverage)
    n = 30_000
    counts = [0, 0, 0]  # left, right, neither
    for i in range(n):
        subject = f"subject-{i}"
        left = decide(snap, PID, "fl", subject, {}).in_experiment
        right = decide(snap, PID, "fr", subject, {}).in_experiment
        assert not (left and right)
        counts[0 if left else 1 if right else 2] += 1
    p_left = _namespace_share(start, split) * coverage
    p_right = _namespace_share(split, end) * coverage
    expected = [p_left * n, p_right * n, (1 - p_left - p_right) * n]
    # A category that cannot happen (no one outside a layer covered end to end) must stay
    # empty; the others go through the goodness-of-fit test.
    assert all(c == 0 for c, e in zip(counts, expected, strict=True) if e < 1e-9)
    observed = [c for c, e in zip(counts, expected, strict=True) if e >= 1e-9]
    wanted = [e for e in expected if e >= 1e-9]
    assert chisquare(observed, wanted).pvalue > ALPHA
    union = (counts[0] + counts[1]) / n
    p_union = p_left + p_right
    assert abs(union - p_union) <= 4.5 * math.sqrt(p_union * (1 - p_union) / n)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
attributes = st.dictionaries(
    st.sampled_from(["id", "country", "age", "plan", "deviceId", "x"]), json_values, max_size=6
)


SHARED = snapshot(
    [
        flag(
            "f",
            [
                ForceRule(condition={"plan": {"$in": ["pro", "team"]}}, value="forced"),
                ExperimentRule(experiment="exp"),
                RolloutRule(coverage=0.5, value="rolled", hash_attribute="deviceId"),
            ],
        ),
    ],
    [
        experiment(
            "exp",
            [1, 2, 3],
            coverage=0.8,
            condition={"age": {"$gte": 18}, "country": {"$in": ["FR", "DE"]}},
            layer=LayerRange(layer="L", start=0.1, end=0.9),
            fallback_attribute="deviceId",
        )
    ],
)


@settings(max_examples=300, deadline=None)
@given(subject=st.text(max_size=20), attrs=attributes)
def test_decide_mutates_neither_the_snapshot_nor_the_attributes(
    subject: str, attrs: dict[str, Any]
) -> None:
    before_snapshot = repr(SHARED)
    before_attrs = msgspec.json.encode(attrs)
    first = decide(SHARED, PID, "f", subject, attrs)
    second = decide(SHARED, PID, "f", subject, attrs)
    assert repr(SHARED) == before_snapshot
    assert msgspec.json.encode(attrs) == before_attrs
    # deterministic: the same question gets the same answer
    assert msgspec.structs.replace(second, decision_id="", decided_at=0) == msgspec.structs.replace(
        first, decision_id="", decided_at=0
    )


def test_snapshot_and_compiled_objects_are_frozen() -> None:
    compiled = SHARED.flag(PID, "f")
    assert compiled is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        SHARED.version = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        compiled.enabled = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        SHARED.flags[(PID, "g")] = compiled.flag  # type: ignore[index]
    with pytest.raises(TypeError):
        SHARED.project_flags[PID]["g"] = compiled  # type: ignore[index]
    assert isinstance(compiled.rules, tuple)
    with pytest.raises(AttributeError):
        compiled.rules[1].experiment.ranges.append((0.0, 1.0))  # type: ignore[union-attr]
