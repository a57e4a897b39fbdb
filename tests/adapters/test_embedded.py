"""The embedded PostgreSQL server: its data outlives it, and processes share it. These tests
start servers of their own, in directories of their own, beside the session's server."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from assay.adapters.embedded import default_data_dir, start_embedded_postgres
from assay.adapters.postgres import open_postgres_store
from assay.engine._model import Project

if TYPE_CHECKING:
    from collections.abc import Iterator

    from assay.adapters.embedded import EmbeddedPostgres

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def data_dir(scratch_base: Path) -> Iterator[Path]:
    """One data directory for this module's servers: initdb takes seconds, a restart one."""
    path = Path(tempfile.mkdtemp(prefix="assay-test-embedded-", dir=scratch_base))
    yield path / "assay"
    shutil.rmtree(path, ignore_errors=True)


def postmaster_running(data_dir: Path) -> bool:
    return (data_dir / "pgdata" / "postmaster.pid").exists()


async def test_data_survives_a_stop_and_a_restart(data_dir: Path) -> None:
    server = await trio.to_thread.run_sync(start_embedded_postgres, data_dir)
    try:
        async with open_postgres_store(server.dsn) as store, store.transaction() as tx:
            await tx.insert(Project(id="prj_1", key="kept", created_at=T0, updated_at=T0))
    finally:
        await trio.to_thread.run_sync(server.stop)
    assert not postmaster_running(data_dir)

    server = await trio.to_thread.run_sync(start_embedded_postgres, data_dir)
    try:
        assert postmaster_running(data_dir)
        async with open_postgres_store(server.dsn) as store:
            state = await store.load_config()
    finally:
        await trio.to_thread.run_sync(server.stop)
    assert [p.key for p in state.projects] == ["kept"]


def test_handles_share_one_server_until_the_last_stops(data_dir: Path) -> None:
    first = start_embedded_postgres(data_dir)
    second = start_embedded_postgres(data_dir)
    try:
        assert second.dsn == first.dsn
        first.stop()
        first.stop()  # idempotent: does not release the second handle's share
        assert postmaster_running(data_dir)
        assert second.psql("SELECT 40 + 2", database="assay").strip() == "42"
    finally:
        second.stop()
    assert not postmaster_running(data_dir)


def test_databases_are_created_once_and_dropped(embedded_pg: EmbeddedPostgres) -> None:
    name = f"other_{uuid.uuid4().hex[:12]}"
    copy = f"copy_{uuid.uuid4().hex[:12]}"
    assert embedded_pg.database_exists("assay")
    embedded_pg.create_database(name)
    try:
        embedded_pg.create_database(name)  # already there: nothing to do
        embedded_pg.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (7)", database=name)
        embedded_pg.create_database(copy, template=name)
        assert embedded_pg.psql("SELECT x FROM t", database=copy).strip() == "7"
        embedded_pg.drop_database(copy)
        assert not embedded_pg.database_exists(copy)
        assert embedded_pg.dsn_for(name).startswith("postgresql://postgres@/")
    finally:
        embedded_pg.drop_database(copy)
        embedded_pg.drop_database(name)


def test_default_data_dir_is_the_users_assay_directory() -> None:
    path = default_data_dir()
    assert path.is_absolute()
    assert path.name == "assay"


_KILLED_USER = """
import os, signal, sys
from pathlib import Path
from assay.adapters.embedded import start_embedded_postgres
start_embedded_postgres(Path(sys.argv[1]))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_server_left_by_a_killed_process_is_adopted_and_stopped(data_dir: Path) -> None:
    """A process using the server is killed with -9: the server runs on (orphaned). The
    next start adopts it, and its stop stops it (before, the dead process still counted as
    a user and the server was never stopped)."""
    import os
    import signal
    import subprocess
    import sys

    killed = subprocess.run([sys.executable, "-c", _KILLED_USER, str(data_dir)], check=False)
    assert killed.returncode == -9
    assert postmaster_running(data_dir)
    try:
        server = start_embedded_postgres(data_dir)
        server.psql("SELECT 1")
        server.stop()
        assert not postmaster_running(data_dir)
    finally:
        if postmaster_running(data_dir):  # failed: stop the orphan (fast shutdown)
            pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGINT)
