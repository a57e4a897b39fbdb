"""Guardrails on PostgreSQL: traffic counts, triggers, the notification outbox (migration
0005) and the leader election of guardrail actors.

**Leadership.** Several engine processes may share one database; exactly one guardrail
actor may act. The leader holds a session advisory lock (``GUARDRAIL_LOCK_ID``) on a
connection of its own, outside the pool: a session lock lives exactly as long as its
connection, so when the leader's process dies (or its connection drops) PostgreSQL
releases the lock, and the next follower to ask takes it. Followers ask on every interval
(``pg_try_advisory_lock`` never waits), so a dead leader is replaced within one interval
of PostgreSQL noticing. The leader proves it still leads by a round trip on that same
connection: while the session is alive, the lock is held.

Functions named ``aio_*`` are asyncio-flavoured and run on the trio-asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import asyncpg
import msgspec
import trio

from assay.engine._guardrails import ActionStatus, GuardrailTrigger, Notification, Traffic

if TYPE_CHECKING:
    import builtins
    from collections.abc import AsyncIterator, Sequence
    from datetime import datetime

    from assay.adapters.postgres._aio import AioLoop

log = logging.getLogger("assay.adapters.postgres")

GUARDRAIL_LOCK_ID: Final = 0x6173_7361_7902
"""Session advisory lock held by the leading guardrail actor ("assay" in ASCII, then 02;
00 is the configuration lock, 01 the migration lock)."""

_CONNECT_TIMEOUT: Final = 10.0
_PING_TIMEOUT: Final = 10.0

# --- SQL --------------------------------------------------------------------------------

_TRAFFIC = """
WITH crossed AS (SELECT DISTINCT subject FROM assay_crossovers WHERE experiment_id = $1)
SELECT e.variant,
    count(*) AS assigned,
    count(*) FILTER (WHERE x.subject IS NULL) AS exposures,
    count(x.subject) AS crossovers,
    max(e.exposed_at) AS last_exposed_at
FROM assay_exposures e LEFT JOIN crossed x ON x.subject = e.subject
WHERE e.experiment_id = $1
GROUP BY e.variant
ORDER BY e.variant
"""

_TRIGGER_COLUMNS = (
    "id",
    "project_id",
    "experiment_id",
    "experiment_key",
    "experiment_revision",
    "check_key",
    "kind",
    "metric_key",
    "variant",
    "observed",
    "ci_low",
    "ci_high",
    "threshold",
    "threshold_type",
    "harmful_direction",
    "statistic",
    "units",
    "message",
    "action",
    "action_status",
    "action_result",
    "triggered_at",
    "acted_at",
)
_TRIGGER_SELECT = ", ".join(_TRIGGER_COLUMNS)
_INSERT_TRIGGER = f"""
INSERT INTO assay_guardrail_triggers ({_TRIGGER_SELECT})
VALUES ({", ".join(f"${i}" for i in range(1, len(_TRIGGER_COLUMNS) + 1))})
ON CONFLICT (experiment_id, check_key, experiment_revision) DO NOTHING
RETURNING id
"""
_EXISTING_TRIGGER = f"""
SELECT {_TRIGGER_SELECT} FROM assay_guardrail_triggers
WHERE experiment_id = $1 AND check_key = $2 AND experiment_revision = $3
"""
_GET_TRIGGER = f"SELECT {_TRIGGER_SELECT} FROM assay_guardrail_triggers WHERE id = $1"
_CLAIM_TRIGGER = """
UPDATE assay_guardrail_triggers SET action_status = 'acting', lease_until = $3
WHERE id = $1
  AND (action_status = 'pending' OR (action_status = 'acting' AND lease_until <= $2))
RETURNING 1
"""
_SETTLE_TRIGGER = f"""
UPDATE assay_guardrail_triggers
SET action_status = $2, action_result = $3, acted_at = $4, lease_until = NULL
WHERE id = $1
RETURNING {_TRIGGER_SELECT}
"""

_OUTBOX_COLUMNS = (
    "id",
    "trigger_id",
    "project_id",
    "experiment_id",
    "channel",
    "payload",
    "created_at",
    "attempts",
    "next_attempt_at",
    "delivered_at",
    "last_error",
)
_OUTBOX_SELECT = ", ".join(_OUTBOX_COLUMNS)
_INSERT_OUTBOX = f"""
INSERT INTO assay_guardrail_outbox ({_OUTBOX_SELECT})
VALUES ({", ".join(f"${i}" for i in range(1, len(_OUTBOX_COLUMNS) + 1))})
"""
_DUE = f"""
SELECT {_OUTBOX_SELECT} FROM assay_guardrail_outbox
WHERE delivered_at IS NULL AND next_attempt_at <= $1
ORDER BY next_attempt_at, id
LIMIT $2
"""
_PURGE_DELIVERED = """
WITH purged AS (
    DELETE FROM assay_guardrail_outbox WHERE delivered_at < $1 RETURNING 1
)
SELECT count(*) FROM purged
"""
_RECORD_DELIVERY = """
UPDATE assay_guardrail_outbox
SET attempts = $2, delivered_at = $3, next_attempt_at = $4, last_error = $5
WHERE id = $1
"""

# --- rows -------------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode


def _trigger_args(t: GuardrailTrigger) -> tuple[Any, ...]:
    return (
        t.id,
        t.project_id,
        t.experiment_id,
        t.experiment_key,
        t.experiment_revision,
        t.check,
        t.kind,
        t.metric,
        t.variant,
        t.observed,
        t.ci_low,
        t.ci_high,
        t.threshold,
        t.threshold_type,
        t.harmful_direction,
        t.statistic,
        _encode(t.units),
        t.message,
        t.action,
        t.action_status,
        t.action_result,
        t.triggered_at,
        t.acted_at,
    )


def _trigger(row: Any) -> GuardrailTrigger:
    return msgspec.convert(
        {
            **{c: row[c] for c in _TRIGGER_COLUMNS if c not in ("check_key", "metric_key")},
            "check": row["check_key"],
            "metric": row["metric_key"],
            "units": msgspec.json.decode(row["units"]),
        },
        GuardrailTrigger,
    )


def _notification_args(n: Notification) -> tuple[Any, ...]:
    return (
        n.id,
        n.trigger_id,
        n.project_id,
        n.experiment_id,
        _encode(n.channel),
        _encode(n.payload),
        n.created_at,
        n.attempts,
        n.next_attempt_at,
        n.delivered_at,
        n.last_error,
    )


def _notification(row: Any) -> Notification:
    return Notification(
        id=row["id"],
        trigger_id=row["trigger_id"],
        project_id=row["project_id"],
        experiment_id=row["experiment_id"],
        channel=msgspec.json.decode(row["channel"]),
        payload=msgspec.json.decode(row["payload"]),
        created_at=row["created_at"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        delivered_at=row["delivered_at"],
        last_error=row["last_error"],
    )


def _listing(
    table: str, columns: str, filters: Sequence[tuple[str, Any]], before: str | None, limit: int
) -> tuple[str, list[Any]]:
    # Only the filters given go into the SQL, so the indexes stay usable with generic plans.
    conditions: list[str] = []
    args: list[Any] = []
    for column, value in (*filters, ("id <", before)):
        if value is not None:
            args.append(value)
            conditions.append(f"{column} ${len(args)}")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    args.append(limit)
    return f"SELECT {columns} FROM {table} {where} ORDER BY id DESC LIMIT ${len(args)}", args


# --- asyncio-flavoured helpers ------------------------------------------------------------


async def aio_traffic(pool: Any, experiment_id: str) -> Traffic:
    rows = await pool.fetch(_TRAFFIC, experiment_id)
    stamps = [row["last_exposed_at"] for row in rows if row["last_exposed_at"] is not None]
    return Traffic(
        exposures={row["variant"]: row["exposures"] for row in rows if row["exposures"]},
        crossovers=sum(row["crossovers"] for row in rows),
        assigned={row["variant"]: row["assigned"] for row in rows},
        last_exposure_at=max(stamps) if stamps else None,
    )


async def aio_record_trigger(
    pool: Any, trigger: GuardrailTrigger, notifications: Sequence[Notification]
) -> tuple[GuardrailTrigger, bool]:
    async with pool.acquire() as conn, conn.transaction():
        inserted = await conn.fetchval(_INSERT_TRIGGER, *_trigger_args(trigger))
        if inserted is None:
            row = await conn.fetchrow(
                _EXISTING_TRIGGER, trigger.experiment_id, trigger.check, trigger.experiment_revision
            )
            return _trigger(row), False
        if notifications:
            await conn.executemany(_INSERT_OUTBOX, [_notification_args(n) for n in notifications])
        row = await conn.fetchrow(_GET_TRIGGER, trigger.id)
    return _trigger(row), True


async def aio_list_triggers(
    pool: Any,
    experiment_id: str | None,
    action_status: str | None,
    before: str | None,
    limit: int,
) -> list[GuardrailTrigger]:
    sql, args = _listing(
        "assay_guardrail_triggers",
        _TRIGGER_SELECT,
        (("experiment_id =", experiment_id), ("action_status =", action_status)),
        before,
        limit,
    )
    return [_trigger(row) for row in await pool.fetch(sql, *args)]


async def aio_settle_trigger(
    pool: Any, trigger_id: str, status: str, result: str | None, at: datetime
) -> GuardrailTrigger | None:
    row = await pool.fetchrow(_SETTLE_TRIGGER, trigger_id, status, result, at)
    return None if row is None else _trigger(row)


async def aio_list_notifications(
    pool: Any, experiment_id: str, before: str | None, limit: int
) -> list[Notification]:
    sql, args = _listing(
        "assay_guardrail_outbox",
        _OUTBOX_SELECT,
        (("experiment_id =", experiment_id),),
        before,
        limit,
    )
    return [_notification(row) for row in await pool.fetch(sql, *args)]


async def aio_due_notifications(pool: Any, now: datetime, limit: int) -> list[Notification]:
    return [_notification(row) for row in await pool.fetch(_DUE, now, limit)]


# --- leadership -------------------------------------------------------------------------


async def _aio_connect(dsn: str) -> Any:
    return await asyncpg.connect(
        dsn,
        timeout=_CONNECT_TIMEOUT,
        server_settings={"application_name": "assay-guardrail-leader"},
    )


async def _aio_close(conn: Any) -> None:
    try:
        await asyncio.wait_for(conn.close(), timeout=_PING_TIMEOUT)
    except Exception:
        conn.terminate()


class PostgresLeadership:
    """One process's claim to lead; see the module docstring."""

    def __init__(self, dsn: str, loop: AioLoop) -> None:
        self._dsn = dsn
        self._loop = loop
        self._conn: Any = None
        self._leading = False

    async def acquire(self) -> bool:
        try:
            if self._conn is None or self._conn.is_closed():
                self._leading = False
                self._conn = None
                self._conn = await self._loop.run(_aio_connect, self._dsn)
            with trio.fail_after(_PING_TIMEOUT):
                if self._leading:
                    # Session alive, lock held: asking again would only stack the lock.
                    await self._loop.run(self._conn.fetchval, "SELECT 1")
                else:
                    self._leading = bool(
                        await self._loop.run(
                            self._conn.fetchval,
                            "SELECT pg_try_advisory_lock($1)",
                            GUARDRAIL_LOCK_ID,
                        )
                    )
        except Exception as exc:
            # A lost connection loses the lock with it: not leading until a fresh
            # connection takes the lock again.
            if self._leading:
                log.warning("lost the guardrail leader lock: %r", exc)
            else:
                log.debug("cannot reach PostgreSQL for the guardrail leader lock: %r", exc)
            await self.release()
            return False
        return self._leading

    async def release(self) -> None:
        """Close the connection, which releases the lock if it is held."""
        conn, self._conn, self._leading = self._conn, None, False
        if conn is not None:
            with trio.CancelScope(shield=True):
                try:
                    await self._loop.run(_aio_close, conn)
                except Exception:
                    log.debug("closing the guardrail leader connection failed", exc_info=True)


# --- the store mixin --------------------------------------------------------------------


class PostgresGuardrailStore:
    """Mixed into ``PostgresStore``: the guardrail half of the Store port."""

    _dsn: str
    _pool: Any
    _loop: AioLoop

    async def guardrail_traffic(self, experiment_id: str) -> Traffic:
        return await self._loop.run(aio_traffic, self._pool, experiment_id)

    async def record_trigger(
        self, trigger: GuardrailTrigger, notifications: Sequence[Notification]
    ) -> tuple[GuardrailTrigger, bool]:
        return await self._loop.run(aio_record_trigger, self._pool, trigger, notifications)

    async def list_triggers(
        self,
        *,
        experiment_id: str | None,
        action_status: str | None = None,
        before: str | None = None,
        limit: int,
    ) -> builtins.list[GuardrailTrigger]:
        return await self._loop.run(
            aio_list_triggers, self._pool, experiment_id, action_status, before, limit
        )

    async def claim_trigger(self, trigger_id: str, *, now: datetime, lease_until: datetime) -> bool:
        claimed = await self._loop.run(
            self._pool.fetchval, _CLAIM_TRIGGER, trigger_id, now, lease_until
        )
        return claimed is not None

    async def settle_trigger(
        self, trigger_id: str, *, status: ActionStatus, result: str | None, at: datetime
    ) -> GuardrailTrigger | None:
        return await self._loop.run(aio_settle_trigger, self._pool, trigger_id, status, result, at)

    async def list_notifications(
        self, *, experiment_id: str, before: str | None = None, limit: int
    ) -> builtins.list[Notification]:
        return await self._loop.run(
            aio_list_notifications, self._pool, experiment_id, before, limit
        )

    async def due_notifications(self, now: datetime, *, limit: int) -> builtins.list[Notification]:
        return await self._loop.run(aio_due_notifications, self._pool, now, limit)

    async def record_delivery(
        self,
        notification_id: str,
        *,
        attempts: int,
        delivered_at: datetime | None,
        next_attempt_at: datetime,
        error: str | None,
    ) -> None:
        await self._loop.run(
            self._pool.execute,
            _RECORD_DELIVERY,
            notification_id,
            attempts,
            delivered_at,
            next_attempt_at,
            error,
        )

    async def purge_delivered_notifications(self, before: datetime) -> int:
        purged = await self._loop.run(self._pool.fetchval, _PURGE_DELIVERED, before)
        return int(purged)

    @asynccontextmanager
    async def guardrail_leadership(self) -> AsyncIterator[PostgresLeadership]:
        leadership = PostgresLeadership(self._dsn, self._loop)
        try:
            yield leadership
        finally:
            await leadership.release()
