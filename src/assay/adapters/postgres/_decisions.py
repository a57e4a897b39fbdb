"""Decision records on PostgreSQL: batches go in with one INSERT or COPY, lookups by id.

A batch written again after a failure (the connection was lost, perhaps after the commit
reached the server) goes in with ``ON CONFLICT DO NOTHING``: a record is there exactly
once however often its batch was sent."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from assay.adapters.postgres._aio import usable
from assay.engine._core import RECORD_FIELDS, Decision, Reason

_COLUMNS = RECORD_FIELDS
"""The table's columns are the record's fields."""
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM assay_decisions WHERE decision_id = $1"
_encode = msgspec.json.Encoder().encode


def _row(d: Decision) -> tuple[Any, ...]:
    return (
        d.decision_id,
        d.project_id,
        d.flag,
        d.subject,
        _encode(d.value),
        d.variant,
        d.rule,
        d.reason.value,
        d.experiment,
        None if d.experiment_reason is None else d.experiment_reason.value,
        d.in_experiment,
        d.hash_value,
        d.flag_revision,
        d.snapshot_version,
        datetime.fromtimestamp(d.decided_at, UTC),
    )


_TYPES = (
    "text", "text", "text", "text", "jsonb", "text", "text", "text", "text", "text",
    "boolean", "text", "integer", "integer", "timestamptz",
)  # fmt: skip
_INSERT = (
    f"INSERT INTO assay_decisions ({', '.join(_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_TYPES, 1))
    + ")"
)
# The conflict target is the partitioned table's key; a batch sent again carries the same
# decided_at, so the same (decision_id, decided_at) pairs.
_INSERT_AGAIN = _INSERT + " ON CONFLICT (decision_id, decided_at) DO NOTHING"
UNNEST_MAX = 16
"""Batches up to this size go in as one prepared ``INSERT ... SELECT FROM unnest(...)``
(one round trip), larger ones by COPY (two round trips, but cheaper per row: encoding a
dozen array parameters grows faster with the rows than COPY's stream does). Measured
through trio-asyncio, CPU per batch: 8 rows ~182 us by INSERT, ~205 us by COPY; 16 rows
about even; 24 rows COPY ahead."""


class RecordWriter:
    """Writes decision records on a connection of its own, held between batches.

    Acquiring from the pool and releasing costs about 90 us of CPU per batch through
    trio-asyncio (the release arms timers and shields a task), a third of writing a
    small batch; the records are written by one task at a time (the store serialises
    them), so one held connection serves them all. A failed write gives the connection
    back to the pool (which discards a broken one) and the next write takes a fresh one.
    A connection the server closed meanwhile is released by the pool on its own (the held
    proxy then refuses every call, ``is_closed`` included): it is dropped here, too.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._conn: Any = None

    async def aio_write(self, decisions: Sequence[Decision], *, again: bool = False) -> None:
        conn = self._conn
        if conn is None or not usable(conn):
            self._conn = None
            conn = self._conn = await self._pool.acquire()
        rows = [_row(d) for d in decisions]
        try:
            if again:
                await conn.execute(_INSERT_AGAIN, *zip(*rows, strict=True))
            # Decision ids are unique by construction: a first write has no conflict.
            elif len(rows) <= UNNEST_MAX:
                await conn.execute(_INSERT, *zip(*rows, strict=True))
            else:
                await conn.copy_records_to_table("assay_decisions", records=rows, columns=_COLUMNS)
        except BaseException as exc:
            self._conn = None
            lost = isinstance(exc, Exception) and not usable(conn)
            await self._pool.release(conn)
            if lost:
                # The server closed the connection under the write: whatever asyncpg made
                # of it (sometimes an internal state error), it is a lost connection.
                raise asyncpg.ConnectionDoesNotExistError(
                    "connection lost during the write"
                ) from exc
            raise

    async def aio_close(self) -> None:
        """Give the connection back (before the pool closes: closing waits for it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)


async def aio_get_decision(pool: Any, decision_id: str) -> Decision | None:
    row = await pool.fetchrow(_SELECT, decision_id)
    if row is None:
        return None
    return Decision(
        decision_id=row["decision_id"],
        project_id=row["project_id"],
        flag=row["flag"],
        subject=row["subject"],
        value=None if row["value"] is None else msgspec.json.decode(row["value"]),
        variant=row["variant"],
        rule=row["rule"],
        reason=Reason(row["reason"]),
        experiment=row["experiment"],
        experiment_reason=None
        if row["experiment_reason"] is None
        else Reason(row["experiment_reason"]),
        in_experiment=row["in_experiment"],
        hash_value=row["hash_value"],
        flag_revision=row["flag_revision"],
        snapshot_version=row["snapshot_version"],
        decided_at=row["decided_at"].timestamp(),
    )
