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
- ``data_dir``: a fresh data directory under it for an ``assay serve`` of the test's own.
- ``serve_process``: starts ``assay serve`` as a person would (a subprocess, the embedded
  PostgreSQL, a free port) and returns a ``Server``; stopped at the end of the test.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
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

ASSAY = [sys.executable, "-m", "assay.adapters.cli"]
"""The ``assay`` command, as this interpreter runs it."""


@pytest.fixture(scope="module", params=["compiled", "python"])
def decide_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a module's tests on both decide paths: the compiled one (the C extension the
    install builds where a compiler is present) and pure Python, which must agree. Module
    scoped, so hypothesis tests can use it. The compiled variant fails when the extension
    was not built (a compiler can be installed), unless ASSAY_PURE_PYTHON asked for that."""
    from assay.engine._core._compiled import STATUS, native, use_compiled

    if request.param == "compiled" and native is None:
        if os.environ.get("ASSAY_PURE_PYTHON", "") not in ("", "0"):
            pytest.skip("ASSAY_PURE_PYTHON is set")
        pytest.fail(f"the compiled decide path is not built: {STATUS}")
    previous = use_compiled(request.param == "compiled")
    yield request.param
    use_compiled(previous)


@pytest.fixture
def quiet_growthbook_sdk() -> Iterator[None]:
    """GrowthBook's SDK logging only what is critical, for the test: it logs a warning for
    every missing parent and cycle it meets, and thousands of them would cost more than the
    evaluations."""
    sdk = logging.getLogger("growthbook")
    level = sdk.level
    sdk.setLevel(logging.CRITICAL)
    yield
    sdk.setLevel(level)


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


class Server:
    """``assay serve`` in a subprocess, its output (stdout and stderr, in order) read by a
    thread. Ready once /health has answered and its access-log line is in ``output``: the
    server prints everything it prints at startup before it handles a request, so
    ``startup`` (the lines before that one) is all a person saw before it was ready."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in list(env):
            if name.startswith("ASSAY_"):
                env.pop(name)
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [*ASSAY, "serve", "--port", "0", "--data-dir", str(data_dir), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self._wait_for(r"serving on (http://\S+)").group(1)
        deadline = time.monotonic() + 60
        while httpx.get(f"{self.url}/health", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "".join(self.output)
            time.sleep(0.1)
        first_request = self._wait_for(r'"GET /health ').string
        self.startup = self.output[: self.output.index(first_request)]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def _wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in list(self.output):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"no {pattern!r} from assay serve:\n" + "".join(self.output))

    @property
    def admin_secret(self) -> str | None:
        for line in self.startup:
            found = re.fullmatch(r"\s+(assay_\S+)\s*", line)
            if found:
                return found.group(1)
        return None

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(10)
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.fixture
def data_dir(scratch_base: Path) -> Iterator[Path]:
    path = scratch_base / f"serve-{os.getpid()}-{time.monotonic_ns()}"
    yield path
    # The server stopped the embedded PostgreSQL; its files can go.
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def serve_process() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(data_dir: Path, *args: str) -> Server:
        server = Server(data_dir, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (large simulations) run only when asked for with ``-m``
    (``-m slow``, or ``-m "slow or not slow"`` for everything); each has a fast seeded
    version in the default run."""
    if config.option.markexpr:
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]
