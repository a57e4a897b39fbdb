"""The engine on PostgreSQL when connections die under it: every assay session terminated
by the server (a proxy, a failover, an operator), the records and the change feed carry on
without a restart."""

from __future__ import annotations

from urllib.parse import urlsplit

import trio

import assay
from assay.adapters.embedded import EmbeddedPostgres
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
