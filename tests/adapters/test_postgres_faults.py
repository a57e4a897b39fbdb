"""The engine on PostgreSQL when connections die under it: every assay session terminated
by the server (a proxy, a failover, an operator), the records and the change feed carry on
without a restart."""

from __future__ import annotations

from functools import partial
from urllib.parse import urlsplit

import trio

import assay
from assay.adapters.embedded import EmbeddedPostgres
from assay.adapters.postgres import open_postgres_store
from assay.engine import SYSTEM_KEY, EngineConfig, Flag, FlagSpec, Reason
from tests.engine.test_decide_engine import P, populate, same_record


def terminate_sessions(embedded_pg: EmbeddedPostgres, dsn: str) -> int:
    """Terminate every session on ``dsn``'s database; how many there were."""
    database = urlsplit(dsn).path.lstrip("/")
    out = embedded_pg.psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = :'db' AND pid <> pg_backend_pid()",
        db=database,
    )
    return int(out.strip())


async def wait_for_flag(engine: assay.Engine, key: str) -> None:
    while engine.decide(key, "anyone", project=P).reason is Reason.FLAG_NOT_FOUND:  # noqa: ASYNC110
        await trio.sleep(0.02)


async def test_records_and_the_change_feed_survive_terminated_sessions(
    pg_dsn: str, embedded_pg: EmbeddedPostgres
) -> None:
    config = EngineConfig(database_url=pg_dsn, decision_cache_size=0)
    async with (
        assay.open_engine(config, load_entry_points=False) as engine,
        assay.open_engine(config, load_entry_points=False) as other,
    ):
        await populate(engine)
        with trio.fail_after(10):
            await other.refresh()
            first = await engine.adecide("color", "u1", {"country": "DE"}, project=P)
        assert first.reason is Reason.EXPERIMENT_ASSIGNED
        for round_ in range(3):
            assert terminate_sessions(embedded_pg, pg_dsn) > 0
            # The records' held connection is gone: the write is retried on a new one.
            with trio.fail_after(10):
                again = await engine.adecide("color", f"v{round_}", {"country": "DE"}, project=P)
            assert same_record(await engine.get_decision(again.decision_id), again)
            # The change feed reconnects: a flag made by the other node arrives here.
            key = f"new-{round_}"
            await other.service.create_object(
                SYSTEM_KEY,
                Flag,
                P,
                FlagSpec(key=key, type="boolean", default_value=True),  # type: ignore[arg-type]
            )
            with trio.fail_after(10):
                await wait_for_flag(engine, key)
        assert engine.decision_stats["records_dropped"] == 0


async def test_an_exposure_and_its_pending_conversion_on_two_nodes_at_once(pg_dsn: str) -> None:
    """Two stores (two nodes) on one database: one records subjects' exposures while the
    other records their conversions, at the same moment. Whichever commits first, no
    conversion stays pending once its subject's exposure is recorded (before, the
    conversion parked in a transaction that could not see the exposure being committed
    by the other, and waited for the five-minute sweep)."""
    from datetime import UTC, datetime, timedelta

    from tests.adapters.test_events_contract import conversion, exposure

    now = datetime(2024, 5, 1, 13, 0, tzinfo=UTC)
    with trio.fail_after(60):
        async with open_postgres_store(pg_dsn) as left, open_postgres_store(pg_dsn) as right:
            for round_ in range(20):
                subjects = [f"r{round_}s{i}" for i in range(50)]
                exposures = [exposure(s) for s in subjects]
                conversions = [conversion(s, expires_at=now + timedelta(days=1)) for s in subjects]
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(left.record_events, exposures, now=now))
                    nursery.start_soon(partial(right.record_events, conversions, now=now))
            counts = await left.ingestion_counts("exp_1", windows={}, until=None, now=now)
    assert counts.pending == 0
    assert sum(v.exposures for v in counts.variants) == 1000
    assert sum(m.conversions for m in counts.metrics) == 1000
