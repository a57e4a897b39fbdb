"""The decision cache: LRU bound, TTL, fresh ids on hits, and revision-based keys."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from assay.engine._core import (
    ConditionCompiler,
    Decision,
    DecisionCache,
    Reason,
    Snapshot,
    attribute_digest,
    compile_snapshot,
    decide,
)
from assay.engine._model import (
    Experiment,
    ExperimentRule,
    ExperimentStatus,
    Flag,
    ForceRule,
    Prerequisite,
    Project,
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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def flag(key: str = "f", *, revision: int = 1, id_: str | None = None, **fields: Any) -> Flag:
    return Flag(
        id=id_ or f"id-{key}",
        project_id=PID,
        key=key,
        revision=revision,
        created_at=NOW,
        updated_at=NOW,
        **fields,
    )


def experiment(key: str = "exp", *, revision: int = 1, **fields: Any) -> Experiment:
    return Experiment(
        id=f"id-{key}",
        project_id=PID,
        key=key,
        variants=[Variant(key="a", value="a"), Variant(key="b", value="b")],
        status=ExperimentStatus.RUNNING,
        revision=revision,
        created_at=NOW,
        updated_at=NOW,
        **{"started_at": NOW, **fields},
    )


def snapshot(
    flags: Sequence[Flag], experiments: Sequence[Experiment] = (), version: int = 1
) -> Snapshot:
    state = ConfigState(
        projects=[Project(id=PID, key="proj", created_at=NOW, updated_at=NOW)],
        flags=flags,
        experiments=experiments,
        layers=[],
        metrics=[],
    )
    return compile_snapshot(state, version, COMPILER)


def outcome(d: Decision) -> dict[str, Any]:
    fields = msgspec.structs.asdict(d)
    for volatile in ("decision_id", "decided_at", "snapshot_version"):
        del fields[volatile]
    return fields


EXP_SNAP = snapshot([flag(rules=[ExperimentRule(experiment="exp")])], [experiment()])


def test_hit_returns_the_same_outcome_as_a_new_decision() -> None:
    cache = DecisionCache(100, 60)
    first = cache.get_or_decide(EXP_SNAP, PID, "f", "u1", {"plan": "pro"})
    second = cache.get_or_decide(EXP_SNAP, PID, "f", "u1", {"plan": "pro"})
    assert (cache.hits, cache.misses) == (1, 1)
    assert first.reason is Reason.EXPERIMENT_ASSIGNED
    assert outcome(second) == outcome(first)
    assert second.decision_id != first.decision_id
    assert second.decided_at >= first.decided_at
    assert outcome(first) == outcome(decide(EXP_SNAP, PID, "f", "u1", {"plan": "pro"}))


def test_hit_reports_the_current_snapshot_version() -> None:
    cache = DecisionCache(100, 60)
    cache.get_or_decide(EXP_SNAP, PID, "f", "u1", {})
    later = snapshot([flag(rules=[ExperimentRule(experiment="exp")])], [experiment()], version=9)
    d = cache.get_or_decide(later, PID, "f", "u1", {})
    assert cache.hits == 1  # a new snapshot with the same revisions still hits
    assert d.snapshot_version == 9


def test_lru_evicts_the_least_recently_used_entry() -> None:
    cache = DecisionCache(2, 60)
    for subject in ("a", "b", "a", "c"):  # "a" is used again before "c" arrives
        cache.get_or_decide(EXP_SNAP, PID, "f", subject, {})
    assert len(cache) == 2
    assert cache.evictions == 1
    hits = cache.hits
    cache.get_or_decide(EXP_SNAP, PID, "f", "a", {})
    cache.get_or_decide(EXP_SNAP, PID, "f", "c", {})
    assert cache.hits == hits + 2
    cache.get_or_decide(EXP_SNAP, PID, "f", "b", {})  # evicted: decided again
    assert cache.hits == hits + 2
    assert len(cache) == 2


def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache = DecisionCache(10, 30, clock=clock)
    cache.get_or_decide(EXP_SNAP, PID, "f", "u", {})
    clock.now += 29.9
    cache.get_or_decide(EXP_SNAP, PID, "f", "u", {})
    assert (cache.hits, cache.misses, cache.expirations) == (1, 1, 0)
    clock.now += 0.1
    cache.get_or_decide(EXP_SNAP, PID, "f", "u", {})
    assert (cache.hits, cache.misses, cache.expirations) == (1, 2, 1)
    # the re-decided entry lives for a full TTL again
    clock.now += 29
    cache.get_or_decide(EXP_SNAP, PID, "f", "u", {})
    assert cache.hits == 2


@pytest.mark.parametrize(
    "changed",
    [
        "flag revision",
        "experiment revision",
        "flag re-created",
        "prerequisite revision",
        "holdout revision",
        "earlier experiment revision",
    ],
)
def test_a_change_to_anything_the_outcome_depends_on_misses(changed: str) -> None:
    def build(bump: str | None) -> Snapshot:
        def rev(name: str) -> int:
            return 2 if bump == name else 1

        gate = flag("gate", default_value=True, revision=rev("prerequisite revision"))
        main = flag(
            "f",
            revision=rev("flag revision"),
            id_="id-f-2" if bump == "flag re-created" else "id-f",
            prerequisites=[Prerequisite(flag="gate")],
            rules=[ExperimentRule(experiment="exp")],
        )
        hold = experiment("hold", is_holdout=True, revision=rev("holdout revision"))
        earlier = experiment(
            "earlier",
            started_at=datetime(2024, 1, 1, tzinfo=UTC),
            revision=rev("earlier experiment revision"),
        )
        exp = experiment(
            "exp", holdout="hold", participation_limit=3, revision=rev("experiment revision")
        )
        return snapshot([gate, main], [hold, earlier, exp])

    cache = DecisionCache(10, 60)
    cache.get_or_decide(build(None), PID, "f", "u", {})
    cache.get_or_decide(build(None), PID, "f", "u", {})
    assert cache.hits == 1
    cache.get_or_decide(build(changed), PID, "f", "u", {})
    assert (cache.hits, cache.misses) == (1, 2)


def test_a_revision_change_serves_the_new_outcome() -> None:
    cache = DecisionCache(10, 60)
    old = snapshot([flag(rules=[ForceRule(value="old")])])
    new = snapshot([flag(rules=[ForceRule(value="new")], revision=2)])
    assert cache.get_or_decide(old, PID, "f", "u", {}).value == "old"
    assert cache.get_or_decide(new, PID, "f", "u", {}).value == "new"


def test_attributes_subject_and_flag_are_part_of_the_key() -> None:
    snap = snapshot([flag(rules=[ForceRule(condition={"beta": "true"}, value="beta")])])
    cache = DecisionCache(10, 60)
    assert cache.get_or_decide(snap, PID, "f", "u", {"beta": True}).value == "beta"
    # 1 == True in Python, but not in targeting ("1" is not "true"): a separate entry
    assert cache.get_or_decide(snap, PID, "f", "u", {"beta": 1}).reason is Reason.DEFAULT
    assert cache.get_or_decide(snap, PID, "f", "v", {"beta": True}).value == "beta"
    assert cache.hits == 0
    assert len(cache) == 3


def test_attribute_digest() -> None:
    assert attribute_digest({"a": 1, "b": "x"}) == attribute_digest({"b": "x", "a": 1})
    assert attribute_digest({"a": True}) != attribute_digest({"a": 1})
    assert attribute_digest({"a": "1"}) != attribute_digest({"a": 1})
    assert attribute_digest({"n": {"y": [1, 2], "x": None}}) == attribute_digest(
        {"n": {"x": None, "y": [1, 2]}}
    )
    assert attribute_digest({"a": [1, 2]}) != attribute_digest({"a": [2, 1]})
    assert attribute_digest(None) == attribute_digest({})
    hash(attribute_digest({"a": [1, {"b": 2}]}))
    assert attribute_digest({"a": object()}) is None


def test_unencodable_attributes_are_decided_but_not_cached() -> None:
    cache = DecisionCache(10, 60)
    attrs = {"when": object()}
    for _ in range(2):
        assert cache.get_or_decide(EXP_SNAP, PID, "f", "u", attrs).in_experiment
    assert (cache.hits, cache.misses, len(cache)) == (0, 2, 0)


def test_unknown_flags_are_not_cached() -> None:
    cache = DecisionCache(10, 60)
    d = cache.get_or_decide(EXP_SNAP, PID, "nope", "u", {})
    assert d.reason is Reason.FLAG_NOT_FOUND
    assert len(cache) == 0


@pytest.mark.parametrize(("max_entries", "ttl"), [(0, 60.0), (10, 0.0)])
def test_zero_size_or_ttl_disables_the_cache(max_entries: int, ttl: float) -> None:
    cache = DecisionCache(max_entries, ttl)
    assert not cache.enabled
    decisions = [cache.get_or_decide(EXP_SNAP, PID, "f", "u", {}) for _ in range(3)]
    assert len(cache) == 0
    assert (cache.hits, cache.misses) == (0, 0)
    assert all(outcome(d) == outcome(decisions[0]) for d in decisions)


def test_negative_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        DecisionCache(-1, 10)
    with pytest.raises(ValueError, match="ttl"):
        DecisionCache(1, -1)


def test_get_or_decide_all_caches_per_flag() -> None:
    snap = snapshot([flag("a", rules=[ForceRule(value=1)]), flag("b"), flag("c", enabled=False)])
    cache = DecisionCache(10, 60)
    first = cache.get_or_decide_all(snap, PID, "u", {"k": "v"})
    second = cache.get_or_decide_all(snap, PID, "u", {"k": "v"})
    assert [d.flag for d in first] == ["a", "b", "c"]
    assert [outcome(d) for d in second] == [outcome(d) for d in first]
    assert (cache.hits, cache.misses) == (3, 3)
    assert cache.get_or_decide_all(snap, "other", "u", {}) == []


def test_hits_use_the_given_id_source() -> None:
    ids = (f"id{i}" for i in itertools.count())
    cache = DecisionCache(10, 60)
    a = cache.get_or_decide(EXP_SNAP, PID, "f", "u", {}, new_id=lambda: next(ids))
    b = cache.get_or_decide(EXP_SNAP, PID, "f", "u", {}, new_id=lambda: next(ids))
    assert (a.decision_id, b.decision_id) == ("id0", "id1")
