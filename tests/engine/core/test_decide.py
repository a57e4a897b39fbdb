"""The decide path, reason by reason, on small hand-built snapshots.

Expected variants are computed independently of decide from the (conformance-tested)
bucketing primitives, so these tests check decide's order of evaluation and bookkeeping,
not the hash arithmetic again.
"""

from __future__ import annotations

import struct
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from assay.engine._core import (
    ConditionCompiler,
    Decision,
    Reason,
    Snapshot,
    compile_snapshot,
    decide,
    decide_all,
)
from assay.engine._core._bucketing import (
    choose_variation,
    gb_hash,
    get_bucket_ranges,
    in_namespace,
)
from assay.engine._core._snapshot import index_snapshot
from assay.engine._model import (
    Experiment,
    ExperimentRule,
    ExperimentStatus,
    Flag,
    FlagType,
    ForcedVariation,
    ForceRule,
    LayerRange,
    ParentCondition,
    Prerequisite,
    Project,
    RolloutRule,
    Rule,
    Variant,
)
from assay.engine._ports import ConfigState
from assay.plugins._growthbook_operators import GROWTHBOOK_OPERATORS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

# Both decide paths, compiled and pure Python, must pass (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("decide_path")

NOW = datetime(2025, 1, 1, tzinfo=UTC)
PID = "p1"
RUNNING = ExperimentStatus.RUNNING


def make_project(pid: str = PID) -> Project:
    return Project(id=pid, key=f"key-{pid}", created_at=NOW, updated_at=NOW)


def make_flag(
    key: str,
    rules: Sequence[Rule] = (),
    *,
    default: Any = "default",
    enabled: bool = True,
    prerequisites: Sequence[Prerequisite] = (),
    revision: int = 1,
    pid: str = PID,
) -> Flag:
    return Flag(
        id=f"flag-{pid}-{key}",
        project_id=pid,
        key=key,
        type=FlagType.STRING,
        default_value=default,
        enabled=enabled,
        prerequisites=list(prerequisites),
        rules=list(rules),
        revision=revision,
        created_at=NOW,
        updated_at=NOW,
    )


def make_experiment(
    key: str,
    variants: Sequence[tuple[str, Any]] = (("control", "a"), ("treatment", "b")),
    *,
    status: ExperimentStatus = RUNNING,
    started_at: datetime | None = NOW,
    pid: str = PID,
    **fields: Any,
) -> Experiment:
    return Experiment(
        id=f"exp-{pid}-{key}",
        project_id=pid,
        key=key,
        variants=[Variant(key=k, value=v) for k, v in variants],
        status=status,
        started_at=started_at,
        created_at=NOW,
        updated_at=NOW,
        **fields,
    )


def make_snapshot(
    flags: Sequence[Flag],
    experiments: Sequence[Experiment] = (),
    *,
    version: int = 7,
    compiler: ConditionCompiler | None = None,
) -> Snapshot:
    state = ConfigState(
        projects=[make_project()], flags=flags, experiments=experiments, layers=[], metrics=[]
    )
    return compile_snapshot(
        state,
        version,
        compiler if compiler is not None else ConditionCompiler(GROWTHBOOK_OPERATORS),
    )


def find_subject(predicate: Callable[[str], bool], prefix: str = "user-") -> str:
    for i in range(200_000):
        subject = f"{prefix}{i}"
        if predicate(subject):
            return subject
    raise AssertionError("no subject satisfies the predicate")


def expected_variant(e: Experiment, hash_value: str) -> int:
    """What GrowthBook's runExperiment picks, from the bucketing primitives."""
    total = sum(v.weight for v in e.variants)
    weights = [v.weight / total for v in e.variants]
    n = gb_hash(e.seed or e.key, hash_value, e.hash_version)
    assert n is not None
    return choose_variation(n, get_bucket_ranges(len(e.variants), e.coverage, weights))


def check(
    d: Decision,
    *,
    value: Any,
    reason: Reason,
    variant: str | None = None,
    rule: str | None = None,
    experiment: str | None = None,
    experiment_reason: Reason | None = None,
    in_experiment: bool = False,
) -> None:
    got = (d.value, d.reason, d.variant, d.rule, d.experiment, d.experiment_reason)
    want = (value, reason, variant, rule, experiment, experiment_reason)
    assert got == want
    assert d.in_experiment is in_experiment


# --- flag lookup and kill switch -------------------------------------------------------


def test_unknown_flag_and_unknown_project_are_flag_not_found() -> None:
    snap = make_snapshot([make_flag("f")])
    for pid, key in ((PID, "nope"), ("other-project", "f")):
        d = decide(snap, pid, key, "u1", {})
        check(d, value=None, reason=Reason.FLAG_NOT_FOUND)
        assert d.flag_revision == 0
        assert d.flag == key
        assert d.snapshot_version == 7


def test_kill_switch_serves_default_before_any_rule() -> None:
    snap = make_snapshot([make_flag("f", [ForceRule(value="forced")], enabled=False)])
    check(decide(snap, PID, "f", "u1", {}), value="default", reason=Reason.FLAG_OFF)


def test_no_rules_serve_the_default() -> None:
    snap = make_snapshot([make_flag("f", revision=4)])
    d = decide(snap, PID, "f", "u1", {})
    check(d, value="default", reason=Reason.DEFAULT)
    assert d.flag_revision == 4


# --- prerequisites ---------------------------------------------------------------------


def gated(prerequisite_flag: str, value: Any = True) -> Flag:
    return make_flag(
        "child",
        [ForceRule(id="on", value="child-on")],
        prerequisites=[Prerequisite(flag=prerequisite_flag, value=value)],
    )


def test_prerequisite_that_holds_lets_rules_run() -> None:
    snap = make_snapshot([make_flag("parent", default=True), gated("parent")])
    check(decide(snap, PID, "child", "u1", {}), value="child-on", reason=Reason.FORCED, rule="on")


def test_prerequisite_with_another_value_fails() -> None:
    snap = make_snapshot([make_flag("parent", default=False), gated("parent")])
    d = decide(snap, PID, "child", "u1", {})
    check(d, value="default", reason=Reason.PREREQUISITE_FAILED)


def test_prerequisite_value_depends_on_the_same_subject() -> None:
    parent = make_flag("parent", [ForceRule(condition={"beta": True}, value=True)], default=False)
    snap = make_snapshot([parent, gated("parent")])
    assert decide(snap, PID, "child", "u1", {"beta": True}).reason is Reason.FORCED
    assert decide(snap, PID, "child", "u1", {"beta": False}).reason is Reason.PREREQUISITE_FAILED


def test_prerequisite_compares_with_json_equality() -> None:
    parent = make_flag("parent", default={"a": 1, "b": [1, 2]})
    assert (
        decide(
            make_snapshot([parent, gated("parent", {"b": [1.0, 2], "a": 1.0})]),
            PID,
            "child",
            "u",
            {},
        ).reason
        is Reason.FORCED
    )
    # true is not 1 in JSON, although it is in Python
    bool_parent = make_flag("parent", default=True)
    d = decide(make_snapshot([bool_parent, gated("parent", 1)]), PID, "child", "u", {})
    assert d.reason is Reason.PREREQUISITE_FAILED


def test_prerequisite_that_is_off_fails_even_when_its_default_matches() -> None:
    snap = make_snapshot([make_flag("parent", default=True, enabled=False), gated("parent")])
    check(decide(snap, PID, "child", "u1", {}), value="default", reason=Reason.PREREQUISITE_FAILED)


def test_missing_prerequisite_fails() -> None:
    snap = make_snapshot([gated("ghost")])
    check(decide(snap, PID, "child", "u1", {}), value="default", reason=Reason.PREREQUISITE_FAILED)


def test_chained_prerequisites() -> None:
    def chain(root_enabled: bool) -> Snapshot:
        root = make_flag("root", default=True, enabled=root_enabled)
        middle = make_flag(
            "middle",
            [ForceRule(value=True)],
            default=True,
            prerequisites=[Prerequisite(flag="root", value=True)],
        )
        return make_snapshot([root, middle, gated("middle")])

    check(
        decide(chain(True), PID, "child", "u", {}),
        value="child-on",
        reason=Reason.FORCED,
        rule="on",
    )
    # root off -> middle gated (its served default True would match, but it is gated)
    d = decide(chain(False), PID, "child", "u", {})
    check(d, value="default", reason=Reason.PREREQUISITE_FAILED)
    assert decide(chain(False), PID, "middle", "u", {}).reason is Reason.PREREQUISITE_FAILED


def test_prerequisite_cycle_is_cut_reported_and_fails() -> None:
    a = make_flag("a", [ForceRule(value=True)], prerequisites=[Prerequisite(flag="b")])
    b = make_flag("b", [ForceRule(value=True)], prerequisites=[Prerequisite(flag="a")])
    snap = make_snapshot([a, b])
    assert [e.code for e in snap.errors] == ["prerequisite_cycle"]
    assert decide(snap, PID, "a", "u", {}).reason is Reason.PREREQUISITE_FAILED
    assert decide(snap, PID, "b", "u", {}).reason is Reason.PREREQUISITE_FAILED


# --- force and rollout -----------------------------------------------------------------


def test_force_rule_matches_on_condition_and_names_the_rule() -> None:
    flag = make_flag(
        "f",
        [
            ForceRule(id="fr", condition={"country": "FR"}, value="fr"),
            ForceRule(condition={"country": {"$in": ["DE", "AT"]}}, value="de"),
        ],
    )
    snap = make_snapshot([flag])
    check(
        decide(snap, PID, "f", "u", {"country": "FR"}), value="fr", reason=Reason.FORCED, rule="fr"
    )
    check(
        decide(snap, PID, "f", "u", {"country": "AT"}),
        value="de",
        reason=Reason.FORCED,
        rule="rules[1]",
    )
    check(decide(snap, PID, "f", "u", {"country": "US"}), value="default", reason=Reason.DEFAULT)


def test_first_applicable_rule_wins_between_force_and_rollout() -> None:
    rollout = RolloutRule(id="all", coverage=1.0, value="rolled")
    force = ForceRule(id="vip", condition={"vip": True}, value="vip")
    snap_force_first = make_snapshot([make_flag("f", [force, rollout])])
    snap_rollout_first = make_snapshot([make_flag("f", [rollout, force])])
    vip = {"vip": True}
    assert decide(snap_force_first, PID, "f", "u", vip).rule == "vip"
    assert decide(snap_force_first, PID, "f", "u", {}).rule == "all"
    assert decide(snap_rollout_first, PID, "f", "u", vip).rule == "all"


def test_rollout_uses_growthbook_inclusion() -> None:
    coverage = 0.3
    flag = make_flag("f", [RolloutRule(id="r", coverage=coverage, value="on", hash_version=2)])
    snap = make_snapshot([flag])
    inside = outside = 0
    for i in range(2000):
        subject = f"s{i}"
        n = gb_hash("f", subject, 2)  # seed defaults to the flag key
        assert n is not None
        d = decide(snap, PID, "f", subject, {})
        if n <= coverage:
            inside += 1
            check(d, value="on", reason=Reason.ROLLOUT, rule="r")
            assert d.hash_value == subject
        else:
            outside += 1
            check(d, value="default", reason=Reason.DEFAULT)
    assert inside > 400
    assert outside > 1200


def test_rollout_seed_and_coverage_bounds() -> None:
    seeded = make_snapshot([make_flag("f", [RolloutRule(coverage=0.5, seed="s", value=1)])])
    subject = find_subject(lambda s: (gb_hash("s", s, 2) or 0) <= 0.5 < (gb_hash("f", s, 2) or 0))
    assert decide(seeded, PID, "f", subject, {}).reason is Reason.ROLLOUT
    zero = make_snapshot([make_flag("f", [RolloutRule(coverage=0.0, value=1)])])
    # even a subject hashing to exactly 0 is excluded at coverage 0, as in GrowthBook
    at_zero = find_subject(lambda s: gb_hash("f", s, 2) == 0.0)
    assert decide(zero, PID, "f", at_zero, {}).reason is Reason.DEFAULT


def test_rollout_includes_a_hash_exactly_on_the_coverage_like_the_javascript_sdk() -> None:
    snap = make_snapshot([make_flag("f", [RolloutRule(coverage=0.5, value="on")])])
    on_the_edge = find_subject(lambda s: gb_hash("f", s, 2) == 0.5)
    assert decide(snap, PID, "f", on_the_edge, {}).reason is Reason.ROLLOUT


def test_rollout_hash_attribute_fallback_and_missing() -> None:
    rule = RolloutRule(
        id="r", coverage=1.0, value="on", hash_attribute="device", fallback_attribute="anon"
    )
    snap = make_snapshot([make_flag("f", [rule])])
    d = decide(snap, PID, "f", "u", {"device": "d1"})
    assert (d.reason, d.hash_value) == (Reason.ROLLOUT, "d1")
    d = decide(snap, PID, "f", "u", {"anon": "a1", "device": ""})
    assert (d.reason, d.hash_value) == (Reason.ROLLOUT, "a1")
    # missing and non-hashable values (booleans, zero, objects) skip the rule
    for attrs in ({}, {"device": True}, {"device": 0}, {"device": {"x": 1}}):
        assert decide(snap, PID, "f", "u", attrs).reason is Reason.DEFAULT
    # numbers hash as JavaScript prints them
    assert decide(snap, PID, "f", "u", {"device": 12.0}).hash_value == "12"


# --- experiment rules ------------------------------------------------------------------


def exp_flag(*experiment_keys: str, tail: Sequence[Rule] = ()) -> Flag:
    rules: list[Rule] = [ExperimentRule(id=f"r-{k}", experiment=k) for k in experiment_keys]
    return make_flag("f", [*rules, *tail])


def test_experiment_assigns_the_variant_growthbook_would() -> None:
    e = make_experiment("exp", (("control", "a"), ("b", "b"), ("c", "c")), coverage=0.9, seed="sd")
    snap = make_snapshot([exp_flag("exp")], [e])
    seen = set()
    for i in range(600):
        subject = f"s{i}"
        index = expected_variant(e, subject)
        d = decide(snap, PID, "f", subject, {})
        if index < 0:
            check(
                d,
                value="default",
                reason=Reason.DEFAULT,
                experiment="exp",
                experiment_reason=Reason.OUTSIDE_TRAFFIC_ALLOCATION,
            )
        else:
            variant = e.variants[index]
            check(
                d,
                value=variant.value,
                reason=Reason.EXPERIMENT_ASSIGNED,
                variant=variant.key,
                rule="r-exp",
                experiment="exp",
                in_experiment=True,
            )
            assert d.hash_value == subject
            seen.add(variant.key)
    assert seen == {"control", "b", "c"}


def test_relative_weights_are_normalised_and_growthbook_shares_kept() -> None:
    relative = make_experiment("rel", (("a", 1), ("b", 2), ("c", 3)), coverage=0.5)
    relative = msgspec.structs.replace(
        relative,
        variants=[
            msgspec.structs.replace(v, weight=w)
            for v, w in zip(relative.variants, [2, 1, 1], strict=True)
        ],
    )
    shares = make_experiment("gb", (("a", 1), ("b", 2), ("c", 3)))
    shares = msgspec.structs.replace(
        shares,
        variants=[
            msgspec.structs.replace(v, weight=w)
            for v, w in zip(shares.variants, [0.33, 0.33, 0.33], strict=True)
        ],
    )
    snap = make_snapshot([], [relative, shares])
    assert snap.compiled_experiments[(PID, "rel")].ranges == tuple(
        get_bucket_ranges(3, 0.5, [0.5, 0.25, 0.25])
    )
    # already shares (sum within 0.99..1.01): untouched, as GrowthBook uses them
    assert snap.compiled_experiments[(PID, "gb")].ranges == ((0, 0.33), (0.33, 0.66), (0.66, 0.99))


def test_missing_experiment_falls_through() -> None:
    snap = make_snapshot([exp_flag("ghost")])
    check(
        decide(snap, PID, "f", "u", {}),
        value="default",
        reason=Reason.DEFAULT,
        experiment="ghost",
        experiment_reason=Reason.NO_ACTIVE_EXPERIMENT,
    )


@pytest.mark.parametrize(
    "status",
    [
        ExperimentStatus.DRAFT,
        ExperimentStatus.PAUSED,
        ExperimentStatus.COMPLETED,
        ExperimentStatus.ARCHIVED,
    ],
)
def test_experiment_not_running_falls_through(status: ExperimentStatus) -> None:
    snap = make_snapshot([exp_flag("exp")], [make_experiment("exp", status=status)])
    check(
        decide(snap, PID, "f", "u", {}),
        value="default",
        reason=Reason.DEFAULT,
        experiment="exp",
        experiment_reason=Reason.EXPERIMENT_NOT_RUNNING,
    )


def test_rolled_back_experiment_serves_control_to_everyone_without_assigning() -> None:
    e = make_experiment(
        "exp",
        (("control", "ctl"), ("t", "new")),
        status=ExperimentStatus.ROLLED_BACK,
        condition={"never": "matches"},
    )
    snap = make_snapshot([exp_flag("exp", tail=[ForceRule(value="later")])], [e])
    for subject in ("a", "b", "c"):
        d = decide(snap, PID, "f", subject, {})
        check(d, value="ctl", reason=Reason.ROLLED_BACK, rule="r-exp", experiment="exp")
        assert d.hash_value is None


def test_targeting_mismatch_falls_through_to_the_next_rule() -> None:
    e = make_experiment("exp", condition={"country": "FR", "age": {"$gte": 18}})
    snap = make_snapshot([exp_flag("exp", tail=[ForceRule(id="fb", value="fallback")])], [e])
    check(
        decide(snap, PID, "f", "u", {"country": "FR", "age": 17}),
        value="fallback",
        reason=Reason.FORCED,
        rule="fb",
        experiment="exp",
        experiment_reason=Reason.TARGETING_MISMATCH,
    )
    assert decide(snap, PID, "f", "u", {"country": "FR", "age": 18}).in_experiment


def test_missing_hash_attribute_is_targeting_mismatch_and_fallback_is_used() -> None:
    e = make_experiment("exp", hash_attribute="company", fallback_attribute="device")
    snap = make_snapshot([exp_flag("exp")], [e])
    d = decide(snap, PID, "f", "u", {})
    check(
        d,
        value="default",
        reason=Reason.DEFAULT,
        experiment="exp",
        experiment_reason=Reason.TARGETING_MISMATCH,
    )
    d = decide(snap, PID, "f", "u", {"device": "dev-9"})
    assert d.reason is Reason.EXPERIMENT_ASSIGNED
    assert d.hash_value == "dev-9"
    assert d.variant == e.variants[expected_variant(e, "dev-9")].key
    d = decide(snap, PID, "f", "u", {"company": 123, "device": "dev-9"})
    assert d.hash_value == "123"


def test_layer_conflict() -> None:
    e = make_experiment("exp", layer=LayerRange(layer="checkout", start=0.2, end=0.6))
    snap = make_snapshot([exp_flag("exp")], [e])
    inside = find_subject(lambda s: in_namespace(s, ("checkout", 0.2, 0.6)))
    outside = find_subject(lambda s: not in_namespace(s, ("checkout", 0.2, 0.6)))
    assert decide(snap, PID, "f", inside, {}).reason is Reason.EXPERIMENT_ASSIGNED
    check(
        decide(snap, PID, "f", outside, {}),
        value="default",
        reason=Reason.DEFAULT,
        experiment="exp",
        experiment_reason=Reason.LAYER_CONFLICT,
    )


@pytest.mark.parametrize("variants", [(), (("only", "x"),)])
def test_fewer_than_two_variants_is_no_variants(variants: tuple[tuple[str, Any], ...]) -> None:
    snap = make_snapshot([exp_flag("exp")], [make_experiment("exp", variants)])
    check(
        decide(snap, PID, "f", "u", {}),
        value="default",
        reason=Reason.DEFAULT,
        experiment="exp",
        experiment_reason=Reason.NO_VARIANTS,
    )


def test_outside_traffic_allocation() -> None:
    e = make_experiment("exp", coverage=0.1)
    snap = make_snapshot([exp_flag("exp")], [e])
    outside = find_subject(lambda s: expected_variant(e, s) < 0)
    inside = find_subject(lambda s: expected_variant(e, s) >= 0)
    check(
        decide(snap, PID, "f", outside, {}),
        value="default",
        reason=Reason.DEFAULT,
        experiment="exp",
        experiment_reason=Reason.OUTSIDE_TRAFFIC_ALLOCATION,
    )
    assert decide(snap, PID, "f", inside, {}).reason is Reason.EXPERIMENT_ASSIGNED


def test_first_non_assigning_reason_is_kept_while_a_later_experiment_assigns() -> None:
    first = make_experiment("first", condition={"plan": "pro"})
    second = make_experiment("second", status=ExperimentStatus.PAUSED)
    third = make_experiment("third")
    snap = make_snapshot([exp_flag("first", "second", "third")], [first, second, third])
    d = decide(snap, PID, "f", "u", {"plan": "free"})
    check(
        d,
        value=d.value,
        reason=Reason.EXPERIMENT_ASSIGNED,
        variant=d.variant,
        rule="r-third",
        experiment="third",
        experiment_reason=Reason.TARGETING_MISMATCH,
        in_experiment=True,
    )
    assert d.variant == third.variants[expected_variant(third, "u")].key


def test_experiment_with_empty_seed_uses_its_key_like_growthbook() -> None:
    e = make_experiment("exp", seed="", coverage=0.5)
    snap = make_snapshot([exp_flag("exp")], [e])
    for i in range(200):
        s = f"s{i}"
        n = gb_hash("exp", s, 2)
        assert n is not None
        index = choose_variation(n, get_bucket_ranges(2, 0.5, None))
        d = decide(snap, PID, "f", s, {})
        assert d.variant == (None if index < 0 else e.variants[index].key)


# --- holdouts --------------------------------------------------------------------------


def holdout_setup(holdout_status: ExperimentStatus = RUNNING) -> tuple[Snapshot, Experiment]:
    holdout = make_experiment(
        "hold", (("held", "h"), ("general", "g")), status=holdout_status, is_holdout=True
    )
    holdout = msgspec.structs.replace(
        holdout,
        variants=[
            msgspec.structs.replace(v, weight=w)
            for v, w in zip(holdout.variants, [0.2, 0.8], strict=True)
        ],
    )
    exp = make_experiment("exp", holdout="hold", condition={"country": "FR"})
    return make_snapshot([exp_flag("exp")], [holdout, exp]), holdout


def test_held_out_subjects_see_the_default_and_are_tracked_in_the_holdout() -> None:
    snap, holdout = holdout_setup()
    held = find_subject(lambda s: expected_variant(holdout, s) == 0)
    general = find_subject(lambda s: expected_variant(holdout, s) == 1)
    d = decide(snap, PID, "f", held, {"country": "FR"})
    check(
        d,
        value="default",
        reason=Reason.EXPERIMENT_ASSIGNED,
        variant="held",
        rule="r-exp",
        experiment="hold",
        in_experiment=True,
    )
    d = decide(snap, PID, "f", general, {"country": "FR"})
    assert (d.reason, d.experiment) == (Reason.EXPERIMENT_ASSIGNED, "exp")
    # the experiment's own targeting comes first: a mismatch never reaches the holdout
    d = decide(snap, PID, "f", held, {"country": "DE"})
    assert d.experiment_reason is Reason.TARGETING_MISMATCH
    # roughly the holdout's 20 % share is held out
    held_count = sum(
        decide(snap, PID, "f", f"s{i}", {"country": "FR"}).experiment == "hold" for i in range(5000)
    )
    assert 850 < held_count < 1150


def test_a_holdout_that_is_not_running_is_ignored() -> None:
    snap, holdout = holdout_setup(ExperimentStatus.PAUSED)
    held = find_subject(lambda s: expected_variant(holdout, s) == 0)
    assert decide(snap, PID, "f", held, {"country": "FR"}).experiment == "exp"


def test_holdout_naming_a_non_holdout_is_reported_and_ignored() -> None:
    other = make_experiment("other")
    exp = make_experiment("exp", holdout="other")
    snap = make_snapshot([exp_flag("exp")], [other, exp])
    assert [(e.key, e.code) for e in snap.errors] == [("exp", "invalid_holdout")]
    assert decide(snap, PID, "f", "u", {}).experiment == "exp"


# --- participation limit ---------------------------------------------------------------


def limit_setup(limit: int) -> tuple[Snapshot, Experiment]:
    first = make_experiment("a-first", condition={"a": True}, started_at=NOW)
    second = make_experiment("b-second", condition={"b": True}, started_at=NOW + timedelta(1))
    limited = make_experiment("limited", participation_limit=limit, started_at=NOW + timedelta(2))
    # started later than the limited one: never counts against it
    later = make_experiment("later", started_at=NOW + timedelta(3))
    holdout = make_experiment("hold", is_holdout=True, started_at=NOW - timedelta(1))
    snap = make_snapshot([exp_flag("limited")], [first, second, limited, later, holdout])
    return snap, first


def test_participation_limit_counts_earlier_experiments_the_subject_is_in() -> None:
    snap, first = limit_setup(limit=1)
    in_first = find_subject(lambda s: expected_variant(first, s) >= 0)
    check(
        decide(snap, PID, "f", in_first, {"a": True}),
        value="default",
        reason=Reason.DEFAULT,
        experiment="limited",
        experiment_reason=Reason.PARTICIPATION_LIMIT,
    )
    # failing the earlier experiment's targeting means not participating in it
    assert decide(snap, PID, "f", in_first, {"a": False}).reason is Reason.EXPERIMENT_ASSIGNED
    # neither the later experiment nor the holdout count
    assert decide(snap, PID, "f", in_first, {}).reason is Reason.EXPERIMENT_ASSIGNED


def test_participation_limit_of_two() -> None:
    snap, _ = limit_setup(limit=2)
    assert decide(snap, PID, "f", "u", {"a": True}).reason is Reason.EXPERIMENT_ASSIGNED
    d = decide(snap, PID, "f", "u", {"a": True, "b": True})
    assert d.experiment_reason is Reason.PARTICIPATION_LIMIT


def test_participation_order_breaks_start_time_ties_by_key() -> None:
    a = make_experiment("aaa", started_at=NOW)
    b = make_experiment("bbb", started_at=NOW, participation_limit=1)
    c = make_experiment("ccc", started_at=NOW, participation_limit=1, condition={"x": 1})
    snap = make_snapshot([], [c, b, a])
    assert [p.key for p in snap.compiled_experiments[(PID, "bbb")].prior] == ["aaa"]
    assert [p.key for p in snap.compiled_experiments[(PID, "ccc")].prior] == ["aaa", "bbb"]
    assert snap.compiled_experiments[(PID, "aaa")].prior == ()


# --- subjects and attributes -----------------------------------------------------------


def utf16_gb_hash_v2(seed: str, value: str) -> float:
    """An independent reference: FNV-1a over UTF-16 code units, as the JavaScript SDK."""

    def fnv(text: str) -> int:
        h = 0x811C9DC5
        data = text.encode("utf-16-le", "surrogatepass")
        for (unit,) in struct.iter_unpack("<H", data):
            h = ((h ^ unit) * 0x01000193) % 2**32
        return h

    return (fnv(str(fnv(seed + value))) % 10000) / 10000


@pytest.mark.parametrize("subject", ["josé", "Zoë-42", "用户-7", "😀-user", "a\U0001f680b", "ß"])
def test_non_ascii_subject_ids_bucket_over_utf16_units(subject: str) -> None:
    e = make_experiment("exp", (("a", 0), ("b", 1), ("c", 2), ("d", 3)))
    snap = make_snapshot([exp_flag("exp")], [e])
    index = choose_variation(utf16_gb_hash_v2("exp", subject), get_bucket_ranges(4, 1.0, None))
    d = decide(snap, PID, "f", subject, {})
    assert (d.variant, d.hash_value, d.subject) == (e.variants[index].key, subject, subject)


def test_subject_is_the_id_unless_the_attributes_carry_one_and_they_are_not_mutated() -> None:
    snap = make_snapshot([make_flag("f", [ForceRule(condition={"id": "alice"}, value="is-alice")])])
    attrs = {"plan": "pro"}
    assert decide(snap, PID, "f", "alice", attrs).value == "is-alice"
    assert attrs == {"plan": "pro"}
    assert decide(snap, PID, "f", "bob", None).reason is Reason.DEFAULT
    # An id among the attributes is kept as given, not overwritten by the subject string.
    with_id = {"id": "mallory", "plan": "pro"}
    assert decide(snap, PID, "f", "alice", with_id).reason is Reason.DEFAULT
    assert with_id == {"id": "mallory", "plan": "pro"}


def test_a_numeric_id_keeps_its_type_as_in_growthbook() -> None:
    snap = make_snapshot(
        [make_flag("f", [ForceRule(condition={"id": {"$in": [123, 456]}}, value="listed")])]
    )
    assert decide(snap, PID, "f", "123", {"id": 123}).value == "listed"
    assert decide(snap, PID, "f", "123", {"id": "123"}).reason is Reason.DEFAULT
    assert decide(snap, PID, "f", "123", None).reason is Reason.DEFAULT


# --- compile errors, decide_all, the decision object -----------------------------------


def test_condition_that_does_not_compile_never_matches_and_is_reported() -> None:
    def exploding(argument: Any, ctx: Any) -> Any:
        raise RuntimeError("plugin bug")

    compiler = ConditionCompiler({**GROWTHBOOK_OPERATORS, "$boom": exploding})
    flag = make_flag(
        "f",
        [
            ForceRule(id="bad", condition={"x": {"$nope": 1}}, value="bad"),
            ForceRule(id="worse", condition={"x": {"$boom": 1}}, value="worse"),
            ForceRule(id="good", condition={"x": 1}, value="good"),
        ],
    )
    e = make_experiment("exp", condition={"x": {"$nope": 1}})
    snap = make_snapshot(
        [flag, make_flag("g", [ExperimentRule(experiment="exp")])], [e], compiler=compiler
    )
    assert sorted((x.kind, x.key, x.field, x.code) for x in snap.errors) == [
        ("experiment", "exp", "condition", "unknown_operator"),
        ("flag", "f", "rules[0].condition", "unknown_operator"),
        ("flag", "f", "rules[1].condition", "compile_failed"),
    ]
    assert decide(snap, PID, "f", "u", {"x": 1}).rule == "good"
    assert decide(snap, PID, "g", "u", {"x": 1}).experiment_reason is Reason.TARGETING_MISMATCH


def test_decide_all_decides_every_flag_of_the_project_in_key_order() -> None:
    flags = [make_flag("zeta", [ForceRule(value=1)]), make_flag("alpha"), make_flag("mid")]
    snap = make_snapshot(flags)
    decisions = decide_all(snap, PID, "u", {"plan": "pro"})
    assert [(d.flag, d.reason) for d in decisions] == [
        ("alpha", Reason.DEFAULT),
        ("mid", Reason.DEFAULT),
        ("zeta", Reason.FORCED),
    ]
    assert len({d.decision_id for d in decisions}) == 3
    assert decide_all(snap, "nobody", "u", {}) == []


def test_decision_is_small_encodable_and_fresh() -> None:
    snap = make_snapshot([make_flag("f")], version=42)
    before = time.time()
    ids = {decide(snap, PID, "f", "u", {}).decision_id for _ in range(1000)}
    d = decide(snap, PID, "f", "u", {}, new_id=lambda: "fixed")
    assert len(ids) == 1000
    assert d.decision_id == "fixed"
    assert before <= d.decided_at <= time.time()
    assert d.snapshot_version == 42
    encoded = msgspec.json.decode(msgspec.json.encode(d))
    assert encoded["reason"] == "default"
    assert msgspec.json.decode(msgspec.json.encode(d), type=Decision) == d


def test_every_reason_code_is_reached_by_a_decision() -> None:
    """One flag per reason, each decided for real; fall-through reasons are read from
    ``experiment_reason``."""
    later = NOW + timedelta(1)
    experiments = [
        make_experiment("ok"),
        make_experiment("rb", status=ExperimentStatus.ROLLED_BACK),
        make_experiment("paused", status=ExperimentStatus.PAUSED),
        make_experiment("targeted", condition={"never": 1}),
        make_experiment("everyone", started_at=NOW),
        make_experiment("limited", participation_limit=1, started_at=later),
        make_experiment("layered", layer=LayerRange(layer="L", start=0.0, end=0.0)),
        make_experiment("novar", ()),
        make_experiment("nobody", coverage=0.0),
        make_experiment(
            "pinned", forced_variations=[ForcedVariation(variant="treatment", values=["u"])]
        ),
        msgspec.structs.replace(
            make_experiment("through"),
            variants=[Variant(key="a", value="a", passthrough=True), Variant(key="b", value="b")],
            ranges=[(0.0, 1.0), (1.0, 1.0)],
        ),
        make_experiment("stuck", sticky_bucketing=True),
        make_experiment("blocked", sticky_bucketing=True, bucket_version=1, min_bucket_version=1),
    ]
    docs = {("id", "u"): {"stuck__0": "control", "blocked__0": "control"}}
    never = ParentCondition(flag="plain", condition={"value": "nope"}, gate=True)
    loop = ParentCondition(flag="cycle", condition={})
    flags = [
        make_flag("gate", [ForceRule(value=1, parent_conditions=[never])]),
        make_flag("cycle", [ForceRule(value=1, parent_conditions=[loop])]),
        make_flag("off", enabled=False),
        gated("ghost"),
        make_flag("forced", [ForceRule(value=1)]),
        make_flag("rollout", [RolloutRule(value=1)]),
        make_flag("plain"),
        *(
            make_flag(f"x-{e.key}", [ExperimentRule(experiment=e.key)])
            for e in [*experiments, make_experiment("ghost-exp")][:-1]
        ),
        make_flag("x-ghost", [ExperimentRule(experiment="ghost-exp")]),
    ]
    snap = make_snapshot(flags, experiments)
    decisions = [decide(snap, PID, f.key, "u", {}, sticky=docs) for f in flags]
    decisions.append(decide(snap, PID, "missing", "u", {}))
    seen = {d.reason for d in decisions} | {d.experiment_reason for d in decisions}
    assert seen - {None} == set(Reason)
    assert [r.value for r in Reason] == [
        "flag_not_found", "flag_off", "prerequisite_failed", "forced", "rollout",
        "no_active_experiment", "experiment_not_running", "targeting_mismatch",
        "participation_limit", "layer_conflict", "outside_traffic_allocation", "no_variants",
        "experiment_assigned", "rolled_back", "default", "forced_variation", "passthrough",
        "prerequisite_gate", "prerequisite_cycle", "sticky_bucket", "sticky_bucket_blocked",
    ]  # fmt: skip


def test_index_snapshot_compatibility_wrapper() -> None:
    flag = make_flag("f", [ForceRule(condition={"country": "FR"}, value="fr")])
    snap = index_snapshot(3, [make_project()], [flag], [], [], [])
    assert snap.version == 3
    assert snap.flags[(PID, "f")] is flag
    assert snap.project_ids["key-p1"] == PID
    assert decide(snap, PID, "f", "u", {"country": "FR"}).value == "fr"


def test_decision_ids_are_unique_and_a_forked_child_draws_its_own_prefix() -> None:
    import os

    from assay.engine._core._decide import new_decision_id

    ids = [new_decision_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in ids)
    # One process: the same 16-digit prefix, then a counter.
    assert {i[:16] for i in ids} == {ids[0][:16]}
    assert int(ids[-1][16:], 16) == int(ids[0][16:], 16) + len(ids) - 1

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, new_decision_id().encode())
        os._exit(0)
    os.close(write)
    try:
        child_id = os.read(read, 64).decode()
    finally:
        os.close(read)
        os.waitpid(child, 0)
    # A child that kept the parent's prefix and counter would repeat the parent's next id.
    assert child_id[:16] != ids[0][:16]
    assert child_id != new_decision_id()
