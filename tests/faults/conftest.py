"""Fixtures for the fault-injection suite (helpers in ``support``):

- ``fault_pg``: a ``FaultyPostgres`` (an embedded server in its own data directory, one per
  module, so stopping it touches no other test's database) with ``stop()``, ``start()``
  and ``terminate_sessions()``.
- ``fault_dsn``: a fresh, migrated database on it, private to the test.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from assay.adapters.embedded import start_embedded_postgres
from assay.adapters.postgres import migrate
from tests.faults.support import FaultyPostgres

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def fault_pg(scratch_base: Path) -> Iterator[FaultyPostgres]:
    data_dir = Path(tempfile.mkdtemp(prefix="assay-test-faults-", dir=scratch_base))
    server = start_embedded_postgres(data_dir)
    faulty = FaultyPostgres(server)
    yield faulty
    # pgserver stops only the postmaster it started; one a test started again is ours.
    pid_file = Path(faulty._pg.pgdata) / "postmaster.pid"
    with contextlib.suppress(Exception):
        running = int(pid_file.read_text().split()[0])
        if running != faulty._pg.get_pid():
            faulty.stop()
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def fault_dsn(fault_pg: FaultyPostgres) -> Iterator[str]:
    name = f"fault_{uuid.uuid4().hex[:12]}"
    fault_pg.server.create_database(name)
    dsn = fault_pg.server.dsn_for(name)
    trio.run(migrate, dsn)
    yield dsn
    fault_pg.server.drop_database(name)
