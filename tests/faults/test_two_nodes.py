"""Two nodes on one database, events for the same subjects sent to both at once: the
exposures to one, the conversions to the other. Nothing stays pending, nothing is
counted twice, and a configuration change made on one node reaches the other."""

from __future__ import annotations

import httpx
import trio

from assay.engine import Reason
from tests.faults.support import (
    PROJECT,
    Acknowledged,
    Answers,
    assert_stored_once,
    event_batch,
    populate,
    serving,
)


async def test_two_nodes_take_events_for_the_same_subjects_at_once(fault_dsn: str) -> None:
    async with serving(fault_dsn) as (left, left_url), serving(fault_dsn) as (right, right_url):
        secret = await populate(left)
        await right.refresh()
        headers = {"Authorization": f"Bearer {secret}"}
        answers, acked = Answers(), Acknowledged()
        async with (
            httpx.AsyncClient(base_url=left_url, headers=headers, timeout=30) as to_left,
            httpx.AsyncClient(base_url=right_url, headers=headers, timeout=30) as to_right,
        ):

            async def send(client: httpx.AsyncClient, body: object, subjects: list[str]) -> None:
                answer = await client.post("/api/v1/events", json=body)
                answers.add(answer.status_code, answer.json(), answer.headers)
                if answer.status_code == 200:
                    acked.subjects.update(subjects)

            for round_ in range(20):
                subjects = [f"r{round_}s{i}" for i in range(25)]
                exposures = event_batch(subjects, conversions=False)
                conversions = event_batch(subjects, exposures=False)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send, to_left, exposures, subjects)
                    nursery.start_soon(send, to_right, conversions, subjects)

            # A change made through one node is decided on by the other.
            made = await to_left.post("/api/v1/flags", json={"key": "two-nodes"})
            assert made.status_code == 201
            with trio.fail_after(5):
                while (  # noqa: ASYNC110
                    right.decide("two-nodes", "x", project=PROJECT).reason is Reason.FLAG_NOT_FOUND
                ):
                    await trio.sleep(0.02)
            for client in (to_left, to_right):
                assert (await client.get("/ready")).status_code == 200

        answers.assert_no_server_error()
        assert set(answers.statuses) == {200}
        summary = await right.ingestion_summary(PROJECT, "exp")
        assert (summary.exposures, summary.pending) == (500, 0), summary
        await assert_stored_once(right, acked)
