"""Ingestion throughput: exposures and conversions through the engine API and through HTTP,
against raw COPY of the same rows into the same PostgreSQL, in one run.

    python benchmarks/ingest.py [--quick] [--json PATH]

It starts its own embedded PostgreSQL in a temporary directory. Each measured run sends a
fresh workload for a fresh experiment: every subject is exposed once, half of them
convert once, 5% of those conversions arrive before their subject's exposure (they wait
as pending and are promoted when it lands), and 10% of all events are sent a second time
(same event_id). Every event carries an event_id and a timestamp, as an SDK's would.

- engine: ``engine.record_events`` batches from concurrent tasks in this process;
- engine, reported: the same, for an experiment that has had a report. A report builds
  the experiment's rollups, and from then on every ingestion transaction also maintains
  them (the triggers of migration 0004): the state of any experiment someone looks at.
  After each run the report must count every exposure;
- http: the same API served by hypercorn's trio worker on 127.0.0.1, fed batches of 1,000
  by httpx from a separate process (so client and server do not share one CPU);
- raw COPY: the same rows, COPYed in batches of 10,000 into a table without keys or
  indexes, one transaction per batch: the ceiling for getting these rows into this server.

After each engine and http run the experiment's counts are checked to be exact (no lost,
doubled or stuck event); a mismatch fails the benchmark. Before each timed run the garbage
left by building its workload is collected, so that the run does not pay for it.
Reported: the median of the runs, each path's rate and its share of the raw COPY rate.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio
from _machine import machine_busy_seconds  # benchmarks/ is this script's directory

HTTP_BATCH = 1_000
RAW_BATCH = 10_000


@dataclass(frozen=True)
class Settings:
    subjects: int
    repeats: int
    engine_batch: int
    engine_senders: int
    http_concurrency: int


QUICK = Settings(
    subjects=30_000, repeats=3, engine_batch=1_000, engine_senders=8, http_concurrency=8
)
FULL = Settings(
    subjects=100_000, repeats=5, engine_batch=1_000, engine_senders=8, http_concurrency=8
)


# --- the workload -----------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    events: list[Any]  # assay Exposure | Conversion
    subjects: int
    conversions: int
    duplicates: int
    early: int
    """Conversions sent before their subject's exposure."""


def make_workload(experiment: str, tag: str, subjects: int, seed: int) -> Workload:
    from assay.engine._events import Conversion, Exposure

    rng = random.Random(seed)
    base = datetime.now(UTC) - timedelta(minutes=10)
    stream: list[Any] = []
    moved: list[Any] = []
    conversions = early = 0
    for i in range(subjects):
        subject = f"{tag}-u{i}"
        at = base + timedelta(milliseconds=i)
        exposure = Exposure(
            experiment=experiment,
            subject=subject,
            variant="control" if rng.random() < 0.5 else "treatment",
            timestamp=at,
            event_id=f"{tag}-x{i}",
        )
        if rng.random() < 0.5:
            conversions += 1
            conversion = Conversion(
                experiment=experiment,
                metric="purchase",
                subject=subject,
                value=round(rng.uniform(1, 100), 2),
                timestamp=at + timedelta(seconds=30),
                event_id=f"{tag}-c{i}",
            )
            if rng.random() < 0.05:
                # Its exposure goes to the end of the stream: the conversion waits.
                early += 1
                stream.append(conversion)
                moved.append(exposure)
                continue
            stream += [exposure, conversion]
        else:
            stream.append(exposure)
    stream += moved
    duplicates = len(stream) // 10
    for original in rng.sample(stream, duplicates):
        stream.insert(rng.randrange(len(stream) + 1), original)
    return Workload(stream, subjects, conversions, duplicates, early)


def batches(events: list[Any], size: int) -> list[list[Any]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


# --- the engine and http runs -----------------------------------------------------------


@dataclass
class Run:
    events: int
    seconds: float
    pending_answers: int
    python_us: float | None = None
    """CPU of this process per event (engine paths: the engine, and the senders)."""
    rest_us: float | None = None
    """CPU of the rest of the machine per event: PostgreSQL, and whatever else runs."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def prepare(engine: Any, project: str, experiment: str) -> None:
    from assay.engine import SYSTEM_KEY, Experiment, ExperimentSpec, Transition, Variant

    spec = ExperimentSpec(
        key=experiment,
        variants=[Variant(key="control", value=False), Variant(key="treatment", value=True)],
        primary_metrics=["purchase"],
    )
    await engine.service.create_object(SYSTEM_KEY, Experiment, project, spec)
    await engine.service.transition_experiment(SYSTEM_KEY, project, experiment, Transition.START)
    await engine.refresh()


async def verify(engine: Any, project: str, experiment: str, workload: Workload) -> None:
    summary = await engine.ingestion_summary(project, experiment)
    purchase = next(m for m in summary.metrics if m.metric == "purchase")
    got = (summary.exposures, purchase.conversions, summary.pending, summary.crossovers)
    want = (workload.subjects, workload.conversions, 0, 0)
    if got != want:
        raise SystemExit(f"{experiment}: counts {got} != expected {want}")


async def engine_run(engine: Any, project: str, workload: Workload, settings: Settings) -> Run:
    queue = batches(workload.events, settings.engine_batch)
    totals = {"recorded": 0, "deduplicated": 0, "pending": 0}

    async def sender() -> None:
        while queue:
            result = await engine.record_events(project, queue.pop())
            if result.rejected:
                raise SystemExit(f"rejected: {result.rejected[:3]}")
            totals["recorded"] += result.recorded
            totals["deduplicated"] += result.deduplicated
            totals["pending"] += result.pending

    queue.reverse()  # pop() from the end sends the stream in order
    gc.collect()
    busy_before, cpu_before = machine_busy_seconds(), time.process_time()
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(settings.engine_senders):
            nursery.start_soon(sender)
    seconds = time.perf_counter() - started
    busy_after, cpu_after = machine_busy_seconds(), time.process_time()
    if totals["deduplicated"] != workload.duplicates:
        raise SystemExit(f"deduplicated {totals['deduplicated']} != {workload.duplicates}")
    run = Run(len(workload.events), seconds, totals["pending"])
    # Per event, CPU is steadier than throughput on a shared machine (whose speed drifts).
    run.python_us = (cpu_after - cpu_before) / run.events * 1e6
    if busy_before and busy_after:
        busy = busy_after[0] - busy_before[0]
        run.rest_us = max(busy - (cpu_after - cpu_before), 0.0) / run.events * 1e6
    return run


def http_client(
    port: int, secret: str, job: tuple[str, str, int, int], concurrency: int, pipe: Any
) -> None:
    """In a separate process: encode the workload's bodies, say ready, wait for go, send
    them with ``concurrency`` connections and report the time taken and the answers."""
    import httpx

    experiment, tag, subjects, seed = job
    workload = make_workload(experiment, tag, subjects, seed)
    encode = msgspec.json.Encoder().encode
    bodies = [encode({"events": b}) for b in batches(workload.events, HTTP_BATCH)]
    bodies.reverse()
    totals = {"recorded": 0, "deduplicated": 0, "pending": 0, "errors": 0}

    async def main() -> float:
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=120
        ) as client:

            async def worker() -> None:
                while bodies:
                    response = await client.post("/api/v1/events", content=bodies.pop())
                    if response.status_code != 200:
                        totals["errors"] += 1
                        print(response.status_code, response.text[:300], file=sys.stderr)
                        continue
                    answer = response.json()
                    for key in ("recorded", "deduplicated", "pending"):
                        totals[key] += answer[key]
                    if answer["rejected"]:
                        totals["errors"] += 1

            pipe.send("ready")
            pipe.recv()
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
            return time.perf_counter() - started

    seconds = trio.run(main)
    pipe.send((seconds, len(workload.events), totals))


async def http_run(
    port: int, secret: str, job: tuple[str, str, int, int], settings: Settings
) -> Run:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=http_client, args=(port, secret, job, settings.http_concurrency, child)
    )
    process.start()
    try:
        assert await trio.to_thread.run_sync(parent.recv) == "ready"
        gc.collect()
        parent.send("go")
        seconds, events, totals = await trio.to_thread.run_sync(parent.recv)
    finally:
        await trio.to_thread.run_sync(process.join)
    if totals["errors"]:
        raise SystemExit(f"http run had {totals['errors']} failed or rejected batches")
    return Run(events, seconds, totals["pending"])


async def engine_and_http(dsn: str, settings: Settings) -> dict[str, list[Run]]:
    import assay
    from assay.adapters.http import serve
    from assay.engine import SYSTEM_KEY, Metric, MetricSpec, ProjectSpec, Role

    config = assay.EngineConfig(database_url=dsn, log_level="WARNING")
    runs: dict[str, list[Run]] = {"engine": [], "reported": [], "http": []}
    async with assay.open_engine(config, load_entry_points=False) as engine:
        project = "bench"
        await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key=project))
        await engine.service.create_object(
            SYSTEM_KEY, Metric, project, MetricSpec(key="purchase", kind="count")
        )
        _, secret = await engine.service.create_key(SYSTEM_KEY, role=Role.SDK, project=project)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve, engine, host="127.0.0.1", port=0))
            for r in range(settings.repeats):
                experiment, tag = f"engine-{r}", f"e{r}"
                await prepare(engine, project, experiment)
                workload = make_workload(experiment, tag, settings.subjects, seed=r)
                run = await engine_run(engine, project, workload, settings)
                await verify(engine, project, experiment, workload)
                runs["engine"].append(run)
                report("engine", r, run)
            for r in range(settings.repeats):
                experiment, tag = f"reported-{r}", f"p{r}"
                await prepare(engine, project, experiment)
                await engine.report(project, experiment)  # builds the rollups
                workload = make_workload(experiment, tag, settings.subjects, seed=500 + r)
                run = await engine_run(engine, project, workload, settings)
                await verify(engine, project, experiment, workload)
                exposed = sum(
                    v.exposed for v in (await engine.report(project, experiment)).variants
                )
                if exposed != workload.subjects:
                    raise SystemExit(f"{experiment}: report counts {exposed} exposed")
                runs["reported"].append(run)
                report("engine, reported", r, run)
            for r in range(settings.repeats):
                experiment, tag = f"http-{r}", f"h{r}"
                await prepare(engine, project, experiment)
                job = (experiment, tag, settings.subjects, 1000 + r)
                run = await http_run(port, secret, job, settings)
                await verify(engine, project, experiment, make_workload(*job))
                runs["http"].append(run)
                report("http", r, run)
            nursery.cancel_scope.cancel()
    return runs


def report(path: str, repeat: int, run: Run) -> None:
    cpu = ""
    if run.python_us is not None:
        rest = "?" if run.rest_us is None else f"{run.rest_us:.1f}"
        cpu = f"; CPU per event: Python {run.python_us:.1f} us, PostgreSQL and rest {rest} us"
    print(
        f"  {path:<16} run {repeat + 1}: {run.events:>9,} events in {run.seconds:6.2f}s "
        f"= {run.rate:>9,.0f}/s ({run.pending_answers:,} answered pending{cpu})",
        flush=True,
    )


def cpu_medians(runs: list[Run]) -> dict[str, float | None]:
    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return {
        "python": median([r.python_us for r in runs]),
        "rest": median([r.rest_us for r in runs]),
    }


# --- raw COPY ---------------------------------------------------------------------------

_RAW_TABLE = """
CREATE TABLE {name} (
    kind smallint, project_id text, experiment_id text, subject text, variant text,
    metric_key text, value double precision, ts timestamptz, event_id text,
    idempotency_key text, expires_at timestamptz
)
"""


def raw_rows(workload: Workload) -> list[tuple[Any, ...]]:
    """The workload as the rows the engine stages, without checking anything."""
    from assay.engine._events import Exposure

    expires = datetime.now(UTC) + timedelta(days=7)
    rows: list[tuple[Any, ...]] = []
    for e in workload.events:
        if type(e) is Exposure:
            rows.append(
                (0, "prj", "exp", e.subject, e.variant, None, 1.0, e.timestamp, e.event_id,
                 None, None)
            )  # fmt: skip
        else:
            rows.append(
                (1, "prj", "exp", e.subject, None, e.metric, e.value, e.timestamp, e.event_id,
                 None, expires)
            )  # fmt: skip
    return rows


async def raw_copy(dsn: str, settings: Settings) -> list[Run]:
    import asyncpg

    runs = []
    conn = await asyncpg.connect(dsn)
    try:
        for r in range(settings.repeats):
            rows = raw_rows(make_workload("raw", f"r{r}", settings.subjects, seed=2000 + r))
            name = f"bench_raw_{r}"
            await conn.execute(_RAW_TABLE.format(name=name))
            gc.collect()
            started = time.perf_counter()
            for i in range(0, len(rows), RAW_BATCH):
                await conn.copy_records_to_table(name, records=rows[i : i + RAW_BATCH])
            run = Run(len(rows), time.perf_counter() - started, 0)
            runs.append(run)
            report("raw", r, run)
    finally:
        await conn.close()
    return runs


# --- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (under 40 s)")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--subjects", type=int, help="subjects per run (overrides the preset)")
    parser.add_argument("--repeats", type=int, help="runs per path (overrides the preset)")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    if args.subjects:
        settings = Settings(**{**settings.__dict__, "subjects": args.subjects})
    if args.repeats:
        settings = Settings(**{**settings.__dict__, "repeats": args.repeats})

    from assay.adapters.embedded import start_embedded_postgres
    from assay.adapters.postgres import migrate

    started = time.perf_counter()
    # Other work on the machine moves these numbers a lot: say how busy it was.
    load_before = os.getloadavg()
    data_dir = Path(tempfile.mkdtemp(prefix="assay-bench-ingest-"))
    server = start_embedded_postgres(data_dir)
    try:
        server.create_database("bench")
        dsn = server.dsn_for("bench")
        trio.run(migrate, dsn)
        print(f"PostgreSQL in {data_dir}; {settings}", flush=True)
        runs = trio.run(engine_and_http, dsn, settings)
        runs["raw"] = asyncio.run(raw_copy(dsn, settings))
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    medians = {path: statistics.median(r.rate for r in rs) for path, rs in runs.items()}
    raw = medians["raw"]
    print()
    print(f"{'path':<18}{'events/s (median)':>20}{'share of raw COPY':>20}{'runs':>8}")
    for path, label in (
        ("engine", "engine"),
        ("reported", "engine, reported"),
        ("http", "http"),
        ("raw", "raw COPY"),
    ):
        print(f"{label:<18}{medians[path]:>20,.0f}{medians[path] / raw:>20.1%}{len(runs[path]):>8}")
    cpu = {path: cpu_medians(runs[path]) for path in ("engine", "reported")}
    print("\nCPU per event (medians), in microseconds:")
    for path, label in (("engine", "engine"), ("reported", "engine, reported")):
        python, rest = cpu[path]["python"], cpu[path]["rest"]
        rest_text = "?" if rest is None else f"{rest:.1f}"
        print(f"  {label:<18} Python {python:.1f}, PostgreSQL and the rest {rest_text}")
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    print(
        f"\n{elapsed:.1f}s in all; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after"
    )
    results = {
        "benchmark": "ingest",
        "quick": args.quick,
        "settings": settings.__dict__,
        "events_per_run": runs["engine"][0].events,
        "engine_events_per_s": medians["engine"],
        "engine_reported_events_per_s": medians["reported"],
        "http_events_per_s": medians["http"],
        "raw_copy_rows_per_s": raw,
        "engine_share_of_raw_copy": medians["engine"] / raw,
        "engine_reported_share_of_raw_copy": medians["reported"] / raw,
        "http_share_of_raw_copy": medians["http"] / raw,
        "runs": {path: [r.rate for r in rs] for path, rs in runs.items()},
        "cpu_us_per_event": cpu,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "seconds": elapsed,
    }
    if args.json:
        args.json.write_text(msgspec.json.format(msgspec.json.encode(results)).decode() + "\n")


if __name__ == "__main__":
    main()
