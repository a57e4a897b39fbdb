"""Schema migrations: numbered SQL files (``migrations/NNNN_name.sql``, shipped inside the
package) applied in order, each once and in its own transaction, and recorded in
``assay_schema_migrations``.

Several processes may start at once against one database, so the whole run holds a
session advisory lock: the first applies what is missing, the others then find nothing to do.

Functions named ``aio_*`` are asyncio-flavoured and run on a trio-asyncio loop.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from assay.adapters.postgres._aio import open_aio_loop
from assay.engine import StoreUnavailable

MIGRATION_LOCK_ID = 0x6173_7361_7901
"""Session advisory lock held while migrating ("assay" in ASCII, then 01)."""

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS assay_schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


class Migration(NamedTuple):
    version: int
    name: str
    """The file name without ``.sql``, e.g. ``0001_initial``."""
    sql: str


def load_migrations() -> list[Migration]:
    """Every migration shipped with this package, in version order."""
    found: dict[int, Migration] = {}
    for entry in files("assay.adapters.postgres").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise RuntimeError(f"two migrations numbered {version}: {entry.name}")
        found[version] = Migration(version, entry.name.removesuffix(".sql"), entry.read_text())
    return [found[v] for v in sorted(found)]


async def aio_apply_migrations(conn: Any) -> list[str]:
    """Apply what is missing on ``conn`` (an asyncpg connection); return the names applied."""
    applied_now: list[str] = []
    # Take the lock before CREATE TABLE IF NOT EXISTS: run concurrently, that statement can
    # itself fail on a duplicate catalog entry.
    # On failure the lock is not released here: the caller closes the connection (or the
    # pool resets it), which releases every session lock, even when the connection broke.
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    await conn.execute(_CREATE_TABLE)
    rows = await conn.fetch("SELECT version FROM assay_schema_migrations")
    done = {row["version"] for row in rows}
    for migration in load_migrations():
        if migration.version in done:
            continue
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO assay_schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
        applied_now.append(migration.name)
    await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now


CONNECT_ERRORS = (
    OSError,  # refused, unknown host, no route, no such socket
    TimeoutError,
    asyncpg.InvalidAuthorizationSpecificationError,  # no such role, bad password
    asyncpg.InvalidCatalogNameError,  # no such database
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.TooManyConnectionsError,
)


def unreachable(dsn: str, exc: BaseException) -> StoreUnavailable:
    """The error for a database that cannot be connected to at all: one line a person can
    act on, naming the server (never the password) and what it said."""
    parts = urlsplit(dsn)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)
        parts = parts._replace(netloc=netloc[0].split(":", 1)[0] + ":***@" + netloc[1])
    reason = str(exc) or type(exc).__name__
    return StoreUnavailable(
        f"cannot connect to PostgreSQL at {urlunsplit(parts)}: {reason}",
        code="store_unavailable",
    )


async def aio_connect(dsn: str) -> Any:
    """A connection to ``dsn``; a database that cannot be reached raises ``unreachable``."""
    try:
        return await asyncpg.connect(dsn)
    except CONNECT_ERRORS as exc:
        raise unreachable(dsn, exc) from exc


async def aio_migrate(dsn: str) -> list[str]:
    """Migrate on a connection of its own, closed after: closing releases the lock."""
    conn = await aio_connect(dsn)
    try:
        return await aio_apply_migrations(conn)
    finally:
        await conn.close()


async def migrate(dsn: str) -> list[str]:
    """Bring the database at ``dsn`` up to date; return the migrations applied now (an empty
    list when it already was). Trio-flavoured; opens its own trio-asyncio loop."""
    async with open_aio_loop() as loop:
        return await loop.run(aio_migrate, dsn)
