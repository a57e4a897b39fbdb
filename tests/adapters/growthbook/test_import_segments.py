"""Segments decide as GrowthBook's saved groups do.

Hypothesis generates payloads whose ``savedGroups`` hold legacy lists, typed list groups
(with and without ``attributeKey``) and condition groups that use other groups (cycles
and missing groups included), and features whose force rules use ``$inGroup``,
``$notInGroup`` and ``$savedGroup`` under ``$and``/``$or``/``$not``. Each payload is imported
(references kept as segments wherever assay decides them exactly, the rest inlined as the
SDK evaluates them; no rule skipped), compiled into a snapshot and decided for generated
attributes; the value must be the one GrowthBook's SDK serves.
Seeded (``derandomize``), so CI runs the same 400 payloads every time; ``pytest -m slow``
runs 5,000.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from growthbook import GrowthBook
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.adapters.growthbook._import import convert_growthbook
from assay.engine._core import ConditionCompiler, compile_snapshot, decide
from assay.engine._core._segments import segment_references
from assay.engine._model import Flag, Project, Segment
from assay.engine._ports import ConfigState
from assay.plugins._growthbook_operators import GROWTHBOOK_OPERATORS

NOW = datetime(2025, 1, 1, tzinfo=UTC)
PID = "p1"
GROUPS = ["g1", "g2", "g3", "g4"]
ATTRIBUTES = ["id", "email", "country"]
VALUES = ["u1", "u2", "a@x", "b@x", "FR", "DE", 7]

values = st.lists(st.sampled_from(VALUES), max_size=4, unique=True)


def leaf(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    simple = st.one_of(
        st.builds(
            lambda a, op, g: {a: {op: g}},
            st.sampled_from(ATTRIBUTES),
            st.sampled_from(["$inGroup", "$notInGroup"]),
            st.sampled_from(GROUPS),
        ),
        st.builds(
            lambda g, a: {"$savedGroup": {"id": g} if a is None else {"id": g, "attributeKey": a}},
            st.sampled_from(GROUPS),
            st.none() | st.sampled_from(ATTRIBUTES),
        ),
        st.builds(lambda v: {"country": v}, st.sampled_from(["FR", "DE"])),
    )
    if depth == 0:
        return simple
    sub = leaf(depth - 1)
    return st.one_of(
        simple,
        st.builds(lambda xs: {"$or": xs}, st.lists(sub, min_size=1, max_size=2)),
        st.builds(lambda xs: {"$and": xs}, st.lists(sub, min_size=1, max_size=2)),
        st.builds(lambda x: {"$not": x}, sub),
    )


group = st.one_of(
    values,  # the legacy form: a bare list
    st.builds(
        lambda a, v: {"type": "list", "values": v, **({} if a is None else {"attributeKey": a})},
        st.none() | st.sampled_from(ATTRIBUTES),
        values,
    ),
    st.builds(lambda c: {"type": "condition", "condition": c}, leaf(1)),
)
# g4 is often missing: the SDK evaluates a missing group (empty for $inGroup, false for
# $savedGroup), and the import may not keep such a reference.
saved_groups = st.fixed_dictionaries(dict.fromkeys(GROUPS[:3], group), optional={"g4": group})
rules = st.lists(
    st.builds(lambda c, i: {"condition": c, "force": i}, leaf(2), st.integers(1, 9)),
    min_size=1,
    max_size=3,
)
# Always an id: decide's subject is the id (typed attributes are another change's business).
attributes = st.fixed_dictionaries(
    {"id": st.sampled_from(["u1", "u2", "u3"])},
    optional={
        "email": st.sampled_from(["a@x", "b@x", "c@x"]) | st.lists(st.sampled_from(VALUES)),
        "country": st.sampled_from(["FR", "DE", "US"]) | st.just(7),
    },
)


def snapshot_of(payload: dict[str, Any]) -> tuple[Any, list[str]]:
    result = convert_growthbook(payload)
    defs = result.definitions
    segments = [
        Segment(
            **{f: getattr(s, f) for f in s.__struct_fields__},
            id=f"seg-{s.key}",
            project_id=PID,
            created_at=NOW,
            updated_at=NOW,
        )
        for s in defs.segments
    ]
    keys = {s.key for s in segments}
    # What saving would check: every kept reference names an imported segment.
    for f in defs.flags:
        for r in f.rules:
            for _, key in segment_references(getattr(r, "condition", None) or {}):
                assert key in keys
    for s in segments:
        for _, key in segment_references(s.condition or {}):
            assert key in keys
            assert key != s.key
    flags = [
        Flag(
            **{k: getattr(f, k) for k in f.__struct_fields__},
            id=f"flag-{f.key}",
            project_id=PID,
            created_at=NOW,
            updated_at=NOW,
        )
        for f in defs.flags
    ]
    state = ConfigState(
        projects=[Project(id=PID, key="proj", created_at=NOW, updated_at=NOW)],
        flags=flags,
        experiments=[],
        layers=[],
        metrics=[],
        segments=segments,
    )
    snapshot = compile_snapshot(state, 1, ConditionCompiler(GROWTHBOOK_OPERATORS))
    assert snapshot.errors == ()
    return snapshot, [str(w) for w in result.warnings]


SETTINGS = settings(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""Seeded: every run checks the same cases."""
SUBJECTS = st.lists(attributes, min_size=1, max_size=4)


@settings(SETTINGS, max_examples=400)
@given(groups=saved_groups, rules=rules, subjects=SUBJECTS)
def test_segments_decide_as_growthbook_saved_groups(
    groups: dict[str, Any], rules: list[dict[str, Any]], subjects: list[dict[str, Any]]
) -> None:
    compare(groups, rules, subjects)


@pytest.mark.slow
@settings(SETTINGS, max_examples=5_000)
@given(groups=saved_groups, rules=rules, subjects=SUBJECTS)
def test_segments_decide_as_growthbook_saved_groups_long(
    groups: dict[str, Any], rules: list[dict[str, Any]], subjects: list[dict[str, Any]]
) -> None:
    compare(groups, rules, subjects)


def compare(
    groups: dict[str, Any], rules: list[dict[str, Any]], subjects: list[dict[str, Any]]
) -> None:
    payload = {"features": {"f": {"defaultValue": 0, "rules": rules}}, "savedGroups": groups}
    snapshot, warnings = snapshot_of(payload)
    # Every reference is kept, inlined or turned into what the SDK evaluates: none skipped.
    assert not [w for w in warnings if "skipped" in w]
    for attrs in subjects:
        gb = GrowthBook(attributes=attrs, features=payload["features"], saved_groups=groups)
        expected = gb.eval_feature("f").value
        got = decide(snapshot, PID, "f", attrs["id"], attrs).value
        assert got == expected, (payload, attrs)


def test_kept_references_become_segments_and_the_rest_is_inlined() -> None:
    payload = {
        "features": {
            "f": {
                "defaultValue": 0,
                "rules": [
                    {"condition": {"id": {"$inGroup": "legacy"}}, "force": 1},
                    {"condition": {"$savedGroup": {"id": "eu"}}, "force": 2},
                    # Missing from the payload: the SDK treats it as empty; inlined.
                    {"condition": {"id": {"$notInGroup": "gone"}}, "force": 3},
                ],
            }
        },
        "savedGroups": {
            "legacy": ["u1"],
            "staff": {"type": "list", "attributeKey": "email", "values": ["a@x"]},
            "eu": {"type": "condition", "condition": {"$savedGroup": {"id": "staff"}}},
            "unused": ["u9"],
        },
    }
    defs = convert_growthbook(payload).definitions
    assert [(s.key, s.type) for s in defs.segments] == [
        ("legacy", "list"),
        ("eu", "condition"),
        ("staff", "list"),
    ]
    staff = next(s for s in defs.segments if s.key == "staff")
    assert (staff.attribute, staff.values) == ("email", ["a@x"])
    conditions = [r.condition for r in defs.flags[0].rules]  # type: ignore[union-attr]
    assert conditions == [
        {"id": {"$inGroup": "legacy"}},
        {"$savedGroup": {"id": "eu"}},
        {"id": {"$nin": []}},
    ]
