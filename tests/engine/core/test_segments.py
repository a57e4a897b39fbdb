"""Segments in the snapshot: compiled per project, in the decision-cache key of exactly what
uses them, and safe against a cycle that slipped past saving."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from assay.engine._core import ConditionCompiler, Snapshot, compile_snapshot, decide
from assay.engine._core._segments import segment_references
from assay.engine._model import Flag, ForceRule, Project, Segment
from assay.engine._ports import ConfigState
from assay.plugins._growthbook_operators import GROWTHBOOK_OPERATORS

NOW = datetime(2025, 1, 1, tzinfo=UTC)
IN_BETA = {"id": {"$inGroup": "beta"}}


def project(pid: str) -> Project:
    return Project(id=pid, key=pid, created_at=NOW, updated_at=NOW)


def flag(pid: str, key: str, condition: dict[str, Any] | None) -> Flag:
    return Flag(
        id=f"{pid}-{key}",
        project_id=pid,
        key=key,
        rules=[ForceRule(condition=condition, value=True)],
        created_at=NOW,
        updated_at=NOW,
    )


def segment(pid: str, key: str, **fields: Any) -> Segment:
    return Segment(
        id=f"{pid}-{key}", project_id=pid, key=key, created_at=NOW, updated_at=NOW, **fields
    )


def snapshot(
    flags: list[Flag], segments: list[Segment], compiler: ConditionCompiler | None = None
) -> Snapshot:
    state = ConfigState(
        projects=[project("p1"), project("p2")],
        flags=flags,
        experiments=[],
        layers=[],
        metrics=[],
        segments=segments,
    )
    return compile_snapshot(state, 1, compiler or ConditionCompiler(GROWTHBOOK_OPERATORS))


def test_the_same_condition_uses_each_projects_own_segment() -> None:
    snap = snapshot(
        [flag("p1", "f", IN_BETA), flag("p2", "f", IN_BETA)],
        [segment("p1", "beta", values=["u1"]), segment("p2", "beta", values=["u2"])],
    )
    assert decide(snap, "p1", "f", "u1").value is True
    assert decide(snap, "p1", "f", "u2").value is False
    assert decide(snap, "p2", "f", "u2").value is True
    assert decide(snap, "p2", "f", "u1").value is False


def test_a_segment_change_moves_only_the_cache_keys_of_what_uses_it() -> None:
    compiler = ConditionCompiler(GROWTHBOOK_OPERATORS)
    flags = [flag("p1", "uses", IN_BETA), flag("p1", "other", {"country": "FR"})]
    before = snapshot(flags, [segment("p1", "beta", values=["u1"])], compiler)
    after = snapshot(flags, [segment("p1", "beta", values=["u1", "u2"])], compiler)
    assert before.flag("p1", "uses").cache_key != after.flag("p1", "uses").cache_key
    assert before.flag("p1", "other").cache_key == after.flag("p1", "other").cache_key
    # The shared compiler did not serve the old predicate for the new values.
    assert decide(after, "p1", "uses", "u2").value is True
    assert decide(before, "p1", "uses", "u2").value is False


def test_a_cycle_written_past_saving_never_holds_and_ends() -> None:
    # Saving refuses cycles; one written by another tool compiles as the SDK evaluates it.
    snap = snapshot(
        [flag("p1", "f", {"$savedGroup": {"id": "a"}})],
        [
            segment("p1", "a", type="condition", condition={"$savedGroup": {"id": "b"}}),
            segment("p1", "b", type="condition", condition={"$savedGroup": {"id": "a"}}),
        ],
    )
    assert snap.errors == ()
    assert decide(snap, "p1", "f", "u1").value is False


def test_references_are_found_wherever_they_are_nested() -> None:
    condition = {
        "$or": [{"id": {"$inGroup": "a"}}, {"$not": {"$savedGroup": {"id": "b"}}}],
        "tags": {"$elemMatch": {"$notInGroup": "c"}},
        "$savedGroup": "malformed",
    }
    assert sorted(segment_references(condition)) == [
        ("$inGroup", "a"),
        ("$notInGroup", "c"),
        ("$savedGroup", ""),
        ("$savedGroup", "b"),
    ]
