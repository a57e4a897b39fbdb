"""The PostgreSQL Store: asyncpg, reached from Trio through trio-asyncio (see ``_aio``).

Each trip between Trio and the asyncio loop costs a task switch, so every ``_aio_*`` helper
(asyncio-flavoured, run on the loop) does as much as it can per trip: acquiring a
connection, BEGIN and the write lock are one trip; COMMIT and the release are another.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
import trio

from assay.adapters.postgres._aio import AioLoop, open_aio_loop, usable
from assay.adapters.postgres._decisions import RecordWriter, aio_get_decision
from assay.adapters.postgres._events import PostgresEventStore
from assay.adapters.postgres._guardrails import PostgresGuardrailStore
from assay.adapters.postgres._migrations import CONNECT_ERRORS, aio_migrate, unreachable
from assay.adapters.postgres._reports import PostgresReportStore
from assay.adapters.postgres._retention import PostgresRetentionStore
from assay.adapters.postgres._sessions import PostgresSessionStore
from assay.adapters.postgres._sticky import aio_load_sticky, aio_save_sticky
from assay.engine._errors import Conflict, NotFound
from assay.engine._model import (
    ApiKey,
    AuditEntry,
    Experiment,
    Flag,
    Layer,
    Metric,
    Project,
    Role,
    SdkConnection,
    Segment,
)
from assay.engine._ports import KIND_NAMES, ConfigHorizon, ConfigState, ConfigT

if TYPE_CHECKING:
    import builtins
    from collections.abc import AsyncIterator, Callable, Sequence

    from assay.engine._core import Decision, StickyAssignment
    from assay.engine._ports import Store, StoreTransaction

log = logging.getLogger("assay.adapters.postgres")

ConfigObject = Project | Flag | Experiment | Layer | Metric | Segment

CONFIG_LOCK_ID = 0x6173_7361_7900
"""Transaction advisory lock taken by every store transaction, so configuration writers are
serialised across processes ("assay" in ASCII, then 00; migrations use 01)."""

CHANNEL = "assay_config"
"""NOTIFY channel on which a trigger announces every committed configuration change."""

_LISTEN_KEEPALIVE = 30.0
"""Seconds of silence after which the listening connection is pinged: a peer that vanished
without closing the socket would otherwise never be noticed."""
_PING_TIMEOUT = 10.0
_RETRY_MIN, _RETRY_MAX = 0.1, 1.0
"""Reconnection back-off bounds, in seconds: once the database is back, changes flow again
within about a second."""

# --- asyncio-flavoured helpers, run on the loop -----------------------------------------


def _jsonb_encode(value: bytes) -> bytes:
    # jsonb's binary format is a version byte (1) before the JSON text, so msgspec's bytes
    # go to the server and come back without a detour through ``str``.
    return b"\x01" + value


def _jsonb_decode(value: bytes) -> bytes:
    return value[1:]


async def _aio_init_connection(conn: Any) -> None:
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_jsonb_encode,
        decoder=_jsonb_decode,
        format="binary",
    )


async def _aio_reset_connection(conn: Any) -> None:
    """Replaces asyncpg's reset on release (a round trip running RESET ALL, UNLISTEN * ...):
    pooled connections never change session state. asyncpg still rolls back an open
    transaction itself."""


async def _aio_open_pool(dsn: str, min_size: int, max_size: int, migrate: bool) -> Any:
    if migrate:
        await aio_migrate(dsn)
    try:
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_aio_init_connection,
            reset=_aio_reset_connection,
            server_settings={"application_name": "assay"},
        )
    except CONNECT_ERRORS as exc:
        raise unreachable(dsn, exc) from exc


async def _aio_close_pool(pool: Any) -> None:
    try:
        await asyncio.wait_for(pool.close(), timeout=10)
    except TimeoutError:
        # A connection was never released (a transaction left hanging): do not hang with it.
        pool.terminate()


async def _aio_begin(pool: Any) -> Any:
    conn = await pool.acquire()
    try:
        # One round trip for both; the lock is released by COMMIT or ROLLBACK.
        await conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({CONFIG_LOCK_ID})")
    except BaseException:
        # Cancelled while waiting for the lock, BEGIN has already run: roll back before
        # the connection goes back to the pool.
        await _aio_end(pool, conn, "ROLLBACK")
        raise
    return conn


async def _aio_begin_read(pool: Any) -> Any:
    conn = await pool.acquire()
    try:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    except BaseException:
        await _aio_end(pool, conn, "ROLLBACK")
        raise
    return conn


async def _aio_end(pool: Any, conn: Any, statement: str) -> None:
    try:
        if usable(conn):
            await conn.execute(statement)
    finally:
        # Terminates the connection instead if it is broken.
        await pool.release(conn)


async def _aio_commit(pool: Any, conn: Any) -> int | None:
    """COMMIT and release; the id of the committed transaction (None when it wrote
    nothing): what the change feed names its configuration change by (migration 0026)."""
    xid = None
    try:
        if usable(conn):  # as _aio_end
            xid = await conn.fetchval(_XID)
            await conn.execute("COMMIT")
    finally:
        await pool.release(conn)
    return None if xid is None else int(xid)


async def _aio_listen(
    dsn: str, on_notify: Callable[..., None], on_lost: Callable[..., None]
) -> Any:
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "assay-listen"})
    try:
        conn.add_termination_listener(on_lost)
        await conn.add_listener(CHANNEL, on_notify)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def _aio_close(conn: Any) -> None:
    try:
        await asyncio.wait_for(conn.close(), timeout=_PING_TIMEOUT)
    except Exception:
        conn.terminate()


async def _aio_load_config(pool: Any) -> tuple[str, list[Any], list[Any]]:
    """Configuration objects and active SDK connections from one consistent view, with
    that view's snapshot (one snapshot for the whole transaction: repeatable read)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot = await conn.fetchval(_SNAPSHOT)
        return snapshot, await conn.fetch(_LOAD), await conn.fetch(_LOAD_CONNECTIONS)


def _horizon(snapshot: str) -> ConfigHorizon:
    """A ``pg_snapshot``'s text (``xmin:xmax:xip,...``) as the changes it holds: the
    transactions visible in it, as ``pg_visible_in_snapshot`` decides."""
    xmin, xmax, xip = snapshot.split(":")
    return ConfigHorizon(
        complete=int(xmin),
        end=int(xmax),
        missing=frozenset(int(x) for x in xip.split(",") if x),
    )


def _change_id(payload: str) -> int | None:
    """The id of the transaction a notification names (migration 0026); None for an empty
    or foreign payload, which says only that something changed."""
    return int(payload) if payload.isdigit() else None


# --- encoding ---------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode


def _project_of(obj: ConfigObject) -> str | None:
    return None if isinstance(obj, Project) else obj.project_id


def _encode_json(value: Any) -> bytes | None:
    return None if value is None else _encode(value)


def _decode_json(raw: bytes | None) -> Any:
    return None if raw is None else msgspec.json.decode(raw)


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        role=Role(row["role"]),
        project_id=row["project_id"],
        prefix=row["prefix"],
        secret_hash=row["secret_hash"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        revoked_at=row["revoked_at"],
    )


def _key_args(key: ApiKey) -> tuple[Any, ...]:
    return (
        key.id,
        key.name,
        key.role.value,
        key.project_id,
        key.prefix,
        key.secret_hash,
        key.created_at,
        key.created_by,
        key.revoked_at,
    )


# --- SQL --------------------------------------------------------------------------------
# Projects have no project: project ids are compared through coalesce(project_id, ''), the
# expression of the unique index, so these lookups and orderings use that index.

_GET = """
SELECT body FROM config_objects
WHERE kind = $1 AND coalesce(project_id, '') = $2 AND key = $3
"""
_GET_BY_ID = "SELECT body FROM config_objects WHERE kind = $1 AND id = $2"
_LIST = """
SELECT body FROM config_objects
WHERE kind = $1 AND coalesce(project_id, '') = $2 AND key > $3
ORDER BY key LIMIT $4
"""
_INSERT = """
INSERT INTO config_objects
    (id, kind, project_id, key, revision, body, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT DO NOTHING
RETURNING 1
"""
# A key collision is checked in the statement rather than left to the unique index: a
# violated constraint would abort the whole transaction, not just report a conflict.
_UPDATE = """
UPDATE config_objects
SET project_id = $3, key = $4, revision = $5, body = $6, updated_at = $7
WHERE id = $1 AND kind = $2 AND revision = $8
  AND NOT EXISTS (
    SELECT 1 FROM config_objects other
    WHERE other.kind = $2 AND coalesce(other.project_id, '') = coalesce($3, '')
      AND other.key = $4 AND other.id <> $1
  )
RETURNING 1
"""
_DELETE = """
DELETE FROM config_objects WHERE id = $1 AND kind = $2 AND revision = $3 RETURNING 1
"""
_REVISION = "SELECT revision FROM config_objects WHERE id = $1 AND kind = $2"
_SNAPSHOT = "SELECT pg_current_snapshot()::text"
_XID = "SELECT pg_current_xact_id_if_assigned()::text"
_LOAD = """
SELECT kind, body FROM config_objects ORDER BY kind, coalesce(project_id, ''), key
"""

_INSERT_AUDIT = """
INSERT INTO audit_log
    (project_id, actor, at, action, resource_kind, resource_id, resource_key, before, after)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
_AUDIT_COLUMNS = (
    "id, project_id, actor, at, action, resource_kind, resource_id, resource_key, before, after"
)

_KEY_COLUMNS = "id, name, role, project_id, prefix, secret_hash, created_at, created_by, revoked_at"
_INSERT_KEY = f"""
INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT DO NOTHING
RETURNING 1
"""
_UPDATE_KEY = """
UPDATE api_keys
SET name = $2, role = $3, project_id = $4, prefix = $5, secret_hash = $6,
    created_at = $7, created_by = $8, revoked_at = $9
WHERE id = $1
  AND NOT EXISTS (SELECT 1 FROM api_keys other WHERE other.secret_hash = $6 AND other.id <> $1)
RETURNING 1
"""
_KEY_EXISTS = "SELECT 1 FROM api_keys WHERE id = $1"
_GET_KEY = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1"
_KEY_BY_HASH = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1"
_LIST_KEYS = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2"
_LIST_PROJECT_KEYS = f"""
SELECT {_KEY_COLUMNS} FROM api_keys WHERE project_id = $3 AND id > $1 ORDER BY id LIMIT $2
"""
_COUNT_KEYS = "SELECT count(*) FROM api_keys"

_INSERT_CONNECTION = """
INSERT INTO sdk_connections (id, project_id, client_key, revision, body, revoked_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT DO NOTHING
RETURNING 1
"""
_UPDATE_CONNECTION = """
UPDATE sdk_connections
SET client_key = $2, revision = $3, body = $4, revoked_at = $5
WHERE id = $1 AND revision = $6
  AND NOT EXISTS (SELECT 1 FROM sdk_connections o WHERE o.client_key = $2 AND o.id <> $1)
RETURNING 1
"""
_CONNECTION_REVISION = "SELECT revision FROM sdk_connections WHERE id = $1"
_GET_CONNECTION = "SELECT body FROM sdk_connections WHERE id = $1"
_LIST_CONNECTIONS = """
SELECT body FROM sdk_connections WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT $3
"""
_LOAD_CONNECTIONS = "SELECT body FROM sdk_connections WHERE revoked_at IS NULL ORDER BY id"


# --- the transaction --------------------------------------------------------------------


class PostgresTransaction:
    """One database transaction on one connection. Use it from one task at a time."""

    def __init__(self, conn: Any, loop: AioLoop) -> None:
        self._conn = conn
        self._loop = loop
        self.change: int | None = None

    async def get(self, kind: type[ConfigT], project_id: str | None, key: str) -> ConfigT | None:
        raw = await self._loop.run(
            self._conn.fetchval, _GET, KIND_NAMES[kind], project_id or "", key
        )
        return None if raw is None else msgspec.json.decode(raw, type=kind)

    async def get_by_id(self, kind: type[ConfigT], object_id: str) -> ConfigT | None:
        raw = await self._loop.run(self._conn.fetchval, _GET_BY_ID, KIND_NAMES[kind], object_id)
        return None if raw is None else msgspec.json.decode(raw, type=kind)

    async def list(
        self, kind: type[ConfigT], project_id: str | None, *, after: str | None, limit: int
    ) -> list[ConfigT]:
        # Keys are never empty, so every key sorts after ''.
        rows = await self._loop.run(
            self._conn.fetch, _LIST, KIND_NAMES[kind], project_id or "", after or "", limit
        )
        return [msgspec.json.decode(row["body"], type=kind) for row in rows]

    async def insert(self, obj: ConfigObject) -> None:
        kind = KIND_NAMES[type(obj)]
        inserted = await self._loop.run(
            self._conn.fetchval,
            _INSERT,
            obj.id,
            kind,
            _project_of(obj),
            obj.key,
            obj.revision,
            _encode(obj),
            obj.created_at,
            obj.updated_at,
        )
        if inserted is None:
            raise Conflict(f"{kind} {obj.key!r} already exists", code="already_exists")

    async def update(self, obj: ConfigObject, *, expected_revision: int) -> None:
        kind = KIND_NAMES[type(obj)]
        updated = await self._loop.run(
            self._conn.fetchval,
            _UPDATE,
            obj.id,
            kind,
            _project_of(obj),
            obj.key,
            obj.revision,
            _encode(obj),
            obj.updated_at,
            expected_revision,
        )
        if updated is None:
            await self._explain_miss(obj, kind, expected_revision)
            raise Conflict(f"{kind} {obj.key!r} already exists", code="already_exists")

    async def delete(self, obj: ConfigObject, *, expected_revision: int) -> None:
        kind = KIND_NAMES[type(obj)]
        deleted = await self._loop.run(
            self._conn.fetchval, _DELETE, obj.id, kind, expected_revision
        )
        if deleted is None:
            await self._explain_miss(obj, kind, expected_revision)

    async def _explain_miss(self, obj: ConfigObject, kind: str, expected_revision: int) -> None:
        """Raise why a guarded update or delete touched no row, unless the revision was
        right (then the caller knows the reason)."""
        stored = await self._loop.run(self._conn.fetchval, _REVISION, obj.id, kind)
        if stored is None:
            raise NotFound(f"{kind} {obj.key!r} not found")
        if stored != expected_revision:
            raise Conflict(
                f"{kind} {obj.key!r} is at revision {stored}, not {expected_revision}",
                code="revision_mismatch",
            )

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._loop.run(
            self._conn.execute,
            _INSERT_AUDIT,
            entry.project_id,
            entry.actor,
            entry.at,
            entry.action,
            entry.resource_kind,
            entry.resource_id,
            entry.resource_key,
            _encode_json(entry.before),
            _encode_json(entry.after),
        )

    async def list_audit(
        self,
        *,
        project_id: str | None,
        resource_kind: str | None,
        resource_key: str | None,
        before_id: int | None,
        limit: int,
    ) -> builtins.list[AuditEntry]:
        # Only the filters given go into the SQL: "$1 IS NULL OR ..." would defeat the
        # indexes once PostgreSQL switches the prepared statement to a generic plan.
        conditions: builtins.list[str] = []
        args: builtins.list[Any] = []
        for column, value in (
            ("project_id =", project_id),
            ("resource_kind =", resource_kind),
            ("resource_key =", resource_key),
            ("id <", before_id),
        ):
            if value is not None:
                args.append(value)
                conditions.append(f"{column} ${len(args)}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        args.append(limit)
        sql = f"SELECT {_AUDIT_COLUMNS} FROM audit_log {where} ORDER BY id DESC LIMIT ${len(args)}"
        rows = await self._loop.run(self._conn.fetch, sql, *args)
        return [
            AuditEntry(
                id=row["id"],
                project_id=row["project_id"],
                actor=row["actor"],
                at=row["at"],
                action=row["action"],
                resource_kind=row["resource_kind"],
                resource_id=row["resource_id"],
                resource_key=row["resource_key"],
                before=_decode_json(row["before"]),
                after=_decode_json(row["after"]),
            )
            for row in rows
        ]

    async def insert_key(self, key: ApiKey) -> None:
        inserted = await self._loop.run(self._conn.fetchval, _INSERT_KEY, *_key_args(key))
        if inserted is None:
            raise Conflict(f"key {key.id!r} already exists", code="already_exists")

    async def update_key(self, key: ApiKey) -> None:
        updated = await self._loop.run(self._conn.fetchval, _UPDATE_KEY, *_key_args(key))
        if updated is None:
            if await self._loop.run(self._conn.fetchval, _KEY_EXISTS, key.id) is None:
                raise NotFound(f"key {key.id!r} not found")
            raise Conflict("another key has this secret", code="already_exists")

    async def get_key(self, key_id: str) -> ApiKey | None:
        row = await self._loop.run(self._conn.fetchrow, _GET_KEY, key_id)
        return None if row is None else _api_key(row)

    async def list_keys(
        self, project_id: str | None, *, after: str | None, limit: int
    ) -> builtins.list[ApiKey]:
        if project_id is None:
            rows = await self._loop.run(self._conn.fetch, _LIST_KEYS, after or "", limit)
        else:
            rows = await self._loop.run(
                self._conn.fetch, _LIST_PROJECT_KEYS, after or "", limit, project_id
            )
        return [_api_key(row) for row in rows]

    async def count_keys(self) -> int:
        count: int = await self._loop.run(self._conn.fetchval, _COUNT_KEYS)
        return count

    async def insert_connection(self, connection: SdkConnection) -> None:
        inserted = await self._loop.run(
            self._conn.fetchval,
            _INSERT_CONNECTION,
            connection.id,
            connection.project_id,
            connection.client_key,
            connection.revision,
            _encode(connection),
            connection.revoked_at,
        )
        if inserted is None:
            raise Conflict(
                f"SDK connection {connection.id!r} already exists", code="already_exists"
            )

    async def update_connection(self, connection: SdkConnection, *, expected_revision: int) -> None:
        updated = await self._loop.run(
            self._conn.fetchval,
            _UPDATE_CONNECTION,
            connection.id,
            connection.client_key,
            connection.revision,
            _encode(connection),
            connection.revoked_at,
            expected_revision,
        )
        if updated is not None:
            return
        stored = await self._loop.run(self._conn.fetchval, _CONNECTION_REVISION, connection.id)
        if stored is None:
            raise NotFound(f"SDK connection {connection.id!r} not found")
        if stored != expected_revision:
            raise Conflict(
                f"SDK connection {connection.id!r} is at revision {stored}, "
                f"not {expected_revision}",
                code="revision_mismatch",
            )
        raise Conflict("another connection has this client key", code="already_exists")

    async def get_connection(self, connection_id: str) -> SdkConnection | None:
        raw = await self._loop.run(self._conn.fetchval, _GET_CONNECTION, connection_id)
        return None if raw is None else msgspec.json.decode(raw, type=SdkConnection)

    async def list_connections(
        self, project_id: str, *, after: str | None, limit: int
    ) -> builtins.list[SdkConnection]:
        rows = await self._loop.run(
            self._conn.fetch, _LIST_CONNECTIONS, project_id, after or "", limit
        )
        return [msgspec.json.decode(row["body"], type=SdkConnection) for row in rows]


# --- the store --------------------------------------------------------------------------


class _Wakeup:
    """What the listening connection reports, set from asyncio callbacks (which run in the
    trio-asyncio loop's Trio task, so setting a trio.Event there is safe)."""

    def __init__(self) -> None:
        self.changes: dict[int | None, None] = {}
        """Changes announced and not yet relayed, in order, each once."""
        self.lost = False
        self._event = trio.Event()

    def notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.changes[_change_id(payload)] = None
        self._event.set()

    def terminated(self, *_: object) -> None:
        self.lost = True
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


class PostgresStore(
    PostgresEventStore,
    PostgresReportStore,
    PostgresGuardrailStore,
    PostgresRetentionStore,
    PostgresSessionStore,
):
    """The Store port on PostgreSQL. Opened by ``open_postgres_store``."""

    def __init__(self, dsn: str, pool: Any, loop: AioLoop) -> None:
        self._dsn = dsn
        self._pool = pool
        self._loop = loop
        self._closed = False
        self._listeners: set[Any] = set()
        # Serialises this process's transactions before they take a pooled connection: at
        # most one connection waits on the advisory lock, the rest stay free for reads, and
        # a nested transaction in one task fails at once instead of deadlocking.
        self._write_lock = trio.Lock()
        self._records = RecordWriter(pool)
        self._records_lock = trio.Lock()
        """One batch of decision records at a time on the records' own connection."""
        self._kinds = {name: kind for kind, name in KIND_NAMES.items()}

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        async with self._write_lock:
            conn = await self._loop.run(_aio_begin, self._pool)
            tx = PostgresTransaction(conn, self._loop)
            try:
                yield tx
            except BaseException:
                with trio.CancelScope(shield=True):
                    try:
                        await self._loop.run(_aio_end, self._pool, conn, "ROLLBACK")
                    except Exception:
                        # The error that got us here matters more; PostgreSQL rolls back
                        # a transaction whose connection is gone anyway.
                        log.warning("rollback failed", exc_info=True)
                raise
            # Shielded: a cancellation arriving during COMMIT must not leave the caller
            # unsure whether its write happened.
            with trio.CancelScope(shield=True):
                tx.change = await self._loop.run(_aio_commit, self._pool, conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[PostgresTransaction]:
        """A read-only snapshot: no write lock, so reads never queue behind writers."""
        conn = await self._loop.run(_aio_begin_read, self._pool)
        try:
            yield PostgresTransaction(conn, self._loop)
        finally:
            with trio.CancelScope(shield=True):
                await self._loop.run(_aio_end, self._pool, conn, "ROLLBACK")

    async def record_decisions(self, decisions: Sequence[Decision], *, again: bool = False) -> None:
        if decisions:
            async with self._records_lock:
                await self._loop.run(self._records.aio_write, decisions, again=again)

    async def get_decision(self, decision_id: str) -> Decision | None:
        return await self._loop.run(aio_get_decision, self._pool, decision_id)

    async def load_sticky_buckets(
        self, project_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, str]]:
        return await self._loop.run(aio_load_sticky, self._pool, project_id, keys)

    async def save_sticky_buckets(
        self, project_id: str, assignments: Sequence[StickyAssignment]
    ) -> dict[tuple[str, str], dict[str, str]]:
        return await self._loop.run(aio_save_sticky, self._pool, project_id, assignments)

    async def load_config(self) -> ConfigState:
        snapshot, rows, connections = await self._loop.run(_aio_load_config, self._pool)
        grouped: dict[str, list[Any]] = {name: [] for name in KIND_NAMES.values()}
        for row in rows:
            kind = row["kind"]
            grouped[kind].append(msgspec.json.decode(row["body"], type=self._kinds[kind]))
        return ConfigState(
            projects=grouped["project"],
            flags=grouped["flag"],
            experiments=grouped["experiment"],
            layers=grouped["layer"],
            metrics=grouped["metric"],
            segments=grouped["segment"],
            sdk_connections=[
                msgspec.json.decode(row["body"], type=SdkConnection) for row in connections
            ],
            horizon=_horizon(snapshot),
        )

    async def get_key_by_hash(self, secret_hash: str) -> ApiKey | None:
        row = await self._loop.run(self._pool.fetchrow, _KEY_BY_HASH, secret_hash)
        return None if row is None else _api_key(row)

    async def watch_config(self, on_change: Callable[[int | None], None]) -> None:
        """LISTEN on a dedicated connection and call ``on_change`` with the transaction id
        each notification names (a burst is relayed together, each id once), and
        ``on_change(None)`` after every (re)connection, since changes committed while not
        listening were not announced. Reconnects with back-off when the connection drops.
        Runs until cancelled; raises once the store is closed."""
        failures = 0
        while True:
            self._check_open()
            wakeup = _Wakeup()
            try:
                conn = await self._loop.run(
                    _aio_listen, self._dsn, wakeup.notified, wakeup.terminated
                )
            except Exception:
                self._check_open()
                failures += 1
                delay = min(_RETRY_MAX, _RETRY_MIN * 2**failures)
                log.warning(
                    "cannot listen for configuration changes; retrying in %.1fs",
                    delay,
                    exc_info=True,
                )
                await trio.sleep(delay)
                continue
            failures = 0
            # Registered so that closing the store closes it, even when this task (started
            # outside the store's block) outlives the store.
            self._listeners.add(conn)
            try:
                self._check_open()
                await self._follow(conn, wakeup, on_change)
            except Exception:
                self._check_open()
                log.warning("lost the configuration change feed; reconnecting", exc_info=True)
            finally:
                self._listeners.discard(conn)
                with trio.CancelScope(shield=True):
                    await self._close_quietly(conn)
            await trio.sleep(_RETRY_MIN)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the PostgreSQL store is closed")

    async def _close(self) -> None:
        self._closed = True
        for conn in list(self._listeners):
            await self._close_quietly(conn)
        async with self._records_lock:
            try:
                await self._loop.run(self._records.aio_close)
            except Exception:
                log.debug("releasing the records connection failed", exc_info=True)
        await self._loop.run(_aio_close_pool, self._pool)

    async def _follow(
        self, conn: Any, wakeup: _Wakeup, on_change: Callable[[int | None], None]
    ) -> None:
        """Relay notifications until the connection is lost."""
        on_change(None)
        while True:
            with trio.move_on_after(_LISTEN_KEEPALIVE) as quiet:
                await wakeup.wait()
            if wakeup.lost:
                return
            if wakeup.changes:
                changes, wakeup.changes = wakeup.changes, {}
                for change in changes:
                    on_change(change)
            elif quiet.cancelled_caught:
                with trio.fail_after(_PING_TIMEOUT):
                    await self._loop.run(conn.execute, "SELECT 1")

    async def _close_quietly(self, conn: Any) -> None:
        try:
            await self._loop.run(_aio_close, conn)
        except Exception:
            log.debug("closing the listening connection failed", exc_info=True)


@asynccontextmanager
async def open_postgres_store(
    dsn: str, *, min_size: int = 1, max_size: int = 10, migrate: bool = True
) -> AsyncIterator[PostgresStore]:
    """Open a connection pool on ``dsn`` (applying migrations first unless told not to) and
    yield the store; close everything on exit. The store may be used from any Trio task in
    this run, including tasks started before or outside this block."""
    async with open_aio_loop() as loop:
        pool = await loop.run(_aio_open_pool, dsn, min_size, max_size, migrate)
        store = PostgresStore(dsn, pool, loop)
        try:
            yield store
        finally:
            with trio.CancelScope(shield=True):
                await store._close()


if TYPE_CHECKING:

    def _implements_store(store: PostgresStore) -> Store:
        return store

    def _implements_transaction(tx: PostgresTransaction) -> StoreTransaction:
        return tx
