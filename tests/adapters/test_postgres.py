"""What only the PostgreSQL adapter promises: migrations, several processes (here: several
stores) on one database, and use from Trio tasks that trio-asyncio never saw."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import trio

from assay.adapters.postgres import PostgresStore, load_migrations, migrate, open_postgres_store
from assay.adapters.postgres._aio import open_aio_loop
from assay.adapters.postgres._events import stage
from assay.engine._events import Kind, StagedEvent
from assay.engine._model import ApiKey, Project, Role

if TYPE_CHECKING:
    from collections.abc import Iterator

    from assay.adapters.embedded import EmbeddedPostgres

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


async def asyncpg_pool(dsn: str) -> Any:
    import asyncpg

    return await asyncpg.create_pool(dsn, min_size=1, max_size=1)


def exposure(subject: str, event_id: str, project: str = "prj_1") -> StagedEvent:
    """A checked exposure to experiment ``exp_1``, as the store receives it."""
    return StagedEvent(
        Kind.EXPOSURE, project, "exp_1", subject, "a", None, 1.0, T0.timestamp(),
        event_id, None, None,
    )  # fmt: skip


def project(key: str) -> Project:
    return Project(id=f"prj_{key}", key=key, created_at=T0, updated_at=T0)


@pytest.fixture
def empty_database(embedded_pg: EmbeddedPostgres) -> Iterator[str]:
    """A database with no schema at all (``pg_dsn`` is already migrated)."""
    name = f"empty_{uuid.uuid4().hex[:16]}"
    embedded_pg.create_database(name)
    yield name
    embedded_pg.drop_database(name)


class Calls:
    def __init__(self) -> None:
        self.count = 0
        self.changes: list[int | None] = []
        self._changed = trio.Event()

    def __call__(self, change: int | None) -> None:
        self.count += 1
        self.changes.append(change)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        while self.count < count:
            await self._changed.wait()


# --- migrations -----------------------------------------------------------------------


def test_migrations_ship_inside_the_package() -> None:
    migrations = load_migrations()
    assert [m.name for m in migrations][:1] == ["0001_initial"]
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    assert "CREATE TABLE config_objects" in migrations[0].sql


async def test_migrate_applies_once_and_records_versions(
    embedded_pg: EmbeddedPostgres, empty_database: str
) -> None:
    dsn = embedded_pg.dsn_for(empty_database)
    every = [m.name for m in load_migrations()]

    assert await migrate(dsn) == every
    assert await migrate(dsn) == []

    recorded = embedded_pg.psql(
        "SELECT version || ' ' || name FROM assay_schema_migrations ORDER BY version",
        database=empty_database,
    )
    assert recorded.split("\n")[:-1] == [f"{m.version} {m.name}" for m in load_migrations()]


async def test_event_ids_recorded_before_migration_0009_stay_known(
    embedded_pg: EmbeddedPostgres, empty_database: str
) -> None:
    """0009 moves event ids to a one-column key: ids recorded before it must still make
    a later event with the same id a duplicate, in their own project only."""
    from assay.adapters.postgres._events import aio_record_events, outcomes_of
    from assay.engine._events import Outcome

    before = [m for m in load_migrations() if m.version < 9]
    embedded_pg.psql(
        ";\n".join(m.sql for m in before)
        + ";\nCREATE TABLE assay_schema_migrations (version integer PRIMARY KEY,"
        " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());\n"
        + "".join(
            f"INSERT INTO assay_schema_migrations VALUES ({m.version}, '{m.name}');\n"
            for m in before
        )
        + "INSERT INTO assay_event_ids VALUES ('prj_1', 'e1'), ('prj_1', 'e 2');",
        database=empty_database,
    )
    dsn = embedded_pg.dsn_for(empty_database)
    assert await migrate(dsn) == [m.name for m in load_migrations() if m.version >= 9]

    batch = [exposure("s1", "e1"), exposure("s2", "e 2"), exposure("s3", "e1", "prj_2")]
    async with open_aio_loop() as loop:
        pool = await loop.run(asyncpg_pool, dsn)
        try:
            written = await loop.run(aio_record_events, pool, stage(batch), T0)
        finally:
            await loop.run(pool.close)
    assert outcomes_of(len(batch), written) == [
        Outcome.DUPLICATE.value,
        Outcome.DUPLICATE.value,
        Outcome.RECORDED.value,
    ]


async def test_the_prepared_last_step_survives_a_rolled_back_first_batch(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last step of a batch is a statement asyncpg keeps prepared per connection. On a
    fresh connection, the first batch creates the temporary stage inside its transaction;
    if that transaction rolls back after the statement was prepared, the stage is gone and
    the next batch makes a new one. The kept statement must then find the new stage."""
    from assay.adapters.postgres import _events as postgres_events
    from assay.engine._events import Outcome

    last_step = postgres_events._record_conversions

    async def fail_after_preparing(conn: Any) -> Any:
        await last_step(conn)
        raise RuntimeError("lost after the last step")

    batch = [exposure("s1", "e1"), exposure("s2", "e2")]
    async with open_aio_loop() as loop:
        pool = await loop.run(asyncpg_pool, pg_dsn)  # one connection: both batches share it
        try:
            monkeypatch.setattr(postgres_events, "_record_conversions", fail_after_preparing)
            with pytest.raises(RuntimeError, match="lost after the last step"):
                await loop.run(postgres_events.aio_record_events, pool, stage(batch), T0)
            monkeypatch.setattr(postgres_events, "_record_conversions", last_step)
            written = await loop.run(postgres_events.aio_record_events, pool, stage(batch), T0)
        finally:
            await loop.run(pool.close)
    # Nothing of the first attempt stayed: both are recorded now.
    assert postgres_events.outcomes_of(len(batch), written) == [Outcome.RECORDED.value] * 2


async def test_concurrent_migrations_apply_each_file_once(
    embedded_pg: EmbeddedPostgres, empty_database: str
) -> None:
    dsn = embedded_pg.dsn_for(empty_database)
    results: list[list[str]] = []

    async def run() -> None:
        results.append(await migrate(dsn))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(run)

    assert sorted(results) == [[], [], [], [m.name for m in load_migrations()]]


async def test_opening_a_store_migrates_by_default(
    embedded_pg: EmbeddedPostgres, empty_database: str
) -> None:
    dsn = embedded_pg.dsn_for(empty_database)
    async with open_postgres_store(dsn) as store, store.transaction() as tx:
        await tx.insert(project("p"))
    assert await migrate(dsn) == []


# --- several stores on one database ---------------------------------------------------


async def test_stores_on_one_database_see_each_others_commits_and_changes(
    pg_dsn: str, nursery: trio.Nursery
) -> None:
    async with open_postgres_store(pg_dsn) as a, open_postgres_store(pg_dsn) as b:
        calls = Calls()
        nursery.start_soon(b.watch_config, calls)
        with trio.fail_after(5):  # listening
            await calls.wait_for(1)

        async with a.transaction() as tx:
            await tx.insert(project("p"))
        # A functional bound (the design promises changes reach every node within a
        # second), not a performance measurement.
        with trio.fail_after(1):
            await calls.wait_for(2)
        assert [p.key for p in (await b.load_config()).projects] == ["p"]

        async with b.transaction() as tx:
            assert await tx.get(Project, None, "p") == project("p")
        nursery.cancel_scope.cancel()


async def test_a_notification_naming_no_transaction_is_relayed_as_unknown(
    pg_dsn: str, embedded_pg: EmbeddedPostgres, nursery: trio.Nursery
) -> None:
    """A server still running the trigger of 0001 sends an empty payload, and anything
    else may NOTIFY on the channel: such a notification must make engines reload (None),
    never pass for a change they hold."""
    async with open_postgres_store(pg_dsn) as store:
        calls = Calls()
        nursery.start_soon(store.watch_config, calls)
        with trio.fail_after(5):
            await calls.wait_for(1)
        await trio.to_thread.run_sync(
            lambda: embedded_pg.psql(
                "SELECT pg_notify('assay_config', ''); SELECT pg_notify('assay_config', 'x1')",
                database=urlsplit(pg_dsn).path.lstrip("/"),
            )
        )
        with trio.fail_after(5):
            await calls.wait_for(2)  # both, or one for both (a burst relays each once)
        async with store.transaction() as tx:
            await tx.insert(project("p"))
        assert isinstance(tx.change, int)
        with trio.fail_after(5):
            while tx.change not in calls.changes:
                await calls.wait_for(calls.count + 1)
        assert calls.changes[-1] == tx.change
        assert set(calls.changes[:-1]) == {None}
        nursery.cancel_scope.cancel()


async def test_transactions_are_serialised_across_stores(pg_dsn: str) -> None:
    """The advisory lock serialises writers in different processes (here: two pools)."""
    order: list[str] = []
    a_inside = trio.Event()
    async with open_postgres_store(pg_dsn) as a, open_postgres_store(pg_dsn) as b:

        async def writer_a() -> None:
            async with a.transaction() as tx:
                a_inside.set()
                await tx.insert(project("p"))
                await trio.sleep(0.3)
                order.append("a commits")

        async def writer_b() -> None:
            await a_inside.wait()
            async with b.transaction() as tx:
                order.append("b enters")
                assert await tx.get(Project, None, "p") == project("p")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer_a)
            nursery.start_soon(writer_b)
    assert order == ["a commits", "b enters"]


async def test_waiting_for_the_write_lock_can_be_cancelled(pg_dsn: str) -> None:
    async with open_postgres_store(pg_dsn, max_size=2) as a, open_postgres_store(pg_dsn) as b:
        release = trio.Event()
        a_inside = trio.Event()

        async def hold() -> None:
            async with a.transaction() as tx:
                await tx.insert(project("p"))
                a_inside.set()
                await release.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold)
            await a_inside.wait()
            with trio.move_on_after(0.2) as waited:
                async with b.transaction():
                    pytest.fail("entered a transaction while another held the lock")
            assert waited.cancelled_caught
            release.set()

        # Store B's connection went back to its pool in good order: B still works.
        for _ in range(3):
            async with b.transaction() as tx:
                assert await tx.get(Project, None, "p") == project("p")


async def test_watch_reconnects_when_its_connection_drops(
    pg_dsn: str, embedded_pg: EmbeddedPostgres, nursery: trio.Nursery
) -> None:
    async with open_postgres_store(pg_dsn) as store:
        calls = Calls()
        nursery.start_soon(store.watch_config, calls)
        with trio.fail_after(5):
            await calls.wait_for(1)

        killed = await trio.to_thread.run_sync(
            lambda: embedded_pg.psql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'assay-listen' AND datname = current_database()",
                database=urlsplit(pg_dsn).path.lstrip("/"),
            )
        )
        assert killed.strip() == "1"
        # Reconnected: the catch-up call, then a call for the next commit.
        with trio.fail_after(5):
            await calls.wait_for(2)
        async with store.transaction() as tx:
            await tx.insert(project("p"))
        with trio.fail_after(5):
            await calls.wait_for(3)
        nursery.cancel_scope.cancel()


# --- errors and cancellation through trio-asyncio ------------------------------------


async def test_errors_leave_the_store_unwrapped(pg_dsn: str, embedded_pg: EmbeddedPostgres) -> None:
    """trio-asyncio runs the block in nurseries of its own; callers still catch what was
    raised, not an ExceptionGroup."""

    class Oops(Exception):
        pass

    with pytest.raises(Oops):
        async with open_postgres_store(pg_dsn):
            raise Oops
    missing = embedded_pg.dsn_for(f"missing_{uuid.uuid4().hex[:8]}")
    with pytest.raises(Exception, match="does not exist") as caught:
        async with open_postgres_store(missing):
            pass
    assert not isinstance(caught.value, BaseExceptionGroup)
    with pytest.raises(Exception, match="does not exist") as caught:
        await migrate(missing)
    assert not isinstance(caught.value, BaseExceptionGroup)


async def test_errors_asyncio_reports_are_logged_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncpg reports some recoverable trouble through the loop's exception handler;
    trio-asyncio's default would tear the loop down."""

    async def report() -> int:
        asyncio.get_running_loop().call_exception_handler({"message": "something odd"})
        await asyncio.sleep(0)
        return 7

    async with open_aio_loop() as loop:
        assert await loop.run(report) == 7
        await trio.sleep(0.05)
        assert await loop.run(report) == 7
    assert "something odd" in caplog.text


async def test_cancelling_the_block_cancels_as_usual(pg_dsn: str) -> None:
    with trio.move_on_after(0.2) as scope:
        async with open_postgres_store(pg_dsn) as store:
            await store.load_config()
            await trio.sleep_forever()
    assert scope.cancelled_caught


# --- Trio tasks outside the store's open block ----------------------------------------


async def test_a_task_started_outside_the_open_block_can_use_the_store(pg_dsn: str) -> None:
    """HTTP handlers and actors live in nurseries opened before the store: trio-asyncio's
    current-loop context variable is not set in them."""
    send, receive = trio.open_memory_channel[PostgresStore](1)
    results: list[object] = []
    done = trio.Event()

    async def outsider() -> None:
        store = await receive.receive()
        async with store.transaction() as tx:
            await tx.insert(project("from-outside"))
            await tx.insert_key(
                ApiKey(
                    id="key_1",
                    role=Role.ADMIN,
                    prefix="ak_x",
                    secret_hash="h1",
                    created_at=T0,
                )
            )
        results.append(await store.get_key_by_hash("h1"))
        results.append([p.key for p in (await store.load_config()).projects])
        calls = Calls()
        with trio.move_on_after(5):
            async with trio.open_nursery() as watchers:
                watchers.start_soon(store.watch_config, calls)
                with trio.fail_after(5):
                    await calls.wait_for(1)
                watchers.cancel_scope.cancel()
        results.append(calls.count)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(outsider)
        await trio.testing.wait_all_tasks_blocked()
        async with open_postgres_store(pg_dsn) as store:
            await send.send(store)
            with trio.fail_after(10):
                await done.wait()

    key, projects, watch_calls = results
    assert isinstance(key, ApiKey)
    assert key.id == "key_1"
    assert projects == ["from-outside"]
    assert watch_calls == 1


async def test_a_failed_record_write_gives_its_connection_back(pg_dsn: str) -> None:
    """The records connection is held between batches; a failed batch must not leave it
    half-used (the next batch works) nor keep it (the store still closes)."""
    import asyncpg

    from assay.engine._core import Decision, Reason

    def decision(decision_id: str) -> Decision:
        return Decision(
            decision_id=decision_id,
            project_id="prj",
            flag="f",
            subject="u",
            value=None,
            reason=Reason.DEFAULT,
            snapshot_version=1,
            decided_at=1.0,
        )

    with trio.fail_after(30):
        async with open_postgres_store(pg_dsn) as store:
            await store.record_decisions([decision("d1")])
            for batch in ([decision("d1")], [decision(f"c{i}") for i in range(40)] * 2):
                # A repeated id: INSERT (small batch) and COPY (large) both fail whole.
                with pytest.raises(asyncpg.UniqueViolationError):
                    await store.record_decisions(batch)
            await store.record_decisions([decision("d2")])
            assert await store.get_decision("d2") is not None
            assert await store.get_decision("c0") is None
