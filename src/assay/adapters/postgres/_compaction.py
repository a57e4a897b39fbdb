"""Compaction of an ended experiment's raw events on PostgreSQL (migration 0022), and how
its reports and ingestion counts are answered afterwards.

Rules (engine/_compaction.py has the policy; docs/retention.md tells users):

- One transaction under the experiment's exclusive report lock (the lock a rollup rebuild
  takes, so no ingestion trigger of the experiment runs beside it): first every rollup
  the report reads is made current, exactly as a report's prepare step does; then what
  the report and the ingestion summary read from raw rows is kept (the ingestion counts,
  the exposures of each cut's partial hour); then the raw rows go. A second compaction of
  the same experiment finds its row in ``assay_compactions`` and does nothing.
- Afterwards a report reads the rollups only. Its period's partial hours (the edges) are
  read from the kept cuts, or are empty when no subject was first exposed in that hour;
  any other edge, and any metric whose rollup would need rebuilding (its attribution
  changed since), is refused with ``report_compacted``: never a different number.

Functions named ``aio_*`` are asyncio-flavoured and run on the trio-asyncio loop.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from assay.engine._errors import Conflict
from assay.engine._events import IngestionCounts

if TYPE_CHECKING:
    from assay.engine._retention import Compaction

_STATE = "SELECT cuts FROM assay_compactions WHERE experiment_id = $1"
_CUT_EXPOSURES = """
INSERT INTO assay_compacted_cuts (experiment_id, cut, variant, exposed, crossed)
SELECT $1, $2::timestamptz, x.variant, count(*), count(*) FILTER (WHERE EXISTS (
        SELECT 1 FROM assay_crossovers c
        WHERE c.experiment_id = x.experiment_id AND c.subject = x.subject))
FROM assay_exposures x
WHERE x.experiment_id = $1
  AND x.exposed_at >= date_trunc('hour', $2::timestamptz, 'UTC') AND x.exposed_at < $2
GROUP BY x.variant
"""
_REMOVE = [
    "DELETE FROM assay_report_unexposed WHERE experiment_id = $1",
    "DELETE FROM assay_conversion_keys WHERE experiment_id = $1",
    "DELETE FROM assay_conversions WHERE experiment_id = $1",
    "DELETE FROM assay_crossovers WHERE experiment_id = $1",
    "DELETE FROM assay_exposures WHERE experiment_id = $1",
]
_RAW_TABLES = ("assay_conversions", "assay_crossovers", "assay_exposures")
_RECORD = """
INSERT INTO assay_compactions (experiment_id, compacted_at, cuts, raw_rows, ingestion)
VALUES ($1, $2, $3, $4, $5::jsonb)
"""
_HOURS = """
SELECT variant, sum(exposed)::bigint AS exposed, sum(crossed)::bigint AS crossed
FROM assay_report_exposure_hours
WHERE experiment_id = $1 AND hour >= $2 AND hour < $3
GROUP BY variant
"""
_CUT = """
SELECT variant, exposed, crossed FROM assay_compacted_cuts WHERE experiment_id = $1 AND cut = $2
"""
_INGESTION = "SELECT ingestion::text FROM assay_compactions WHERE experiment_id = $1"


def _floor(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def aio_compact(conn: Any, compaction: Compaction, prepare: Any, counts: Any) -> int | None:
    """Compact on ``conn`` (see the module's rules). ``prepare`` is the reports' prepare
    step and ``counts`` the ingestion counting, both run on ``conn`` in this transaction."""
    experiment_id = compaction.experiment_id
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(assay_report_lock_class(), hashtext($1))", experiment_id
        )
        if await conn.fetchval(_STATE, experiment_id) is not None:
            return None
        await prepare(conn, compaction.request)
        ingestion: IngestionCounts = await counts(
            conn, experiment_id, compaction.windows, compaction.request.until, compaction.now
        )
        for cut in compaction.cuts:
            await conn.execute(_CUT_EXPOSURES, experiment_id, cut)
        removed = 0
        for statement in _REMOVE:
            status = await conn.execute(statement, experiment_id)
            if any(table in statement for table in _RAW_TABLES):
                removed += int(status.rsplit(" ", 1)[-1])
        await conn.execute(
            _RECORD,
            experiment_id,
            compaction.now,
            list(compaction.cuts),
            removed,
            msgspec.json.encode(ingestion),
        )
    return removed


async def aio_compacted_cuts(conn: Any, experiment_id: str) -> list[datetime] | None:
    """The cuts kept for a compacted experiment; None when it is not compacted."""
    cuts: list[datetime] | None = await conn.fetchval(_STATE, experiment_id)
    return cuts


def refuse(why: str) -> Conflict:
    return Conflict(
        f"the experiment's raw events were compacted: {why}",
        code="report_compacted",
        details={"docs": "docs/retention.md"},
    )


class _Counts(defaultdict[str, list[int]]):
    def __init__(self) -> None:
        super().__init__(lambda: [0, 0])

    def add(self, rows: Any, sign: int = 1) -> None:
        for r in rows:
            cell = self[r["variant"]]
            cell[0] += sign * int(r["exposed"])
            cell[1] += sign * int(r["crossed"])


async def aio_compacted_edges(
    conn: Any,
    experiment_id: str,
    cuts: list[datetime],
    edges: list[tuple[datetime, datetime]],
) -> list[tuple[str, int, int]]:
    """Per variant, the exposures (and crossovers among them) first exposed inside the
    ``edges`` (``[from, to)`` spans shorter than the hours around them), from the rollups
    and the kept cuts; ``report_compacted`` when they cannot tell exactly."""
    kept = {c.astimezone(UTC) for c in cuts}
    total = _Counts()

    async def before(at: datetime, sign: int) -> None:
        """Exposures in ``[hour of at, at)``."""
        hour = _floor(at)
        if at == hour:
            return
        if at.astimezone(UTC) in kept:
            total.add(await conn.fetch(_CUT, experiment_id, at), sign)
            return
        rows = await conn.fetch(_HOURS, experiment_id, hour, hour + timedelta(hours=1))
        if any(int(r["exposed"]) for r in rows):
            raise refuse(
                f"the period edge {at.isoformat()} splits an hour in which subjects were "
                "first exposed; ask for whole hours (or the experiment's start or end)"
            )

    for lo, hi in edges:
        if lo >= hi:
            continue
        # Exposures in [lo, hi): the whole hours from lo's to hi's, then the partial ones.
        total.add(await conn.fetch(_HOURS, experiment_id, _floor(lo), _floor(hi)))
        await before(hi, 1)
        await before(lo, -1)
    return [(variant, e, c) for variant, (e, c) in sorted(total.items())]


async def aio_compacted_ingestion(conn: Any, experiment_id: str) -> IngestionCounts | None:
    raw = await conn.fetchval(_INGESTION, experiment_id)
    return None if raw is None else msgspec.json.decode(raw, type=IngestionCounts)


__all__ = [
    "aio_compact",
    "aio_compacted_cuts",
    "aio_compacted_edges",
    "aio_compacted_ingestion",
    "refuse",
]
