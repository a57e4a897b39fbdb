"""The rule language GrowthBook payloads use, decided one behaviour at a time: explicit
bucket ranges, rollout ranges, hash filters, parent conditions (gate, missing parent,
cycles), passthrough variants and per-subject forced variations.

The differential test (tests/adapters/growthbook/test_import_differential.py) holds all of it to
GrowthBook's SDK on generated payloads; these tests pin what assay adds on top (reason
codes, forced variations, mixed cycles, cache keys) and name each behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from assay.engine._core import ConditionCompiler, Reason, Snapshot, compile_snapshot, decide
from assay.engine._core._bucketing import gb_hash
from assay.engine._model import (
    Experiment,
    ExperimentRule,
    ExperimentStatus,
    Flag,
    FlagType,
    ForcedVariation,
    ForceRule,
    HashFilter,
    ParentCondition,
    Prerequisite,
    Project,
    RolloutRule,
    Rule,
    Variant,
)
from assay.engine._ports import ConfigState
from assay.plugins._growthbook_operators import GROWTHBOOK_OPERATORS

# Both decide paths, compiled and pure Python, must pass (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("decide_path")

NOW = datetime(2025, 1, 1, tzinfo=UTC)
PID = "p1"
COMPILER = ConditionCompiler(GROWTHBOOK_OPERATORS)


def make_flag(
    key: str,
    rules: Sequence[Rule] = (),
    *,
    default: Any = "default",
    prerequisites: Sequence[Prerequisite] = (),
    revision: int = 1,
) -> Flag:
    return Flag(
        id=f"flag-{key}",
        project_id=PID,
        key=key,
        type=FlagType.JSON,
        default_value=default,
        prerequisites=list(prerequisites),
        rules=list(rules),
        revision=revision,
        created_at=NOW,
        updated_at=NOW,
    )


def make_experiment(key: str, **fields: Any) -> Experiment:
    fields.setdefault(
        "variants", [Variant(key="control", value="a"), Variant(key="treatment", value="b")]
    )
    return Experiment(
        id=f"exp-{key}",
        project_id=PID,
        key=key,
        status=ExperimentStatus.RUNNING,
        started_at=NOW,
        created_at=NOW,
        updated_at=NOW,
        **fields,
    )


def make_snapshot(flags: Sequence[Flag], experiments: Sequence[Experiment] = ()) -> Snapshot:
    project = Project(id=PID, key="proj", created_at=NOW, updated_at=NOW)
    state = ConfigState(
        projects=[project], flags=flags, experiments=experiments, layers=[], metrics=[]
    )
    snapshot = compile_snapshot(state, 1, COMPILER)
    assert snapshot.errors == ()
    return snapshot


def find_subject(predicate: Callable[[str], bool], prefix: str = "user-") -> str:
    return next(f"{prefix}{i}" for i in range(200_000) if predicate(f"{prefix}{i}"))


def parent(flag: str, condition: dict[str, Any], *, gate: bool = False) -> ParentCondition:
    return ParentCondition(flag=flag, condition=condition, gate=gate)


def test_explicit_ranges_decide_instead_of_coverage_and_weights() -> None:
    # Gaps, not starting at 0, out of order: variant b owns [0.1, 0.2), a owns [0.5, 0.7).
    e = msgspec.structs.replace(
        make_experiment("exp", coverage=0.0), ranges=[(0.5, 0.7), (0.1, 0.2)]
    )
    snap = make_snapshot([make_flag("f", [ExperimentRule(experiment="exp")])], [e])
    for expected, lo, hi in (("control", 0.5, 0.7), ("treatment", 0.1, 0.2)):
        subject = find_subject(lambda s, lo=lo, hi=hi: lo <= gb_hash("exp", s, 2) < hi)
        d = decide(snap, PID, "f", subject)
        assert (d.reason, d.variant) == (Reason.EXPERIMENT_ASSIGNED, expected)
    gap = find_subject(lambda s: 0.2 <= gb_hash("exp", s, 2) < 0.5)
    d = decide(snap, PID, "f", gap)
    assert (d.reason, d.experiment_reason) == (Reason.DEFAULT, Reason.OUTSIDE_TRAFFIC_ALLOCATION)


def test_a_rollout_range_includes_start_and_excludes_end() -> None:
    rule = RolloutRule(value="in", range=(0.3, 0.6), seed="s")
    snap = make_snapshot([make_flag("f", [rule])])
    inside = find_subject(lambda s: 0.3 <= gb_hash("s", s, 2) < 0.6)
    outside = find_subject(lambda s: gb_hash("s", s, 2) < 0.3)
    assert decide(snap, PID, "f", inside).reason is Reason.ROLLOUT
    assert decide(snap, PID, "f", outside).reason is Reason.DEFAULT


def test_filters_must_all_pass_and_read_their_own_attribute() -> None:
    rule = ForceRule(
        value="in",
        filters=[
            HashFilter(attribute="company", seed="a", ranges=[(0.0, 0.5)]),
            HashFilter(attribute="company", seed="b", hash_version=1, ranges=[(0.5, 1.0)]),
        ],
    )
    snap = make_snapshot([make_flag("f", [rule])])

    def passes(c: str) -> bool:
        return gb_hash("a", c, 2) < 0.5 and gb_hash("b", c, 1) >= 0.5

    good = find_subject(passes, "co-")
    bad = find_subject(lambda c: gb_hash("a", c, 2) < 0.5 and not passes(c), "co-")
    assert decide(snap, PID, "f", "u", {"company": good}).value == "in"
    assert decide(snap, PID, "f", "u", {"company": bad}).value == "default"
    # No fallback to the subject id: without the attribute, filtered out.
    assert decide(snap, PID, "f", good).value == "default"


def test_a_gate_ends_the_flag_with_no_value_and_a_failed_parent_skips_the_rule() -> None:
    flags = [
        make_flag("parent", [ForceRule(condition={"plan": "pro"}, value="on")], default="off"),
        make_flag(
            "child",
            [
                ForceRule(value="skipped", parent_conditions=[parent("parent", {"value": "on"})]),
                ForceRule(
                    value="gated-through",
                    parent_conditions=[parent("parent", {"value": "on"}, gate=True)],
                ),
            ],
        ),
    ]
    snap = make_snapshot(flags)
    pro = decide(snap, PID, "child", "u", {"plan": "pro"})
    assert (pro.value, pro.reason) == ("skipped", Reason.FORCED)
    free = decide(snap, PID, "child", "u", {"plan": "free"})
    assert (free.value, free.reason, free.rule) == (None, Reason.PREREQUISITE_GATE, "rules[1]")


def test_a_missing_parent_reads_null() -> None:
    rules = [ForceRule(value="no parent", parent_conditions=[parent("ghost", {"value": None})])]
    snap = make_snapshot([make_flag("f", rules)])
    assert decide(snap, PID, "f", "u").value == "no parent"


def test_a_parent_that_is_an_experiment_is_decided_in_full() -> None:
    e = make_experiment("exp")
    flags = [
        make_flag("parent", [ExperimentRule(experiment="exp")]),
        make_flag(
            "child",
            [ForceRule(value="b-side", parent_conditions=[parent("parent", {"value": "b"})])],
        ),
    ]
    snap = make_snapshot(flags, [e])
    for subject in ("u1", "u2", "u3", "u4", "u5", "u6"):
        served = decide(snap, PID, "parent", subject).value
        expected = "b-side" if served == "b" else "default"
        assert decide(snap, PID, "child", subject).value == expected


def test_a_cycle_of_parents_ends_as_growthbook_ends_it() -> None:
    flags = [
        make_flag("a", [ForceRule(value="a", parent_conditions=[parent("b", {})])]),
        make_flag("b", [ForceRule(value="b", parent_conditions=[parent("a", {})])]),
        make_flag("c", [ForceRule(value="c", parent_conditions=[parent("a", {})])]),
    ]
    snap = make_snapshot(flags)
    for key in ("a", "b", "c"):
        d = decide(snap, PID, key, "u")
        assert (d.value, d.reason) == (None, Reason.PREREQUISITE_CYCLE), key


def test_a_cycle_through_a_flag_prerequisite_and_a_parent_terminates() -> None:
    flags = [
        make_flag("a", [ForceRule(value="a")], prerequisites=[Prerequisite(flag="b", value="b")]),
        make_flag("b", [ForceRule(value="b", parent_conditions=[parent("a", {})])]),
    ]
    snap = make_snapshot(flags)
    # a's prerequisite b reads a again: the prerequisite fails (it never recurses).
    assert decide(snap, PID, "a", "u").reason is Reason.PREREQUISITE_FAILED
    # b's parent a fails its prerequisite (on b) and serves its default, a value like any.
    assert decide(snap, PID, "b", "u").value == "b"


def test_a_passthrough_variant_enrols_and_lets_the_next_rule_decide() -> None:
    hold = msgspec.structs.replace(
        make_experiment("hold"),
        variants=[
            Variant(key="held", value="held"),
            Variant(key="rest", value="x", passthrough=True),
        ],
    )
    flag = make_flag("f", [ExperimentRule(experiment="hold"), ForceRule(value="feature")])
    snap = make_snapshot([flag], [hold])
    rest = find_subject(lambda s: gb_hash("hold", s, 2) >= 0.5)
    held = find_subject(lambda s: gb_hash("hold", s, 2) < 0.5)
    d = decide(snap, PID, "f", rest)
    assert (d.value, d.reason, d.experiment, d.experiment_reason) == (
        "feature",
        Reason.FORCED,
        "hold",
        Reason.PASSTHROUGH,
    )
    assert decide(snap, PID, "f", held).variant == "held"


def test_forced_variations_pin_listed_subjects_with_their_types() -> None:
    e = make_experiment(
        "exp",
        condition={"never": True},  # forced subjects skip targeting and hashing
        forced_variations=[
            ForcedVariation(variant="treatment", values=["qa-1", 42]),
            ForcedVariation(variant="control", attribute="email", values=["a@b.c", True]),
        ],
    )
    snap = make_snapshot([make_flag("f", [ExperimentRule(experiment="exp")])], [e])
    d = decide(snap, PID, "f", "qa-1")
    assert (d.value, d.variant, d.reason, d.in_experiment, d.experiment) == (
        "b",
        "treatment",
        Reason.FORCED_VARIATION,
        False,  # not enrolled: a forced subject is not part of the analysis
        "exp",
    )
    assert decide(snap, PID, "f", "x", {"id": 42.0}).variant == "treatment"  # 42 == 42.0
    assert decide(snap, PID, "f", "x", {"id": "42"}).reason is Reason.DEFAULT  # typed
    assert decide(snap, PID, "f", "x", {"email": "a@b.c"}).variant == "control"
    assert decide(snap, PID, "f", "x", {"email": 1}).reason is Reason.DEFAULT  # true != 1
    paused = msgspec.structs.replace(e, status=ExperimentStatus.PAUSED)
    snap = make_snapshot([make_flag("f", [ExperimentRule(experiment="exp")])], [paused])
    assert decide(snap, PID, "f", "qa-1").reason is Reason.DEFAULT


def test_a_change_to_a_parent_changes_the_childs_cache_key() -> None:
    child = make_flag("child", [ForceRule(value=1, parent_conditions=[parent("p", {})])])
    before = make_snapshot([child, make_flag("p")]).flag(PID, "child")
    after = make_snapshot([child, make_flag("p", revision=2)]).flag(PID, "child")
    unrelated = make_snapshot([child, make_flag("p"), make_flag("q", revision=3)])
    assert before is not None
    assert after is not None
    assert before.cache_key != after.cache_key
    assert unrelated.flag(PID, "child").cache_key == before.cache_key  # type: ignore[union-attr]


# --- the rule language with sticky bucketing (GrowthBook's JavaScript SDK's order) -----


def test_sticky_bucketing_comes_after_forced_variations_and_filters() -> None:
    """A forced variation wins over a stored bucket and is never stored; a subject
    filtered out is out even with a stored bucket (GrowthBook checks a rule's filters
    before the experiment reads sticky buckets); otherwise the stored bucket decides."""
    half = HashFilter(seed="f", ranges=[(0.0, 0.5)])
    e = make_experiment(
        "exp",
        sticky_bucketing=True,
        filters=[half],
        forced_variations=[ForcedVariation(variant="control", values=["qa"])],
    )
    snap = make_snapshot([make_flag("f", [ExperimentRule(experiment="exp")])], [e])
    docs = {("id", s): {"exp__0": "treatment"} for s in ("qa", "in", "out")}
    d = decide(snap, PID, "f", "qa", sticky=docs)
    assert (d.reason, d.variant, d.sticky_bucket) == (Reason.FORCED_VARIATION, "control", None)
    inside = find_subject(lambda s: gb_hash("f", s, 2) < 0.5)
    outside = find_subject(lambda s: gb_hash("f", s, 2) >= 0.5)
    docs = {("id", s): {"exp__0": "treatment"} for s in (inside, outside)}
    d = decide(snap, PID, "f", inside, sticky=docs)
    assert (d.reason, d.variant) == (Reason.STICKY_BUCKET, "treatment")
    d = decide(snap, PID, "f", outside, sticky=docs)
    assert (d.in_experiment, d.experiment_reason) == (False, Reason.LAYER_CONFLICT)


def test_a_stored_bucket_outlasts_a_change_of_targeting() -> None:
    """DESIGN: a sticky experiment keeps each subject in the variant it first got even when
    targeting changes. As GrowthBook's JavaScript SDK orders it, the stored assignment is
    read before the condition: a subject assigned while matching keeps its variant after
    its attributes, or the condition, stop matching; one without an assignment is still
    out (and nothing is stored for it)."""

    def snapshot(condition: dict[str, Any]) -> Snapshot:
        e = make_experiment("exp", sticky_bucketing=True, condition=condition)
        return make_snapshot([make_flag("f", [ExperimentRule(experiment="exp")])], [e])

    fr = snapshot({"country": "FR"})
    first = decide(fr, PID, "f", "u", {"country": "FR"}, sticky={})
    assert first.reason is Reason.EXPERIMENT_ASSIGNED
    write = first.sticky_bucket
    assert write is not None
    docs = {(write.attribute, write.value): {write.key: write.variant}}
    expected = (first.value, first.variant, Reason.STICKY_BUCKET, True, None)

    def outcome(snap: Snapshot, subject: str, country: str) -> tuple[Any, ...]:
        d = decide(snap, PID, "f", subject, {"country": country}, sticky=docs)
        return (d.value, d.variant, d.reason, d.in_experiment, d.sticky_bucket)

    # The subject's attributes changed; then the experiment's condition changed.
    assert outcome(fr, "u", "DE") == expected
    assert outcome(snapshot({"country": "DE"}), "u", "FR") == expected
    # Without a stored assignment the condition still applies.
    miss = decide(fr, PID, "f", "v", {"country": "DE"}, sticky=docs)
    assert (miss.in_experiment, miss.experiment_reason, miss.sticky_bucket) == (
        False,
        Reason.TARGETING_MISMATCH,
        None,
    )
    # An assignment under a blocked version is none: the condition applies first, then
    # the block keeps a matching subject out.
    blocked = make_experiment(
        "exp",
        sticky_bucketing=True,
        condition={"country": "FR"},
        bucket_version=1,
        min_bucket_version=1,
    )
    snap = make_snapshot([make_flag("f", [ExperimentRule(experiment="exp")])], [blocked])
    assert decide(snap, PID, "f", "u", {"country": "DE"}, sticky=docs).experiment_reason is (
        Reason.TARGETING_MISMATCH
    )
    assert decide(snap, PID, "f", "u", {"country": "FR"}, sticky=docs).experiment_reason is (
        Reason.STICKY_BUCKET_BLOCKED
    )


def test_filters_and_parent_conditions_still_come_before_a_stored_bucket() -> None:
    """GrowthBook's JavaScript SDK checks a rule's parent conditions and filters before the
    experiment runs, so a stored bucket does not outlast them; a subject failing both the
    filters and the condition is reported as without stickiness (the condition first)."""
    half = HashFilter(seed="f", ranges=[(0.0, 0.5)])
    e = make_experiment("exp", sticky_bucketing=True, filters=[half], condition={"country": "FR"})
    rule = ExperimentRule(experiment="exp", parent_conditions=[parent("gate", {"value": True})])
    gate = make_flag("gate", [ForceRule(value=True, condition={"beta": True})], default=False)
    snap = make_snapshot([gate, make_flag("f", [rule])], [e])
    inside = find_subject(lambda s: gb_hash("f", s, 2) < 0.5)
    outside = find_subject(lambda s: gb_hash("f", s, 2) >= 0.5)
    docs = {("id", s): {"exp__0": "treatment"} for s in (inside, outside)}

    def outcome(subject: str, **attrs: Any) -> tuple[Any, ...]:
        d = decide(snap, PID, "f", subject, attrs, sticky=docs)
        return (d.reason, d.variant, d.experiment_reason)

    assert outcome(inside, beta=True, country="DE") == (Reason.STICKY_BUCKET, "treatment", None)
    assert outcome(inside, beta=False, country="FR") == (Reason.DEFAULT, None, None)
    assert outcome(outside, beta=True, country="FR") == (
        Reason.DEFAULT,
        None,
        Reason.LAYER_CONFLICT,
    )
    assert outcome(outside, beta=True, country="DE") == (
        Reason.DEFAULT,
        None,
        Reason.TARGETING_MISMATCH,
    )


def test_a_stored_passthrough_bucket_still_passes_through() -> None:
    e = make_experiment(
        "exp",
        sticky_bucketing=True,
        variants=[
            Variant(key="held", value="h"),
            Variant(key="through", value="t", passthrough=True),
        ],
    )
    flag = make_flag("f", [ExperimentRule(experiment="exp"), ForceRule(value="next")])
    snap = make_snapshot([flag], [e])
    d = decide(snap, PID, "f", "u", sticky={("id", "u"): {"exp__0": "through"}})
    assert (d.value, d.reason, d.experiment_reason) == ("next", Reason.FORCED, Reason.PASSTHROUGH)
    d = decide(snap, PID, "f", "u", sticky={("id", "u"): {"exp__0": "held"}})
    assert (d.value, d.reason) == ("h", Reason.STICKY_BUCKET)


def test_fallback_sticky_only_counts_for_sticky_experiments_only() -> None:
    """GrowthBook hashes with an experiment's fallback attribute only under sticky
    bucketing: so does assay with ``fallback_sticky_only``; without it, always."""
    attrs = {"id": None, "device": "d1"}

    def outcome(**fields: Any) -> tuple[bool, Any]:
        e = make_experiment("exp", fallback_attribute="device", **fields)
        snap = make_snapshot([make_flag("f", [ExperimentRule(experiment="exp")])], [e])
        d = decide(snap, PID, "f", "s", attrs)
        write = d.sticky_bucket
        return d.in_experiment, None if write is None else (write.attribute, write.value)

    assert outcome(fallback_sticky_only=True) == (False, None)
    assert outcome(fallback_sticky_only=True, sticky_bucketing=True) == (True, ("device", "d1"))
    assert outcome(fallback_sticky_only=False) == (True, None)
