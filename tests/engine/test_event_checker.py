"""The ingestion checker's inline hot loop (``check_into``) against its reference
(``check``, event by event): the same events staged, identically, and the same
rejections, whatever mix of good and bad events a batch holds."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from assay.engine._events import (
    MAX_EVENT_ID_LENGTH,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_SUBJECT_LENGTH,
    Conversion,
    EventChecker,
    Exposure,
    StagedEvent,
)
from assay.engine._model import ExperimentStatus

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)
MAX_AGE = timedelta(days=30)


def experiment(status: ExperimentStatus, compacted_at: datetime | None = None) -> Any:
    variants = [SimpleNamespace(key="control"), SimpleNamespace(key="treatment")]
    return SimpleNamespace(
        id=f"exp_{status.value}", status=status, variants=variants, compacted_at=compacted_at
    )


EXPERIMENTS = {
    ("prj", "running"): experiment(ExperimentStatus.RUNNING),
    ("prj", "draft"): experiment(ExperimentStatus.DRAFT),
    ("prj", "archived"): experiment(ExperimentStatus.ARCHIVED),
    ("prj", "compacted"): experiment(ExperimentStatus.COMPLETED, datetime(2026, 1, 1, tzinfo=UTC)),
}
METRICS = {
    ("prj", "waits"): SimpleNamespace(requires_exposure=True, pending_ttl_hours=24),
    ("prj", "free"): SimpleNamespace(requires_exposure=False, pending_ttl_hours=24),
}


# A batch of events each either good or with exactly one field made bad: the inline test
# must tell apart events that differ in one field only. Good values include the edges.
class Nowhere(tzinfo):
    """A tzinfo without an offset: a datetime carrying it is naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None


class Fixed(tzinfo):
    """An offset that is not a ``datetime.timezone``: checked the long way."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return timedelta(hours=2)


GOOD_TIMES = [
    None,
    NOW,
    NOW + SKEW,
    NOW - MAX_AGE,
    NOW - timedelta(hours=3, microseconds=7),
    (NOW + SKEW).astimezone(timezone(timedelta(hours=-7))),
    (NOW + timedelta(hours=1)).replace(tzinfo=Fixed()),  # NOW - 1 hour
]
GOOD: dict[str, list[Any]] = {
    "experiment": ["running"],
    "subject": ["s1", "ünï", "x" * MAX_SUBJECT_LENGTH],
    "variant": ["control", "treatment"],
    "metric": ["waits", "free"],
    "value": [1.0, 0, -2, 2.5, -0.0, 10**6, 10**300],
    "timestamp": GOOD_TIMES,
    "event_id": [None, "e1", "x" * MAX_EVENT_ID_LENGTH],
    "idempotency_key": [None, "k1", "x" * MAX_IDEMPOTENCY_KEY_LENGTH],
}
BAD: dict[str, list[Any]] = {
    "experiment": ["draft", "archived", "compacted", "nope", "bad key!", None, 1, ["running"]],
    "subject": ["", "x" * (MAX_SUBJECT_LENGTH + 1), "a\x00b", None, 5],
    "variant": ["nope", "bad key!", None, 1, ["control"]],
    "metric": ["nope", "bad key!", None, 1, ["waits"]],
    "value": [math.nan, math.inf, -math.inf, True, None, "1", 10**400, -(10**400)],
    "timestamp": [
        NOW + SKEW + timedelta(microseconds=1),
        NOW - MAX_AGE - timedelta(microseconds=1),
        NOW.replace(tzinfo=None),
        NOW.replace(tzinfo=Nowhere()),
        "2026-11-23T12:00:00Z",
    ],
    "event_id": ["", "x" * (MAX_EVENT_ID_LENGTH + 1), "a\x00b", 5],
    "idempotency_key": ["", "x" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1), "a\x00b", 5],
}
EXPOSURE_FIELDS = ["experiment", "subject", "variant", "timestamp", "event_id"]
CONVERSION_FIELDS = [
    "experiment",
    "metric",
    "subject",
    "value",
    "timestamp",
    "event_id",
    "idempotency_key",
]


@st.composite
def events(draw: st.DrawFn) -> Any:
    kind, fields = draw(
        st.sampled_from([(Exposure, EXPOSURE_FIELDS), (Conversion, CONVERSION_FIELDS)])
    )
    values = {field: draw(st.sampled_from(GOOD[field])) for field in fields}
    spoiled = draw(st.sampled_from([None, None, *fields]))
    if spoiled is not None:
        values[spoiled] = draw(st.sampled_from(BAD[spoiled]))
    return kind(**values)


batches = st.lists(st.one_of(events(), st.just(object())), max_size=30)


def checker() -> EventChecker:
    return EventChecker(
        "prj", EXPERIMENTS, METRICS, received_at=NOW, future_skew=SKEW, max_age=MAX_AGE
    )


def same(left: list[StagedEvent], right: list[StagedEvent]) -> bool:
    """Equal field by field, NaN-free floats compared exactly, types included."""
    return [tuple(map(type, e)) for e in left] == [tuple(map(type, e)) for e in right] and all(
        a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
        for x, y in zip(left, right, strict=True)
        for a, b in zip(x, y, strict=True)
    )


@settings(max_examples=500, deadline=None)
@given(batch=batches, split=st.integers(min_value=0, max_value=40))
def test_the_inline_loop_stages_and_rejects_exactly_what_check_does(
    batch: list[Any], split: int
) -> None:
    reference = checker()
    results = [reference.check(index, event) for index, event in enumerate(batch)]
    expected_staged = [r for r in results if isinstance(r, StagedEvent)]
    expected_rejected = [r for r in results if not isinstance(r, StagedEvent)]

    # In two slices, as the actor checks a batch, with one checker (its caches warm up
    # during the first slice).
    inline = checker()
    staged: list[StagedEvent] = []
    rejected: list[Any] = []
    split = min(split, len(batch))
    inline.check_into(batch, 0, split, staged, rejected)
    inline.check_into(batch, split, len(batch), staged, rejected)

    assert same(staged, expected_staged)
    assert rejected == expected_rejected


def test_plain_events_are_staged_inline() -> None:
    """Once the experiment and metric are resolved, good events are staged without going
    through ``check``: the point of the inline loop, so a change that sent every event
    the slow way would be a regression this catches."""
    batch = [
        Exposure(experiment="running", subject="s1", variant="control", timestamp=NOW),
        Conversion(experiment="running", metric="waits", subject="s1", event_id="e1"),
        Conversion(experiment="running", metric="free", subject="s1"),
        Exposure(experiment="running", subject="s2", variant="treatment", event_id="e2"),
        Conversion(experiment="running", metric="free", subject="s2", value=2, timestamp=NOW),
    ]
    inline = checker()
    staged: list[StagedEvent] = []
    inline.check_into(batch, 0, 3, staged, [])  # resolves the experiment and both metrics
    calls: list[int] = []
    reference_check = inline.check

    def counting_check(index: int, event: object) -> Any:
        calls.append(index)
        return reference_check(index, event)

    inline.check = counting_check  # type: ignore[method-assign]
    inline.check_into(batch, 3, 5, staged, [])
    assert calls == []
    assert [e.subject for e in staged] == ["s1", "s1", "s1", "s2", "s2"]
    assert staged[4].value == 2.0
    assert type(staged[4].value) is float
    assert staged[0].timestamp == NOW.timestamp()


def test_an_int_too_big_for_a_double_is_an_invalid_value() -> None:
    """Python callers can pass any int; one beyond a double's range is rejected, not a
    crash of the ingestion actor (``math.isfinite`` raises on it)."""
    event = Conversion(experiment="running", metric="free", subject="s1", value=10**400)
    result = checker().check(0, event)
    assert not isinstance(result, StagedEvent)
    assert result.code == "invalid_value"
    rejected: list[Any] = []
    checker().check_into([event], 0, 1, [], rejected)
    assert [r.code for r in rejected] == ["invalid_value"]


def test_a_time_whose_tzinfo_gives_no_offset_is_an_invalid_timestamp() -> None:
    """Naive in all but name: comparing it with the limits would raise."""
    event = Exposure(
        experiment="running",
        subject="s1",
        variant="control",
        timestamp=NOW.replace(tzinfo=Nowhere()),
    )
    result = checker().check(0, event)
    assert not isinstance(result, StagedEvent)
    assert result.code == "invalid_timestamp"
