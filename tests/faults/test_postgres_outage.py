"""PostgreSQL stops under a serving node and starts again.

While it is away: decide for a flag whose decisions need no durable record keeps answering
200 from the snapshot (the key is checked against the last reading of it); what needs the
database answers 503 ``store_unavailable`` with ``Retry-After``; nothing answers 500 and
every request is answered. Once it is back, the node serves decide, events and
configuration changes again without a restart, every acknowledged event and decision
record is stored exactly once, and ``/ready`` says so.
"""

from __future__ import annotations

import itertools

import httpx
import trio

import assay
from assay.engine import SYSTEM_KEY, Flag, FlagSpec, Reason
from tests.faults.support import (
    EXPERIMENT,
    EXPERIMENT_FLAG,
    PLAIN_FLAG,
    PROJECT,
    Answers,
    FaultyPostgres,
    fault_config,
    populate,
    serving,
)

OUTAGE_SECONDS = 10.0
"""Long enough for every kind of request to meet the outage; the issue's 10 s outage adds
nothing here but CI time."""


async def test_a_node_rides_through_a_postgres_restart(
    fault_pg: FaultyPostgres, fault_dsn: str
) -> None:
    async with (
        serving(fault_dsn) as (engine, base_url),
        assay.open_engine(fault_config(fault_dsn), load_entry_points=False) as other,
    ):
        secret = await populate(engine)
        headers = {"Authorization": f"Bearer {secret}"}
        answers, plain_in_outage, ready_in_outage = Answers(), Answers(), []
        acknowledged_subjects: set[str] = set()
        acknowledged_decisions: list[str] = []
        down = trio.Event()
        counter = itertools.count()

        async def traffic(client: httpx.AsyncClient, stop: trio.Event) -> None:
            while not stop.is_set():
                n = next(counter)
                in_outage = down.is_set()
                plain = await client.post(
                    "/api/v1/decide", json={"flag": PLAIN_FLAG, "subject": f"p{n}"}
                )
                answers.add(plain.status_code, plain.json(), plain.headers)
                if in_outage and down.is_set():
                    plain_in_outage.add(plain.status_code, plain.json(), plain.headers)
                assigned = await client.post(
                    "/api/v1/decide", json={"flag": EXPERIMENT_FLAG, "subject": f"s{n}"}
                )
                answers.add(assigned.status_code, assigned.json(), assigned.headers)
                if assigned.status_code == 200:
                    acknowledged_decisions.append(assigned.json()["decision_id"])
                subject = f"e{n}"
                events = await client.post(
                    "/api/v1/events",
                    json={
                        "events": [
                            {"type": "exposure", "experiment": EXPERIMENT, "subject": subject,
                             "variant": "a", "event_id": f"x{n}"},
                            {"type": "conversion", "experiment": EXPERIMENT, "subject": subject,
                             "metric": "purchase", "event_id": f"c{n}"},
                        ]
                    },
                )  # fmt: skip
                answers.add(events.status_code, events.json(), events.headers)
                if events.status_code == 200:
                    assert events.json()["recorded"] == 2
                    acknowledged_subjects.add(subject)

        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
            # Decide once first: the key is read (and kept) while the database is up.
            warm = await client.post("/api/v1/decide", json={"flag": PLAIN_FLAG, "subject": "w"})
            assert warm.status_code == 200
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(traffic, client, stop)
                await trio.sleep(0.5)
                await trio.to_thread.run_sync(fault_pg.stop)
                down.set()
                outage_ends = trio.current_time() + OUTAGE_SECONDS
                while trio.current_time() < outage_ends:
                    ready = await client.get("/ready")
                    ready_in_outage.append((ready.status_code, ready.json()["error"]["code"]))
                    await trio.sleep(0.5)
                down = trio.Event()  # requests from now on may meet the database again
                await trio.to_thread.run_sync(fault_pg.start)
                # Everything answers again without a restart: decide, events, readiness.
                with trio.fail_after(15):
                    while (await client.get("/ready")).status_code != 200:  # noqa: ASYNC110
                        await trio.sleep(0.1)
                    while True:
                        assigned = await client.post(
                            "/api/v1/decide", json={"flag": EXPERIMENT_FLAG, "subject": "back"}
                        )
                        if assigned.status_code == 200:
                            break
                        await trio.sleep(0.1)
                await trio.sleep(0.5)
                stop.set()

            # Configuration changes from another node arrive again.
            await other.service.create_object(
                SYSTEM_KEY,
                Flag,
                PROJECT,
                FlagSpec(key="after", type="boolean"),  # type: ignore[arg-type]
            )
            with trio.fail_after(10):
                while engine.decide("after", "x", project=PROJECT).reason is Reason.FLAG_NOT_FOUND:  # noqa: ASYNC110
                    await trio.sleep(0.05)

        answers.assert_no_server_error()
        assert plain_in_outage.statuses.get(200, 0) > 0
        assert set(plain_in_outage.statuses) == {200}, plain_in_outage.statuses
        assert answers.codes.get("store_unavailable", 0) > 0  # the outage was met
        assert ready_in_outage
        assert all(r == (503, "store_unavailable") for r in ready_in_outage)
        # Every acknowledged event is stored, once: each subject's exposure and conversion.
        summary = await engine.ingestion_summary(PROJECT, EXPERIMENT)
        exposed = summary.exposures
        assert exposed >= len(acknowledged_subjects)
        converted = sum(m.conversions for m in summary.metrics)
        assert converted == exposed  # one conversion each, none twice
        assert summary.pending == 0
        for decision_id in acknowledged_decisions:
            assert await engine.get_decision(decision_id) is not None
