"""The server process is killed with ``kill -9`` during ingestion, five times in a row,
and started again each time. Every batch acknowledged before a kill is stored after the
restart, and none twice: the batches left unanswered by a kill are sent again (as a
client would) and their event ids keep them from counting twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest
import trio

import assay
from tests.faults.support import PROJECT, event_batch, fault_config, populate

KILLS = 5
_SERVING = re.compile(rb"serving on http://127\.0\.0\.1:(\d+)")


async def start_server(dsn: str) -> tuple[trio.Process, int]:
    """``assay serve`` on a free loopback port: the process and its port."""
    command = [
        sys.executable, "-c", "from assay.adapters.cli import main; raise SystemExit(main())",
        "serve", "--database-url", dsn, "--host", "127.0.0.1", "--port", "0",
    ]  # fmt: skip
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    seen = b""
    with trio.fail_after(60):
        while (found := _SERVING.search(seen)) is None:
            chunk = await process.stdout.receive_some(4096)
            assert chunk, f"the server exited: {seen!r}"
            seen += chunk
    return process, int(found.group(1))


# A kill aborts requests whose bodies httpx was still streaming: their generators are
# collected unfinished, which is the client's business, not a finding.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_kill_9_during_ingestion_loses_nothing_acknowledged(fault_dsn: str) -> None:
    async with assay.open_engine(fault_config(fault_dsn), load_entry_points=False) as engine:
        secret = await populate(engine)
    headers = {"Authorization": f"Bearer {secret}"}
    batches = [[f"b{b}s{i}" for i in range(20)] for b in range(10_000)]
    unanswered: list[list[str]] = []
    acked: set[str] = set()
    next_batch = iter(batches)

    async def sender(client: httpx.AsyncClient) -> None:
        for subjects in next_batch:
            try:
                answer = await client.post("/api/v1/events", json=event_batch(subjects))
            except httpx.TransportError:
                unanswered.append(subjects)  # killed: no answer
                return
            assert answer.status_code == 200, answer.text
            assert answer.json()["recorded"] + answer.json()["deduplicated"] == 40
            acked.update(subjects)

    for _ in range(KILLS):
        process, port = await start_server(fault_dsn)
        try:
            async with (
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
                ) as client,
                trio.open_nursery() as nursery,
            ):
                for _ in range(4):
                    nursery.start_soon(sender, client)
                await trio.sleep(0.7)
                os.kill(process.pid, signal.SIGKILL)
        finally:
            with trio.CancelScope(shield=True):
                process.kill()
                await process.wait()
        assert process.returncode == -signal.SIGKILL

    # Started once more: what was acknowledged is there; the rest is sent again.
    process, port = await start_server(fault_dsn)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
        ) as client:
            summary = await client.get(f"/api/v1/experiments/exp/ingestion?project={PROJECT}")
            before_resend: Any = summary.json()
            for subjects in unanswered:
                answer = await client.post("/api/v1/events", json=event_batch(subjects))
                assert answer.status_code == 200
                acked.update(subjects)
            after: Any = (
                await client.get(f"/api/v1/experiments/exp/ingestion?project={PROJECT}")
            ).json()
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(15):
            await process.wait()
        process.kill()
        await process.wait()
    sent = len(acked)
    assert len(unanswered) >= KILLS  # the kills did land mid-ingestion
    assert before_resend["exposures"] >= sent - 20 * len(unanswered)
    assert after["exposures"] == sent
    stored = sum(
        m["conversions"] + m["outside_window"] + m["crossover"] + m["unexposed"]
        for m in after["metrics"]
    )
    assert stored == sent
    assert after["pending"] == 0
