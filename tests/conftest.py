"""Fixtures shared by the whole suite.

PostgreSQL is real, never mocked: one embedded server runs for the whole session (started
by the first test that needs it), a template database is migrated once, and every test that
asks for ``pg_dsn`` gets its own fresh copy of it (tens of milliseconds), dropped afterwards.

- ``pg_dsn``: DSN of a fresh, migrated database, private to the test.
- ``memory_store`` / ``postgres_store``: an open store of that kind (postgres on ``pg_dsn``).
- ``store``: parametrized over both ("memory", "postgres"), for contract tests that must
  hold for every adapter.
- ``embedded_pg``: the session's server, to create more databases (``create_database``,
  ``dsn_for``) or run SQL through psql (``psql``).
- ``scratch_base``: the directory to put other data directories in (``tempfile.mkdtemp``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from assay.adapters.embedded import EmbeddedPostgres, start_embedded_postgres
from assay.adapters.memory import open_memory_store
from assay.adapters.postgres import migrate, open_postgres_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from assay.adapters.memory import MemoryStore
    from assay.adapters.postgres import PostgresStore
    from assay.engine import Engine
    from assay.engine._ports import Store

TEMPLATE_DATABASE = "assay_template"


@pytest.fixture(scope="session")
def scratch_base() -> Path:
    """Where tests put PostgreSQL data directories: in memory (/dev/shm) when available,
    which makes creating a database about ten times faster than on a slow disk. Not
    pytest's tmp_path: a concurrent pytest run prunes old base temp directories and would
    delete the data directory of a running server."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


@pytest.fixture(scope="session")
def embedded_pg(scratch_base: Path) -> Iterator[EmbeddedPostgres]:
    """The session's embedded PostgreSQL server."""
    data_dir = Path(tempfile.mkdtemp(prefix="assay-test-pg-", dir=scratch_base))
    server = start_embedded_postgres(data_dir)
    yield server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_template(embedded_pg: EmbeddedPostgres) -> str:
    """Name of a database with every migration applied, copied for each test."""
    embedded_pg.create_database(TEMPLATE_DATABASE)
    # A sync fixture runs outside any Trio run, so it may start its own.
    trio.run(migrate, embedded_pg.dsn_for(TEMPLATE_DATABASE))
    return TEMPLATE_DATABASE


@pytest.fixture
def pg_dsn(embedded_pg: EmbeddedPostgres, pg_template: str) -> Iterator[str]:
    """DSN of a fresh, migrated database that only this test uses."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    embedded_pg.create_database(name, template=pg_template)
    yield embedded_pg.dsn_for(name)
    embedded_pg.drop_database(name)


@pytest.fixture
async def memory_store() -> AsyncIterator[MemoryStore]:
    async with open_memory_store() as store:
        yield store


@pytest.fixture
async def postgres_store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    async with open_postgres_store(pg_dsn) as store:
        yield store


@pytest.fixture(params=["memory", "postgres"])
def store_dsn(request: pytest.FixtureRequest) -> str | None:
    """None for the memory adapter, else a fresh database's DSN. Sync and separate from
    ``store`` so that only the postgres case pays for a database."""
    if request.param == "memory":
        return None
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


@pytest.fixture
async def store(store_dsn: str | None) -> AsyncIterator[Store]:
    """Each adapter in turn: a test using this runs once per adapter."""
    if store_dsn is None:
        async with open_memory_store() as memory:
            yield memory
    else:
        async with open_postgres_store(store_dsn) as postgres:
            yield postgres


@pytest.fixture
def open_ingestion_engine(pg_dsn: str) -> Callable[..., AbstractAsyncContextManager[Engine]]:
    """Opens an engine on this test's database with one running two-variant experiment
    (metric ``purchase``), fast actor restarts, and ``lanes`` ingestion write lanes: what the
    ingestion load and lane tests share."""

    @asynccontextmanager
    async def open_engine(lanes: int, project: str, experiment: str) -> AsyncIterator[Engine]:
        import assay
        from assay.engine import (
            SYSTEM_KEY,
            EngineConfig,
            Experiment,
            ExperimentSpec,
            Metric,
            MetricSpec,
            ProjectSpec,
            Transition,
            Variant,
        )

        config = EngineConfig(
            database_url=pg_dsn,
            pool_size=4,
            ingestion_write_lanes=lanes,
            restart_backoff_seconds=0.01,
            restart_backoff_max_seconds=0.05,
        )
        async with assay.open_engine(config, load_entry_points=False) as engine:
            service = engine.service
            await service.create_project(SYSTEM_KEY, ProjectSpec(key=project))
            await service.create_object(SYSTEM_KEY, Metric, project, MetricSpec(key="purchase"))
            spec = ExperimentSpec(
                key=experiment,
                variants=[Variant(key="a", value=1), Variant(key="b", value=2)],
                primary_metrics=["purchase"],
            )
            await service.create_object(SYSTEM_KEY, Experiment, project, spec)
            await service.transition_experiment(SYSTEM_KEY, project, experiment, Transition.START)
            await engine.refresh()
            yield engine

    return open_engine


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (large simulations, each with a fast seeded version in the
    default run) run only when asked for: ``pytest -m slow``."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
