"""A soak past retention on a virtual clock, on both stores: every simulated day writes
decision records and events (with event ids) of that day's experiment, which ends with
the day, and the leader's work runs as it would (expiry, compaction of the experiments
ended ``raw_event_days`` ago). The rows held per kind must stop growing once the
retention is reached, and on PostgreSQL the bytes too.

Event ids go a week at a time, so their count rises and falls by the week: "flat" means
no new maximum after the first settled week. The memory store keeps raw events (its
reports read them; docs/retention.md), so raw events are held flat on PostgreSQL only.
The benchmark version, at larger volume, is ``benchmarks/lifecycle.py --sections soak``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from assay.engine._core import Decision, Reason
from assay.engine._events import Kind, StagedEvent
from assay.engine._metric_kinds import ReportRequest
from assay.engine._ports import Store
from assay.engine._retention import Compaction, RetentionPolicy

DAY = timedelta(days=1)
START = datetime(2026, 3, 1, tzinfo=UTC)
PER_DAY = 40
DAYS = 24
POLICY = RetentionPolicy(decision_days=2, event_id_days=3, raw_event_days=3, event_max_age_days=2.0)
# Decisions settle after their retention; event ids after theirs plus a week (and a day).
SETTLED = POLICY.event_id_days + 7 + 2
KINDS = ("decision_records", "event_ids", "raw_events")


def day_of_traffic(n: int) -> tuple[list[Decision], list[StagedEvent]]:
    start = START + n * DAY
    decisions = [
        Decision(
            decision_id=f"0123456789abcdef{n * PER_DAY + i:08x}",
            project_id="prj_p",
            flag="color",
            subject=f"user-{i}",
            value="red",
            reason=Reason.DEFAULT,
            snapshot_version=1,
            decided_at=(start + i * DAY / PER_DAY).timestamp(),
        )
        for i in range(PER_DAY)
    ]
    events = []
    for i in range(PER_DAY // 2):
        at = (start + i * DAY / PER_DAY).timestamp()
        events.append(
            StagedEvent(Kind.EXPOSURE, "prj_p", f"exp_{n}", f"s{i}", "a", None, 1.0, at,
                        f"x-{n}-{i}", None, None)
        )  # fmt: skip
        events.append(
            StagedEvent(Kind.CONVERSION, "prj_p", f"exp_{n}", f"s{i}", None, "m", 2.0, at + 60,
                        f"c-{n}-{i}", None, None)
        )  # fmt: skip
    return decisions, events


async def vacuum(store: Store) -> None:
    """What autovacuum does to the raw tables after a compaction's DELETE (a test does not
    wait for it): their space is reused, not returned."""
    pool, loop = getattr(store, "_pool", None), getattr(store, "_loop", None)
    if pool is not None and loop is not None:
        await loop.run(pool.execute, "VACUUM assay_exposures, assay_conversions")


async def test_rows_and_bytes_stop_growing_past_retention(store: Store) -> None:
    on_postgres = hasattr(store, "_pool")
    rows: list[dict[str, int]] = []
    sizes: list[dict[str, int]] = []
    for n in range(DAYS):
        morning = START + n * DAY + timedelta(minutes=1)
        await store.expire(morning, POLICY)
        decisions, events = day_of_traffic(n)
        await store.record_decisions(decisions)
        await store.record_events(events, now=morning + timedelta(hours=12))
        night = START + (n + 1) * DAY + timedelta(minutes=1)
        expired = await store.expire(night, POLICY)
        assert expired.ran
        # As engine/_compaction.py asks it of the experiment that ended raw_event_days ago.
        ended = n - POLICY.raw_event_days - 1
        if ended >= 0:
            request = ReportRequest(
                experiment_id=f"exp_{ended}", start=None, end=None,
                until=START + (ended + 1) * DAY, rollups=(), metrics=(), now=night,
            )  # fmt: skip
            assert await store.compact_experiment(
                Compaction(f"exp_{ended}", request, {}, [], night)
            ) == (PER_DAY if on_postgres else 0)
        await vacuum(store)
        stats = await store.retention_stats(night, POLICY)
        held = {k.kind: k for k in stats.kinds}
        rows.append({kind: held[kind].rows for kind in KINDS})
        sizes.append({kind: held[kind].bytes for kind in KINDS})

    def flat(series: list[int]) -> bool:
        settled = series[SETTLED:]
        return len(settled) > 7 and max(settled[7:]) <= max(settled[:7])

    # Decision records: two whole days held (yesterday's and today's), every day.
    assert {r["decision_records"] for r in rows[POLICY.decision_days :]} == {2 * PER_DAY}
    assert flat([r["event_ids"] for r in rows])
    assert max(r["event_ids"] for r in rows) <= (POLICY.event_id_days + 7 + 1) * PER_DAY
    if on_postgres:
        assert {r["raw_events"] for r in rows[POLICY.raw_event_days + 2 :]} == {
            (POLICY.raw_event_days + 1) * PER_DAY
        }
        for kind in KINDS:
            series = [s[kind] for s in sizes[SETTLED:]]
            assert max(series[7:]) <= 1.1 * max(series[:7]), (kind, series)
    else:
        # Kept in memory: one day's worth more every day.
        assert rows[-1]["raw_events"] == DAYS * PER_DAY
