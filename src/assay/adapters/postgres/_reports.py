"""Report aggregation on PostgreSQL, over the rollups of migration 0004.

A report is two transactions:

1. **prepare** (read-write): for each metric the report reads, make sure its rollup exists
   and was built with the metric's current attribution (window, CUPED days, experiment
   end); otherwise rebuild it from the event tables under the experiment's exclusive
   advisory lock (or, when the experiment's raw events were compacted, refuse:
   ``_compaction.py``). Then compact the hourly deltas when they have piled up.
2. **read** (repeatable read, read only): per-variant exposures from the hourly rollup
   plus the partial hours at the period's edges, and each metric kind's queries against
   the relations of ``_metric_kinds.SqlSource``, all on one snapshot.

A series of reports ending at many moments (``report_series``, the points of a report over
time) is the same two transactions once: the hourly rollups of the exposures and of every
``TotalsKind`` metric are read once, row by row in hour order, and summed cumulatively in
the order a report's own sums add them (so each point is that report's, bit for bit);
other kinds, and ends inside an hour, run their queries once per end on the same snapshot.

Every query aggregates in the database; Python only ever receives a few rows per variant
(per hour, for a series).
Functions named ``aio_*`` are asyncio-flavoured and run on the trio-asyncio loop.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import asyncpg
import msgspec
import numpy as np

from assay.adapters.postgres._compaction import (
    aio_compacted_cuts,
    aio_compacted_edges,
    refuse,
)
from assay.engine._metric_kinds import (
    TOTALS_COLUMNS,
    ReportAggregates,
    ReportRequest,
    RollupSpec,
    Row,
    SqlPlan,
    SqlQuery,
    TotalsKind,
    VariantUnits,
)
from assay.engine._planned_verdict import PlannedLook

if TYPE_CHECKING:
    from assay.adapters.postgres._aio import AioLoop

_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9999, 12, 30, tzinfo=UTC)

_LOCK = "pg_advisory_xact_lock{shared}(assay_report_lock_class(), hashtext($1))"

_ROLLUP_STATE = """
SELECT metric_key, window_hours, pre_hours, until FROM assay_report_rollups
WHERE experiment_id = $1
"""

# A rebuild: the rollup's level-1 rows and hours go (the delete trigger is told not to
# append deltas for them), then level 1 is computed from the event tables; its insert
# trigger appends the hours.
_REBUILD = [
    "SET LOCAL assay.report_rebuild = 'on'",
    "DELETE FROM assay_report_subjects WHERE experiment_id = $1 AND metric_key = $2",
    "DELETE FROM assay_report_metric_hours WHERE experiment_id = $1 AND metric_key = $2",
    "SET LOCAL assay.report_rebuild = 'off'",
]
_UPSERT_ROLLUP = """
INSERT INTO assay_report_rollups (experiment_id, metric_key, window_hours, pre_hours, until)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (experiment_id, metric_key) DO UPDATE SET
    window_hours = excluded.window_hours, pre_hours = excluded.pre_hours,
    until = excluded.until
"""
_BUILD_SUBJECTS = """
INSERT INTO assay_report_subjects
SELECT experiment_id, metric_key, subject, variant, exposed_at,
    count(*) FILTER (WHERE k = 1), coalesce(sum(value) FILTER (WHERE k = 1), 0),
    count(*) FILTER (WHERE k = 2), coalesce(sum(value) FILTER (WHERE k = 2), 0)
FROM (
    SELECT c.experiment_id, c.metric_key, c.subject, c.value, e.variant, e.exposed_at,
        assay_report_class(c.converted_at, e.exposed_at, $3, $4, $5) AS k
    FROM assay_conversions c
    JOIN assay_exposures e ON e.experiment_id = c.experiment_id AND e.subject = c.subject
    WHERE c.experiment_id = $1 AND c.metric_key = $2
      AND NOT EXISTS (
        SELECT 1 FROM assay_crossovers x
        WHERE x.experiment_id = c.experiment_id AND x.subject = c.subject
      )
) w
WHERE k > 0
GROUP BY experiment_id, metric_key, subject, variant, exposed_at
"""
_BUILD_UNEXPOSED = """
INSERT INTO assay_report_unexposed (experiment_id, subject)
SELECT DISTINCT c.experiment_id, c.subject FROM assay_conversions c
WHERE c.experiment_id = $1 AND c.metric_key = $2
  AND NOT EXISTS (
    SELECT 1 FROM assay_exposures e
    WHERE e.experiment_id = c.experiment_id AND e.subject = c.subject
  )
ON CONFLICT DO NOTHING
"""

# A conversion stored before its subject's exposure is parked; the exposure's trigger
# attributes it. When the two land in concurrent transactions neither sees the other, so
# every report first attributes parked conversions whose exposure has arrived since.
_SWEEP_UNEXPOSED = """
WITH claimed AS (
    DELETE FROM assay_report_unexposed u USING assay_exposures e
    WHERE u.experiment_id = $1 AND e.experiment_id = u.experiment_id AND e.subject = u.subject
    RETURNING u.experiment_id, u.subject, e.variant, e.exposed_at
)
INSERT INTO assay_report_subjects AS s
SELECT experiment_id, metric_key, subject, variant, exposed_at,
    count(*) FILTER (WHERE k = 1), coalesce(sum(value) FILTER (WHERE k = 1), 0),
    count(*) FILTER (WHERE k = 2), coalesce(sum(value) FILTER (WHERE k = 2), 0)
FROM (
    SELECT c.experiment_id, r.metric_key, c.subject, v.value, c.variant, c.exposed_at,
        assay_report_class(v.converted_at, c.exposed_at, r.window_hours, r.pre_hours,
                           r.until) AS k
    FROM claimed c
    JOIN assay_report_rollups r ON r.experiment_id = c.experiment_id
    JOIN assay_conversions v ON v.experiment_id = c.experiment_id
        AND v.metric_key = r.metric_key AND v.subject = c.subject
    WHERE NOT EXISTS (
        SELECT 1 FROM assay_crossovers x
        WHERE x.experiment_id = c.experiment_id AND x.subject = c.subject
    )
) w
WHERE k > 0
GROUP BY experiment_id, metric_key, subject, variant, exposed_at
ORDER BY experiment_id, metric_key, subject
ON CONFLICT (experiment_id, metric_key, subject) DO UPDATE SET
    post_count = s.post_count + excluded.post_count,
    post_sum = s.post_sum + excluded.post_sum,
    pre_count = s.pre_count + excluded.pre_count,
    pre_sum = s.pre_sum + excluded.pre_sum
"""

_SUMS = ", ".join(f"sum({c}) AS {c}" for c in TOTALS_COLUMNS[1:])
_ORDER = ", ".join(("k", *TOTALS_COLUMNS[1:]))
_ORDERED_SUMS = ", ".join(f"sum({c} ORDER BY {_ORDER}) AS {c}" for c in TOTALS_COLUMNS[1:])
"""A period's totals add its rows in one fixed order (by hour, then by value), not in scan
order: floating-point sums depend on the order, and ``report_series`` adds the same rows
in the same order hour after hour, so that each of its points equals the report's own to
the last digit."""
_COMPACT_WHEN = 64
"""Delta rows per experiment beyond the number of distinct hours x variants x metrics
that trigger a compaction."""
_NEEDS_COMPACTION = """
SELECT (SELECT count(*) FROM assay_report_metric_hours WHERE experiment_id = $1)
     - (SELECT count(*) FROM (
            SELECT DISTINCT metric_key, variant, hour FROM assay_report_metric_hours
            WHERE experiment_id = $1) d),
       (SELECT count(*) FROM assay_report_exposure_hours WHERE experiment_id = $1)
     - (SELECT count(*) FROM (
            SELECT DISTINCT variant, hour FROM assay_report_exposure_hours
            WHERE experiment_id = $1) d)
"""
_COMPACT_METRICS = f"""
WITH gone AS (
    DELETE FROM assay_report_metric_hours WHERE experiment_id = $1 RETURNING *
)
INSERT INTO assay_report_metric_hours
SELECT experiment_id, metric_key, variant, hour, {_SUMS}
FROM gone GROUP BY experiment_id, metric_key, variant, hour
"""
_COMPACT_EXPOSURES = """
WITH gone AS (
    DELETE FROM assay_report_exposure_hours WHERE experiment_id = $1 RETURNING *
)
INSERT INTO assay_report_exposure_hours
SELECT experiment_id, variant, hour, sum(exposed), sum(crossed)
FROM gone GROUP BY experiment_id, variant, hour
"""
_PENDING = """
SELECT count(*) FROM assay_pending_conversions WHERE experiment_id = $1 AND expires_at > $2
"""


class _Period(NamedTuple):
    """Whole hours ``[hours_from, hours_to)`` read from the hourly rollups, and the edges
    ``[edge1_from, edge1_to)`` and ``[edge2_from, edge2_to)`` read row by row."""

    start: datetime
    end: datetime
    hours_from: datetime
    hours_to: datetime
    edge1_to: datetime
    edge2_from: datetime


def _period(start: datetime | None, end: datetime | None) -> _Period:
    lo = (start or _EARLIEST).astimezone(UTC)
    hi = (end or _LATEST).astimezone(UTC)
    floor_lo = lo.replace(minute=0, second=0, microsecond=0)
    ceil_lo = floor_lo if floor_lo == lo else floor_lo + timedelta(hours=1)
    floor_hi = hi.replace(minute=0, second=0, microsecond=0)
    if ceil_lo < floor_hi:
        return _Period(lo, hi, ceil_lo, floor_hi, ceil_lo, floor_hi)
    # Inside one hour (or two adjacent partial ones): all of it row by row.
    return _Period(lo, hi, hi, hi, hi, hi)


class PgSource:
    """``SqlSource`` for one experiment and period (see ``_metric_kinds``)."""

    def __init__(
        self,
        experiment_id: str,
        period: _Period,
        compacted_edges: list[tuple[str, int, int]] | None = None,
    ) -> None:
        self._experiment_id = experiment_id
        self._period = period
        self._compacted_edges = compacted_edges
        """For a compacted experiment (no raw rows): the edges' exposures per variant."""

    def _edges(self, q: SqlQuery) -> str:
        """``(variant, exposed, crossed)`` rows of the period's partial hours."""
        if self._compacted_edges is not None:
            variants, exposed, crossed = (
                q.param([row[i] for row in self._compacted_edges]) for i in range(3)
            )
            return (
                f"SELECT * FROM unnest({variants}::text[], {exposed}::bigint[], "
                f"{crossed}::bigint[])"
            )
        p = self._period
        e, start, end, e1_to, e2_from = (
            q.param(v) for v in (self._experiment_id, p.start, p.end, p.edge1_to, p.edge2_from)
        )
        return f"""SELECT x.variant, 1, EXISTS (
                    SELECT 1 FROM assay_crossovers c
                    WHERE c.experiment_id = x.experiment_id AND c.subject = x.subject
                )::int
                FROM assay_exposures x
                WHERE x.experiment_id = {e}
                  AND ((x.exposed_at >= {start} AND x.exposed_at < {e1_to})
                    OR (x.exposed_at >= {e2_from} AND x.exposed_at < {end}))"""

    def _common(self, q: SqlQuery) -> tuple[str, ...]:
        p = self._period
        return (
            q.param(self._experiment_id),
            q.param(p.start),
            q.param(p.end),
            q.param(p.hours_from),
            q.param(p.hours_to),
            q.param(p.edge1_to),
            q.param(p.edge2_from),
        )

    def exposures(self, q: SqlQuery) -> str:
        """``(variant, exposed, crossed, n)`` for variants exposed in the period."""
        e, h_from, h_to = (
            q.param(self._experiment_id),
            q.param(self._period.hours_from),
            q.param(self._period.hours_to),
        )
        return f"""(
            SELECT variant, sum(exposed)::bigint AS exposed, sum(crossed)::bigint AS crossed,
                sum(exposed - crossed)::bigint AS n
            FROM (
                SELECT variant, exposed, crossed FROM assay_report_exposure_hours
                WHERE experiment_id = {e} AND hour >= {h_from} AND hour < {h_to}
                UNION ALL
                {self._edges(q)}
            ) u
            GROUP BY variant HAVING sum(exposed) > 0
        )"""

    def units(self, q: SqlQuery) -> str:
        return f"(SELECT variant, n FROM {self.exposures(q)} ex)"

    def totals(self, q: SqlQuery, metric_key: str) -> str:
        units = self.units(q)
        e, start, end, h_from, h_to, e1_to, e2_from = self._common(q)
        k = q.param(metric_key)
        columns = ", ".join(TOTALS_COLUMNS[1:])
        outer = ", ".join(f"coalesce(m.{c}, 0) AS {c}" for c in TOTALS_COLUMNS[1:])
        return f"""(
            SELECT u.variant, u.n::float8 AS n, {outer}
            FROM {units} u
            LEFT JOIN (
                SELECT variant, {_ORDERED_SUMS} FROM (
                    SELECT variant, hour AS k, {columns} FROM assay_report_metric_hours
                    WHERE experiment_id = {e} AND metric_key = {k}
                      AND hour >= {h_from} AND hour < {h_to}
                    UNION ALL
                    SELECT variant, exposed_at AS k, {columns} FROM assay_report_contributions
                    WHERE experiment_id = {e} AND metric_key = {k}
                      AND ((exposed_at >= {start} AND exposed_at < {e1_to})
                        OR (exposed_at >= {e2_from} AND exposed_at < {end}))
                ) z GROUP BY variant
            ) m ON m.variant = u.variant
        )"""

    def subjects(self, q: SqlQuery, metric_key: str) -> str:
        p = self._period
        return f"""(
            SELECT variant, subject, post_count, post_sum, pre_count, pre_sum
            FROM assay_report_subjects
            WHERE experiment_id = {q.param(self._experiment_id)}
              AND metric_key = {q.param(metric_key)}
              AND exposed_at >= {q.param(p.start)} AND exposed_at < {q.param(p.end)}
        )"""


def _wanted(spec: RollupSpec, until: datetime | None) -> tuple[Any, ...]:
    return (spec.window_hours, spec.pre_hours, until)


async def aio_prepare(conn: Any, request: ReportRequest) -> list[datetime] | None:
    """Make the rollups the report reads current; the cuts kept if the experiment's raw
    events were compacted (None if not)."""
    experiment_id = request.experiment_id
    async with conn.transaction():
        rows = await conn.fetch(_ROLLUP_STATE, experiment_id)
        built = {r["metric_key"]: (r["window_hours"], r["pre_hours"], r["until"]) for r in rows}
        stale = [s for s in request.rollups if built.get(s.metric_key) != _wanted(s, request.until)]
        cuts = await aio_compacted_cuts(conn, experiment_id)
        if cuts is not None:
            # No raw rows to rebuild from: a rollup is as it was compacted, or refused.
            if stale:
                raise refuse(
                    f"metric {stale[0].metric_key!r} is not rolled up with its current "
                    "attribution (it changed, or was added, after the compaction)"
                )
            await conn.execute(f"SELECT {_LOCK.format(shared='_shared')}", experiment_id)
        elif stale:
            # Exclusive: no ingestion trigger of this experiment runs until we commit, and
            # every one that ran before has committed, so the rebuild sees all it did.
            await conn.execute(f"SELECT {_LOCK.format(shared='')}", experiment_id)
            for spec in stale:
                args = (experiment_id, spec.metric_key, *_wanted(spec, request.until))
                for statement in _REBUILD:
                    if "$" in statement:
                        await conn.execute(statement, experiment_id, spec.metric_key)
                    else:
                        await conn.execute(statement)
                await conn.execute(_UPSERT_ROLLUP, *args)
                await conn.execute(_BUILD_SUBJECTS, *args)
                await conn.execute(_BUILD_UNEXPOSED, experiment_id, spec.metric_key)
        else:
            # Shared, like ingestion: a rebuild must not run while deltas are merged.
            await conn.execute(f"SELECT {_LOCK.format(shared='_shared')}", experiment_id)
        if cuts is None:
            await conn.execute(_SWEEP_UNEXPOSED, experiment_id)
        extra_metrics, extra_exposures = await conn.fetchrow(_NEEDS_COMPACTION, experiment_id)
        if extra_metrics > _COMPACT_WHEN:
            await conn.execute(_COMPACT_METRICS, experiment_id)
        if extra_exposures > _COMPACT_WHEN:
            await conn.execute(_COMPACT_EXPOSURES, experiment_id)
    return cuts


async def _aio_run_plan(conn: Any, plan: SqlPlan) -> Mapping[str, Row]:
    query = next(plan)
    while True:
        rows = [dict(r) for r in await conn.fetch(query.text, *query.params)]
        try:
            query = plan.send(rows)
        except StopIteration as done:
            result: Mapping[str, Row] = done.value
            return result


_RETRIES = 3
"""Attempts at the prepare transaction: waiting for the exclusive lock, it can be chosen
as a deadlock victim among ingestion transactions; it is safe to run again."""


async def _aio_prepare_retrying(conn: Any, request: ReportRequest) -> list[datetime] | None:
    """``aio_prepare``, run again when chosen as a deadlock victim; the compaction cuts."""
    for attempt in range(1, _RETRIES + 1):
        try:
            return await aio_prepare(conn, request)
        except asyncpg.exceptions.DeadlockDetectedError:
            if attempt == _RETRIES:
                raise
    raise AssertionError("unreachable")


async def _aio_source(
    conn: Any, request: ReportRequest, end: datetime | None, cuts: list[datetime] | None
) -> PgSource:
    """The relations of the period ending at ``end``; for an experiment whose raw events
    were compacted (``cuts``), its partial hours come from what compaction kept."""
    period = _period(request.start, end)
    edges = None
    if cuts is not None:
        edges = await aio_compacted_edges(
            conn,
            request.experiment_id,
            cuts,
            [(period.start, period.edge1_to), (period.edge2_from, period.end)],
        )
    return PgSource(request.experiment_id, period, edges)


async def _aio_aggregate(
    conn: Any,
    request: ReportRequest,
    end: datetime | None,
    pending: int,
    cuts: list[datetime] | None,
) -> ReportAggregates:
    """One period's aggregates, inside the caller's read-only transaction."""
    source = await _aio_source(conn, request, end, cuts)
    q = SqlQuery()
    q.text = f"SELECT variant, exposed, crossed FROM {source.exposures(q)} ex"
    exposure_rows: Sequence[Any] = await conn.fetch(q.text, *q.params)
    rows = {
        m.metric.key: await _aio_run_plan(conn, m.kind.sql(m.metric, source))
        for m in request.metrics
    }
    return ReportAggregates(
        units={
            r["variant"]: VariantUnits(int(r["exposed"]), int(r["crossed"])) for r in exposure_rows
        },
        pending=pending,
        rows=rows,
    )


async def aio_report_aggregates(pool: Any, request: ReportRequest) -> ReportAggregates:
    async with pool.acquire() as conn:
        cuts = await _aio_prepare_retrying(conn, request)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            pending: int = await conn.fetchval(_PENDING, request.experiment_id, request.now)
            return await _aio_aggregate(conn, request, request.end, pending, cuts)


async def aio_report_series(
    pool: Any, request: ReportRequest, ends: Sequence[datetime]
) -> list[ReportAggregates]:
    async with pool.acquire() as conn:
        cuts = await _aio_prepare_retrying(conn, request)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            pending: int = await conn.fetchval(_PENDING, request.experiment_id, request.now)
            whole = sorted({e for e in ends if _whole_hours(_period(request.start, e))})
            series = await _aio_cumulative(conn, request, whole) if whole else {}
            out = []
            for end in ends:
                found = series.get(end)
                if found is None:
                    out.append(await _aio_aggregate(conn, request, end, pending, cuts))
                    continue
                units, totals = found
                source = await _aio_source(conn, request, end, cuts)
                rows: dict[str, Mapping[str, Row]] = {}
                for m in request.metrics:
                    if m.metric.key in totals:
                        rows[m.metric.key] = totals[m.metric.key]
                    else:
                        rows[m.metric.key] = await _aio_run_plan(conn, m.kind.sql(m.metric, source))
                out.append(ReportAggregates(units=units, pending=pending, rows=rows))
    return out


def _whole_hours(period: _Period) -> bool:
    """Whether a period is read from the hourly rollups alone (no edge read row by row)."""
    return period.hours_from == period.start and period.hours_to == period.end


_EXPOSURE_HOURS = """
SELECT variant, hour, sum(exposed)::bigint AS exposed, sum(crossed)::bigint AS crossed
FROM assay_report_exposure_hours
WHERE experiment_id = $1 AND hour >= $2 AND hour < $3
GROUP BY variant, hour ORDER BY variant, hour
"""
_METRIC_HOURS = f"""
SELECT variant, hour, {", ".join(TOTALS_COLUMNS[1:])} FROM assay_report_metric_hours
WHERE experiment_id = $1 AND metric_key = $2 AND hour >= $3 AND hour < $4
ORDER BY variant, {_ORDER.replace("k", "hour", 1)}
"""


async def _aio_cumulative(
    conn: Any, request: ReportRequest, ends: Sequence[datetime]
) -> dict[datetime, tuple[dict[str, VariantUnits], dict[str, Mapping[str, Row]]]]:
    """Per end (sorted, each on a whole hour), the exposures per variant and the rows of
    every metric whose kind reads its totals only: one read of each hourly rollup, summed
    cumulatively. The sums run over the rows in the order ``PgSource.totals`` adds them,
    one addition at a time as PostgreSQL's ``sum`` does, so each end's numbers are those
    of the report ending there, bit for bit."""
    lo = _period(request.start, ends[0]).hours_from
    hi = ends[-1]
    exposure_rows = await conn.fetch(_EXPOSURE_HOURS, request.experiment_id, lo, hi)
    units: list[dict[str, VariantUnits]] = [{} for _ in ends]
    for variant, hours in _by_variant_rows(exposure_rows):
        exposed = crossed = 0
        i = 0
        for position, end in enumerate(ends):
            while i < len(hours) and hours[i]["hour"] < end:
                exposed += int(hours[i]["exposed"])
                crossed += int(hours[i]["crossed"])
                i += 1
            if exposed > 0:
                units[position][variant] = VariantUnits(exposed, crossed)
    totals: list[dict[str, Mapping[str, Row]]] = [{} for _ in ends]
    columns = TOTALS_COLUMNS[1:]
    for m in request.metrics:
        if not (isinstance(m.kind, TotalsKind) and m.kind.reads_totals_only(m.metric)):
            continue
        metric_rows = await conn.fetch(_METRIC_HOURS, request.experiment_id, m.metric.key, lo, hi)
        folded: dict[str, list[dict[str, float]]] = {}
        for variant, hours in _by_variant_rows(metric_rows):
            # np.cumsum adds row after row (accumulate is never pairwise): the running
            # sums PostgreSQL's sum() reaches, one end after another.
            running = np.cumsum(
                np.array([[float(r[c]) for c in columns] for r in hours], dtype=np.float64),
                axis=0,
            )
            starts = [r["hour"] for r in hours]
            snapshots = []
            for end in ends:
                taken = bisect_left(starts, end)  # the rows of hours before ``end``
                snapshots.append(
                    dict(zip(columns, running[taken - 1].tolist(), strict=True)) if taken else {}
                )
            folded[variant] = snapshots
        for position in range(len(ends)):
            totals[position][m.metric.key] = {
                variant: {
                    "n": float(u.exposed - u.crossovers),
                    **{
                        c: folded[variant][position].get(c, 0.0) if variant in folded else 0.0
                        for c in columns
                    },
                }
                for variant, u in units[position].items()
            }
    return {end: (units[i], totals[i]) for i, end in enumerate(ends)}


def _by_variant_rows(rows: Sequence[Any]) -> list[tuple[str, list[Any]]]:
    """Rows ordered by variant, grouped by it (order kept)."""
    out: list[tuple[str, list[Any]]] = []
    for r in rows:
        if not out or out[-1][0] != r["variant"]:
            out.append((r["variant"], []))
        out[-1][1].append(r)
    return out


class PostgresReportStore:
    """Mixed into ``PostgresStore``: the report half of the Store port."""

    _pool: Any
    _loop: AioLoop

    async def report_aggregates(self, request: ReportRequest) -> ReportAggregates:
        return await self._loop.run(aio_report_aggregates, self._pool, request)

    async def report_series(
        self, request: ReportRequest, ends: Sequence[datetime]
    ) -> list[ReportAggregates]:
        return await self._loop.run(aio_report_series, self._pool, request, ends)

    async def planned_looks(self, experiment_id: str) -> list[PlannedLook]:
        rows = await self._loop.run(self._pool.fetch, _PLANNED_LOOKS, experiment_id)
        return [msgspec.json.decode(row["body"], type=PlannedLook) for row in rows]

    async def record_planned_look(self, look: PlannedLook) -> bool:
        inserted = await self._loop.run(
            self._pool.fetchval,
            _RECORD_PLANNED_LOOK,
            look.experiment_id,
            look.index,
            look.taken_at,
            msgspec.json.encode(look),
        )
        return inserted is not None


_PLANNED_LOOKS = """
SELECT body FROM assay_planned_looks WHERE experiment_id = $1 ORDER BY look
"""
_RECORD_PLANNED_LOOK = """
INSERT INTO assay_planned_looks (experiment_id, look, taken_at, body)
VALUES ($1, $2, $3, $4)
ON CONFLICT (experiment_id, look) DO NOTHING
RETURNING look
"""
