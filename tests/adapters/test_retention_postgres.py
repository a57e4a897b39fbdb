"""What only the PostgreSQL lifecycle promises: migration 0016 carries every row of a
populated database into the day partitions; one expiry run at a time per database; the
leader alone runs it; audit entries deleted past their (optional) retention."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import trio

import assay
from assay.adapters.postgres import load_migrations, migrate, open_postgres_store
from assay.adapters.postgres._events import _aio_write, outcomes_of, stage
from assay.adapters.postgres._retention import RETENTION_LOCK_ID
from assay.engine import EngineConfig
from assay.engine._core import Decision, Reason
from assay.engine._events import Kind, Outcome, StagedEvent
from assay.engine._retention import RetentionPolicy, day_number

if TYPE_CHECKING:
    from collections.abc import Iterator

    from assay.adapters.embedded import EmbeddedPostgres

import pytest

NOW = datetime.now(UTC)
DAY = timedelta(days=1)
POLICY = RetentionPolicy(decision_days=30, event_id_days=31)


@pytest.fixture
def empty_database(embedded_pg: EmbeddedPostgres) -> Iterator[str]:
    name = f"empty_{uuid.uuid4().hex[:16]}"
    embedded_pg.create_database(name)
    yield name
    embedded_pg.drop_database(name)


def _migrate_before(embedded_pg: EmbeddedPostgres, database: str, version: int, sql: str) -> None:
    before = [m for m in load_migrations() if m.version < version]
    embedded_pg.psql(
        ";\n".join(m.sql for m in before)
        + ";\nCREATE TABLE assay_schema_migrations (version integer PRIMARY KEY,"
        " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());\n"
        + "".join(
            f"INSERT INTO assay_schema_migrations VALUES ({m.version}, '{m.name}');\n"
            for m in before
        )
        + sql,
        database=database,
    )


async def test_migration_0016_keeps_every_row_of_a_populated_database(
    embedded_pg: EmbeddedPostgres, empty_database: str
) -> None:
    # 3,000 decision records over the 40 days before now, and 2,000 event ids, written
    # with the schema as it was before partitioning.
    _migrate_before(
        embedded_pg,
        empty_database,
        16,
        """
INSERT INTO assay_decisions (decision_id, project_id, flag, subject, value, reason,
    in_experiment, flag_revision, snapshot_version, decided_at)
SELECT 'aaaaaaaaaaaaaaaa' || lpad(to_hex(i), 8, '0'), 'prj_1', 'f', 's' || i,
    to_jsonb(i), 'default', i % 2 = 0, 1, 1, now() - (3000 - i) * interval '20 minutes'
FROM generate_series(1, 3000) i;
INSERT INTO assay_event_ids (event_key)
SELECT length('prj_1') || ':' || 'prj_1' || 'ev-' || i FROM generate_series(1, 2000) i;
""",
    )
    before = embedded_pg.psql(
        "SELECT md5(string_agg(d::text, ',' ORDER BY decision_id)) FROM assay_decisions d",
        database=empty_database,
    )
    dsn = embedded_pg.dsn_for(empty_database)
    assert await migrate(dsn) == [m.name for m in load_migrations() if m.version >= 16]

    def sql(query: str) -> str:
        return embedded_pg.psql(query, database=empty_database).strip()

    # Every row, in its day's partition, nothing in the default one.
    after = sql(
        "SELECT md5(string_agg(d::text, ',' ORDER BY decision_id)) FROM"
        " (SELECT decision_id, project_id, flag, subject, value, variant, rule, reason,"
        " experiment, experiment_reason, in_experiment, hash_value, flag_revision,"
        " snapshot_version, decided_at FROM assay_decisions) d"
    )
    assert after == before.strip()
    assert sql("SELECT count(*) FROM assay_decisions_default") == "0"
    days = sql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'assay_decisions'::regclass")
    assert int(days) >= 42  # 40 days or so of records, today, the default
    assert sql("SELECT count(*) FROM assay_event_ids_legacy") == "2000"

    stale = Decision(
        decision_id="aaaaaaaaaaaaaaaa00000001", project_id="prj_1", flag="f", subject="s1",
        value=1, reason=Reason.DEFAULT, snapshot_version=1, decided_at=0.0,
    )  # fmt: skip
    async with open_postgres_store(dsn, migrate=False) as store:
        # Ids from before still de-duplicate, whatever day their event says.
        dup = StagedEvent(
            Kind.EXPOSURE, "prj_1", "exp_1", "s1", "a", None, 1.0, NOW.timestamp(), "ev-7",
            None, None,
        )  # fmt: skip
        new = dup._replace(event_id="ev-new", subject="s2")
        assert await store.record_events([dup, new], now=NOW) == [
            Outcome.DUPLICATE.value,
            Outcome.RECORDED.value,
        ]
        # The careful path (taken when another writer collides) knows them too.
        again = dup._replace(event_id="ev-8", subject="s3")
        fresh = dup._replace(event_id="ev-newer", subject="s4")
        written = await store._loop.run(
            _aio_write, store._pool, stage([again, fresh]), NOW, careful=True, legacy=True
        )
        assert outcomes_of(2, written) == [Outcome.DUPLICATE.value, Outcome.RECORDED.value]
        old = await store.get_decision("aaaaaaaaaaaaaaaa00000001")
        assert old is not None
        assert old.value == 1
        # Expiry removes the days past retention: the first 10 of the 40 days or so.
        expired = await store.expire(NOW, POLICY)
        assert expired.partitions_dropped
        assert await store.get_decision(stale.decision_id) is None
        assert await store.decision_expired(stale.decision_id)
        kept = int(sql("SELECT count(*) FROM assay_decisions"))
        assert kept + expired.decision_records == 3000
        oldest = datetime.fromisoformat(sql("SELECT min(decided_at) FROM assay_decisions"))
        assert oldest >= NOW - 31 * DAY
        # The legacy ids stay until the id retention has passed since the migration.
        assert sql("SELECT count(*) FROM assay_event_ids_legacy") == "2000"
        later = await store.expire(NOW + 32 * DAY, POLICY)
        assert later.event_ids >= 2000
        assert sql("SELECT count(*) FROM assay_event_ids_legacy") == "0"
        # Ingestion stops probing them once they are gone (an event this old would be
        # refused by the engine by now, timestamp_too_old: the store is asked directly).
        assert await store.record_events([dup._replace(subject="s9")], now=NOW) == [
            Outcome.RECORDED.value
        ]
        assert store._legacy_ids is False


async def test_migration_0023_drops_the_unread_index_from_every_partition(
    embedded_pg: EmbeddedPostgres, empty_database: str
) -> None:
    # 2,000 decision records over five days, half of them in an experiment (what the
    # partial index held), in day partitions and the default one, before 0023.
    _migrate_before(
        embedded_pg,
        empty_database,
        23,
        """
SELECT assay_create_day_partition('assay_decisions', (now() - d * interval '1 day')::date)
FROM generate_series(1, 3) d;
INSERT INTO assay_decisions (decision_id, project_id, flag, subject, value, variant, reason,
    experiment, in_experiment, hash_value, flag_revision, snapshot_version, decided_at)
SELECT 'cccccccccccccccc' || lpad(to_hex(i), 8, '0'), 'prj_1', 'f', 's' || i,
    '"treatment"', CASE WHEN i % 2 = 0 THEN 'treatment' END,
    CASE WHEN i % 2 = 0 THEN 'experiment_assigned' ELSE 'default' END,
    'exp_1', i % 2 = 0, 's' || i, 1, 1, now() - (2000 - i) * interval '3 minutes'
FROM generate_series(1, 2000) i;
""",
    )

    def sql(query: str) -> str:
        return embedded_pg.psql(query, database=empty_database).strip()

    indexes = """SELECT count(*) FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid
        WHERE (c.relname LIKE 'assay\\_decisions%' ESCAPE '\\') AND x.indpred IS NOT NULL"""
    # The partial index, on the parent, the default partition and every day's.
    assert int(sql(indexes)) >= 6
    rows = "SELECT md5(string_agg(d::text, ',' ORDER BY decision_id)) FROM assay_decisions d"
    before = sql(rows)
    dsn = embedded_pg.dsn_for(empty_database)
    assert await migrate(dsn) == [m.name for m in load_migrations() if m.version >= 23]
    assert sql(indexes) == "0"
    assert sql(rows) == before
    assert sql("SELECT count(*) FROM assay_decisions_default") != "0"
    async with open_postgres_store(dsn, migrate=False) as store:
        got = await store.get_decision("cccccccccccccccc000007d0")
        assert got is not None
        assert (got.subject, got.value, got.variant, got.in_experiment, got.hash_value) == (
            "s2000",
            "treatment",
            "treatment",
            True,
            "s2000",
        )
        # The primary key still serves a look-up by id, on every partition.
        plan = await store._loop.run(
            store._pool.fetchval,
            "EXPLAIN (FORMAT JSON) SELECT * FROM assay_decisions WHERE decision_id = $1",
            "cccccccccccccccc000007d0",
        )
        assert "Seq Scan" not in str(plan)


async def test_one_expiry_run_at_a_time(pg_dsn: str, embedded_pg: EmbeddedPostgres) -> None:
    async with open_postgres_store(pg_dsn) as a, open_postgres_store(pg_dsn) as b:
        await a.record_decisions(
            [
                Decision(
                    decision_id=f"bbbbbbbbbbbbbbbb{i:08x}",
                    project_id="prj_1",
                    flag="f",
                    subject="s",
                    value=1,
                    reason=Reason.DEFAULT,
                    snapshot_version=1,
                    decided_at=(NOW - (40 - i) * DAY).timestamp(),
                )
                for i in range(40)
            ]
        )
        # Partitions for the old days (runs on earlier days create them ahead, and keep
        # everything), so that expiry has partitions to drop.
        keep = RetentionPolicy(decision_days=1000, event_id_days=1000)
        for days_ago in range(41, 0, -7):
            await a.expire(NOW - days_ago * DAY, keep)
        stats = await a.retention_stats(NOW, POLICY)
        expected = [p.partition for p in stats.partitions if p.expires]
        assert len(expected) >= 9
        results = []

        async def run(store: object) -> None:
            assert isinstance(store, type(a))
            results.append(await store.expire(NOW, POLICY))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, a)
            nursery.start_soon(run, b)
        dropped = [name for r in results for name in r.partitions_dropped]
        # Whatever the interleaving, no partition was dropped twice (a second DROP would
        # have failed the run) and every run either ran or said it did not.
        assert sorted(dropped) == sorted(expected)

        # While another session holds the lock, a run does nothing and says so.
        import asyncpg  # only to hold the lock from outside the stores

        async def hold() -> Any:
            conn = await asyncpg.connect(pg_dsn)
            assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_ID)
            return conn

        from assay.adapters.postgres._aio import open_aio_loop

        async with open_aio_loop() as loop:
            conn = await loop.run(hold)
            try:
                skipped = await b.expire(NOW + 5 * DAY, POLICY)
            finally:
                await loop.run(conn.close)
        assert not skipped.ran
        assert skipped.partitions_dropped == []


async def test_only_the_leader_expires(pg_dsn: str) -> None:
    config = EngineConfig(
        database_url=pg_dsn,
        pool_size=2,
        guardrail_interval_seconds=0.05,
        guardrail_outbox_poll_seconds=0.02,
        retention_interval_seconds=0.05,
    )
    async with (
        assay.open_engine(config, load_entry_points=False) as first,
        assay.open_engine(config, load_entry_points=False) as second,
    ):
        engines = (first, second)
        with trio.fail_after(30):
            while sum(e.retention.runs for e in engines) < 5:  # noqa: ASYNC110 - counters
                await trio.sleep(0.02)
        leaders = [e for e in engines if e.retention.runs]
        assert len(leaders) == 1
        assert leaders[0].guardrail_status["leading"]


async def test_audit_entries_are_kept_forever_unless_configured(pg_dsn: str) -> None:
    async with open_postgres_store(pg_dsn) as store:
        from assay.engine._model import AuditEntry

        async with store.transaction() as tx:
            for i, at in enumerate((NOW - 400 * DAY, NOW - 10 * DAY)):
                await tx.append_audit(
                    AuditEntry(
                        actor="test",
                        at=at,
                        action="create",
                        resource_kind="flag",
                        resource_id=f"flg_{i}",
                        resource_key=f"f{i}",
                        project_id=None,
                    )
                )
        forever = await store.expire(NOW, POLICY)
        assert forever.audit_entries == 0
        year = RetentionPolicy(decision_days=30, event_id_days=31, audit_days=365)
        stats = await store.retention_stats(NOW, year)
        (audit,) = [k for k in stats.kinds if k.kind == "audit_entries"]
        assert audit.next_expiry_rows == 1
        assert (await store.expire(NOW, year)).audit_entries == 1
        async with store.read() as tx:
            entries = await tx.list_audit(
                project_id=None, resource_kind=None, resource_key=None, before_id=None, limit=10
            )
        assert [e.resource_key for e in entries] == ["f1"]


async def test_the_event_id_probe_reads_one_partition(pg_dsn: str) -> None:
    """Ingestion probes the id of every event: with the batch's days as literals the
    planner keeps the one partition they fall in, so the probe is a plain index scan, not
    an append over every partition pruned again for each row."""
    from assay.adapters.postgres import _events

    today = day_number(NOW)
    probe = _events._DROP_KNOWN_IDS.replace("{days}", f"{today} AND {today}")

    async def explain(pool: Any) -> str:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(_events._CREATE_STAGE)
            return "\n".join(row[0] for row in await conn.fetch("EXPLAIN " + probe))

    async with open_postgres_store(pg_dsn) as store:
        await store.expire(NOW, POLICY)  # every week an accepted event may fall in
        plan = await store._loop.run(explain, store._pool)
    assert "Append" not in plan, plan
    scans = [line for line in plan.splitlines() if "assay_event_ids_p" in line]
    assert len(scans) == 1, plan


async def test_a_partition_detached_but_not_dropped_is_dropped_next_run(pg_dsn: str) -> None:
    """Expiry detaches a partition, then drops it; a process dying in between leaves a
    plain table behind, which the next run drops."""
    async with open_postgres_store(pg_dsn) as store:
        await store.expire(NOW, RetentionPolicy(decision_days=1000, event_id_days=1000))
        tomorrow = f"assay_decisions_p{NOW + DAY:%Y%m%d}"

        async def detach(pool: Any) -> Any:
            await pool.execute(f"ALTER TABLE assay_decisions DETACH PARTITION {tomorrow}")
            return await pool.fetchval("SELECT $1::regclass::oid", tomorrow)

        async def state(pool: Any) -> Any:
            return await pool.fetchrow(
                "SELECT oid, relispartition FROM pg_class WHERE oid = to_regclass($1)", tomorrow
            )

        left_behind = await store._loop.run(detach, store._pool)
        expired = await store.expire(NOW, POLICY)
        assert expired.ran
        # The table left behind was dropped, and today's run made the day's partition
        # again, as a partition ahead.
        now_there = await store._loop.run(state, store._pool)
        assert now_there["oid"] != left_behind
        assert now_there["relispartition"]
        assert tomorrow in expired.partitions_created
