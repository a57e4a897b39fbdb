"""Console sessions in PostgreSQL (table ``assay_console_sessions``, migration 0020): the
PostgreSQL store's half of the sessions port.

Every statement is one round trip on the pool, outside any configuration transaction: a
session's request reads its row joined with its API key, so a revoked key is seen at the
next request in every process.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from assay.engine._console_sessions import ConsoleSession
from assay.engine._model import ApiKey, Role

if TYPE_CHECKING:
    from assay.adapters.postgres._aio import AioLoop

_PURGE = "DELETE FROM assay_console_sessions WHERE expires_at <= $1"
_INSERT = """
INSERT INTO assay_console_sessions (token_hash, key_id, csrf, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5)
"""
_GET = """
SELECT s.token_hash, s.key_id, s.csrf, s.created_at, s.expires_at,
       k.id, k.name, k.role, k.project_id, k.prefix, k.secret_hash, k.created_at AS k_created_at,
       k.created_by, k.revoked_at
FROM assay_console_sessions s LEFT JOIN api_keys k ON k.id = s.key_id
WHERE s.token_hash = $1 AND s.expires_at > $2
"""
_DELETE = "DELETE FROM assay_console_sessions WHERE token_hash = $1"


async def _aio_create(pool: Any, session: ConsoleSession, now: datetime) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_PURGE, now)
        await conn.execute(
            _INSERT,
            session.token_hash,
            session.key_id,
            session.csrf,
            session.created_at,
            session.expires_at,
        )


class PostgresSessionStore:
    """Mixed into ``PostgresStore``: console sessions."""

    _pool: Any
    _loop: AioLoop

    async def create_console_session(self, session: ConsoleSession, *, now: datetime) -> None:
        await self._loop.run(_aio_create, self._pool, session, now)

    async def get_console_session(
        self, token_hash: str, *, now: datetime
    ) -> tuple[ConsoleSession, ApiKey | None] | None:
        row = await self._loop.run(self._pool.fetchrow, _GET, token_hash, now)
        if row is None:
            return None
        session = ConsoleSession(
            token_hash=row["token_hash"],
            key_id=row["key_id"],
            csrf=row["csrf"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
        )
        if row["id"] is None:
            return session, None
        key = ApiKey(
            id=row["id"],
            name=row["name"],
            role=Role(row["role"]),
            project_id=row["project_id"],
            prefix=row["prefix"],
            secret_hash=row["secret_hash"],
            created_at=row["k_created_at"],
            created_by=row["created_by"],
            revoked_at=row["revoked_at"],
        )
        return session, key

    async def delete_console_session(self, token_hash: str) -> None:
        await self._loop.run(self._pool.execute, _DELETE, token_hash)
