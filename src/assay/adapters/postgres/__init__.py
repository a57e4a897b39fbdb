"""The PostgreSQL adapter: the real Store, on asyncpg reached from Trio through trio-asyncio.

This package is the only place in assay that imports asyncpg or trio_asyncio.
"""

from assay.adapters.postgres._migrations import load_migrations, migrate
from assay.adapters.postgres._store import (
    CHANNEL,
    CONFIG_LOCK_ID,
    PostgresStore,
    PostgresTransaction,
    open_postgres_store,
)

__all__ = [
    "CHANNEL",
    "CONFIG_LOCK_ID",
    "PostgresStore",
    "PostgresTransaction",
    "load_migrations",
    "migrate",
    "open_postgres_store",
]
