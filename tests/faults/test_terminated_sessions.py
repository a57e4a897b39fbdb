"""Every assay session on the database is terminated (a proxy, a failover, an operator)
three times while a node serves decide and event traffic: no 500, every request answered,
the node carries on without a restart, and everything acknowledged is stored once."""

from __future__ import annotations

import httpx
import trio

from tests.faults.support import (
    Acknowledged,
    Answers,
    FaultyPostgres,
    assert_stored_once,
    mixed_traffic,
    populate,
    serving,
)


async def test_terminating_every_session_mid_traffic(
    fault_pg: FaultyPostgres, fault_dsn: str
) -> None:
    async with serving(fault_dsn) as (engine, base_url):
        secret = await populate(engine)
        headers = {"Authorization": f"Bearer {secret}"}
        answers, acked = Answers(), Acknowledged()
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for task in range(4):
                    nursery.start_soon(mixed_traffic, client, stop, answers, acked, f"t{task}")
                for _ in range(3):
                    await trio.sleep(0.5)
                    terminated = await trio.to_thread.run_sync(
                        fault_pg.terminate_sessions, fault_dsn
                    )
                    assert terminated > 0
                await trio.sleep(0.5)
                stop.set()
            assert (await client.get("/ready")).status_code == 200
        answers.assert_no_server_error()
        assert answers.statuses.get(200, 0) > 0
        assert engine.decision_stats["records_dropped"] == 0
        await assert_stored_once(engine, acked)
