"""Report latency at 1M and 10M exposures (and as many conversions over 2 metrics), against
the same aggregation computed straight from the event tables, in one run.

    python benchmarks/report.py [--quick] [--json PATH]

It starts its own embedded PostgreSQL in a temporary directory (removed at the end), makes
one experiment with two variants and two metrics (``converted``: proportion, 24 h window;
``revenue``: mean, 24 h window, CUPED over the 7 days before exposure), asks for one report
so the experiment's rollups exist, then bulk-loads events with COPY straight into the event
tables, in chunks of 1M rows. The rollup triggers run on every chunk as they would on
ingestion, so the report's data is maintained incrementally, exactly as in production.

At each size (1M, then 10M cumulative) it times:

- **report**: ``engine.report(...)`` (the whole path: configuration, rollups, statistics),
  median of several runs after one warm-up;
- **report, mid-hour period**: the same over a period whose edges fall inside hours, so the
  edge hours are read row by row;
- **raw SQL baseline**: one query computing the same per-variant sums from the event tables
  (exposures joined to conversions in the window, crossovers excluded), run once: what a
  report would cost without rollups;
- **report API**, **console page** and **timeseries API**: ``GET
  /api/v1/experiments/{key}/report``, the console's results page for the experiment (its
  charts over time included: daily points since the start, the last being now) and ``GET
  .../report/timeseries?interval=day`` (the same points), each through the Quart app in
  this process (Quart's test client: the whole server-side handling, no network), signed
  in as an admin; medians as above. The console page is measured against the report API
  in the same run (its target: 100 ms or less at 10M exposures), and its size in bytes;
- **timeseries, before and after**: ``report_timeseries`` in process with ``POINTS``
  daily points (each ending at a UTC midnight, so whole hours of the rollups; the last is
  the report itself), computed as it was before (one report per point, in turn) and as it
  is now (one pass over the rollups, ``Store.report_series``), medians of ``POINT_RUNS``.

The experiment's start is set to the first exposure (``START``, ``DAYS`` days before
today's UTC midnight), as if it had run since, so that its series has a point a day.

``--quick`` runs the 1M size only. JSON: ``sizes`` and ``seconds`` (parallel lists, the
report medians) and the rest of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import trio

CHUNK = 1_000_000
RUNS = 7
POINT_RUNS = 5
POINTS = (4, 14)
DAYS = 14
PROJECT, EXPERIMENT = "bench", "checkout"
START = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS)

_BASELINE = """
WITH crossed AS (
    SELECT DISTINCT subject FROM assay_crossovers WHERE experiment_id = $1
), per_subject AS (
    SELECT c.metric_key, c.subject, e.variant, count(*) AS k, sum(c.value) AS v
    FROM assay_conversions c
    JOIN assay_exposures e ON e.experiment_id = c.experiment_id AND e.subject = c.subject
    WHERE c.experiment_id = $1
      AND c.converted_at >= e.exposed_at AND c.converted_at <= e.exposed_at + interval '24 hours'
      AND NOT EXISTS (SELECT 1 FROM crossed x WHERE x.subject = c.subject)
    GROUP BY 1, 2, 3
)
SELECT variant, metric_key, count(*) AS converted, sum(v) AS s, sum(v * v) AS ss
FROM per_subject GROUP BY 1, 2
UNION ALL
SELECT e.variant, '', count(*), 0, 0 FROM assay_exposures e
WHERE e.experiment_id = $1 AND NOT EXISTS (SELECT 1 FROM crossed x WHERE x.subject = e.subject)
GROUP BY 1
"""


def _timestamps(seconds: np.ndarray) -> np.ndarray:
    moments = np.datetime64(START.replace(tzinfo=None), "us") + (seconds * 1e6).astype(
        "timedelta64[us]"
    )
    return np.char.add(np.datetime_as_string(moments, unit="us"), "+00")


def exposure_csv(experiment_id: str, first: int, count: int, total: int) -> bytes:
    """Subjects ``first .. first + count``, exposed in time order over ``DAYS`` days."""
    index = np.arange(first, first + count)
    seconds = index * (DAYS * 86400 / total)
    variants = np.where(index % 2 == 0, "control", "treatment")
    subjects = np.char.add("s", index.astype(str))
    lines = [
        f"{experiment_id},{s},{v},{t}"
        for s, v, t in zip(subjects, variants, _timestamps(seconds), strict=True)
    ]
    return ("\n".join(lines) + "\n").encode()


def conversion_csv(
    experiment_id: str, first: int, count: int, total: int, rng: np.random.Generator
) -> bytes:
    """``count`` conversions of random subjects among ``first .. first + count``: half each
    metric; most inside the 24 h window, some after it and some before the exposure."""
    index = rng.integers(first, first + count, size=count)
    exposed = index * (DAYS * 86400 / total)
    offsets = rng.uniform(-30 * 3600, 36 * 3600, size=count)
    treatment = index % 2 == 1
    metrics = np.where(rng.random(count) < 0.5, "converted", "revenue")
    values = np.round(rng.gamma(2.0, np.where(treatment, 10.5, 10.0)), 2)
    subjects = np.char.add("s", index.astype(str))
    lines = [
        f"{experiment_id},{m},{s},{v},{t}"
        for m, s, v, t in zip(
            metrics, subjects, values, _timestamps(exposed + offsets), strict=True
        )
    ]
    return ("\n".join(lines) + "\n").encode()


async def copy(dsn: str, table: str, columns: list[str], data: bytes) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        chunks = [data]

        async def source() -> Any:
            for chunk in chunks:
                yield chunk

        await conn.copy_to_table(table, source=source(), columns=columns, format="csv")
    finally:
        await conn.close()


async def baseline(dsn: str, experiment_id: str) -> float:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.fetch(_BASELINE, experiment_id)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def tune(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        # Bulk loading: no fsync wait per COPY. Reports: the defaults (parallel query on).
        await conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        await conn.execute("ALTER SYSTEM SET max_wal_size = '8GB'")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def run(dsn: str, sizes: list[int]) -> dict[str, Any]:
    import assay
    from assay.engine import (
        SYSTEM_KEY,
        EngineConfig,
        Experiment,
        ExperimentSpec,
        Metric,
        MetricSpec,
        ProjectSpec,
        Transition,
        Variant,
        report_timeseries,
    )
    from assay.engine._report_timeseries import point_times

    results: dict[str, Any] = {
        "sizes": [],
        "seconds": [],
        "seconds_mid_hour_period": [],
        "baseline_seconds": [],
        "load_seconds": [],
        "report_api_seconds": [],
        "console_page_seconds": [],
        "console_page_bytes": [],
        "console_page_points": [],
        "timeseries_api_seconds": [],
        "timeseries_points": list(POINTS),
        "timeseries_per_point_seconds": [],
        "timeseries_one_pass_seconds": [],
    }
    config = EngineConfig(database_url=dsn, pool_size=2, guardrail_interval_seconds=3600)
    async with assay.open_engine(config, load_entry_points=False) as engine:
        service = engine.service
        await service.create_project(SYSTEM_KEY, ProjectSpec(key=PROJECT))
        for spec in (
            MetricSpec(key="converted", kind="proportion", attribution_window_hours=24),
            MetricSpec(key="revenue", kind="mean", attribution_window_hours=24, cuped_days=7),
        ):
            await service.create_object(SYSTEM_KEY, Metric, PROJECT, spec)
        experiment = await service.create_object(
            SYSTEM_KEY,
            Experiment,
            PROJECT,
            ExperimentSpec(
                key=EXPERIMENT,
                variants=[Variant(key="control", value=0), Variant(key="treatment", value=1)],
                primary_metrics=["converted"],
                secondary_metrics=["revenue"],
            ),
        )
        await service.transition_experiment(SYSTEM_KEY, PROJECT, EXPERIMENT, Transition.START)
        await trio.to_thread.run_sync(asyncio.run, _backdate(dsn, experiment.id))
        await engine.report(PROJECT, EXPERIMENT)  # the rollups exist from here on
        client = await _signed_in_client(engine)
        page_url = f"/console/projects/{PROJECT}/experiments/{EXPERIMENT}"
        api_url = f"/api/v1/experiments/{EXPERIMENT}/report?project={PROJECT}"
        series_url = f"/api/v1/experiments/{EXPERIMENT}/report/timeseries?project={PROJECT}"
        total = max(sizes)
        rng = np.random.default_rng(7)
        loaded = 0
        for size in sizes:
            load_started = time.perf_counter()
            while loaded < size:
                count = min(CHUNK, size - loaded)
                exposures = exposure_csv(experiment.id, loaded, count, total)
                await trio.to_thread.run_sync(
                    asyncio.run,
                    copy(
                        dsn,
                        "assay_exposures",
                        ["experiment_id", "subject", "variant", "exposed_at"],
                        exposures,
                    ),
                )
                conversions = conversion_csv(experiment.id, loaded, count, total, rng)
                await trio.to_thread.run_sync(
                    asyncio.run,
                    copy(
                        dsn,
                        "assay_conversions",
                        ["experiment_id", "metric_key", "subject", "value", "converted_at"],
                        conversions,
                    ),
                )
                loaded += count
                print(f"  loaded {loaded:,} exposures and conversions", flush=True)
            load_seconds = time.perf_counter() - load_started

            async def timed(**period: Any) -> float:
                started = time.perf_counter()
                await engine.report(PROJECT, EXPERIMENT, **period)
                return time.perf_counter() - started

            await timed()  # warm-up: compacts the deltas the load appended
            seconds = statistics.median([await timed() for _ in range(RUNS)])
            span = timedelta(seconds=DAYS * 86400 * size / total)
            period = {
                "start": START + timedelta(minutes=17),
                "end": START + span - timedelta(minutes=23),
            }
            await timed(**period)
            mid_hour = statistics.median([await timed(**period) for _ in range(RUNS)])
            await _get(client, page_url)
            api = statistics.median([(await _get(client, api_url))[0] for _ in range(RUNS)])
            pages = [await _get(client, page_url) for _ in range(RUNS)]
            page = statistics.median(t for t, _ in pages)
            page_bytes = pages[-1][1]
            await _get(client, series_url)
            api_series = statistics.median(
                [(await _get(client, series_url))[0] for _ in range(RUNS)]
            )
            shown = (await report_timeseries(engine, PROJECT, EXPERIMENT, interval="day")).points
            per_point, one_pass = [], []
            for count in POINTS:
                now = START + timedelta(days=count - 1, hours=12)
                assert len(point_times(START, now, "day")) == count
                per_point.append(await _median_of(partial(_per_point, engine, now)))
                one_pass.append(
                    await _median_of(
                        partial(report_timeseries, engine, PROJECT, EXPERIMENT, now=now)
                    )
                )
            base = await trio.to_thread.run_sync(asyncio.run, baseline(dsn, experiment.id))
            report = await engine.report(PROJECT, EXPERIMENT)
            assert sum(v.exposed for v in report.variants) == size, report.variants
            print(
                f"{size:>12,} exposures: report {seconds * 1000:8.1f} ms, mid-hour period "
                f"{mid_hour * 1000:8.1f} ms, report API {api * 1000:8.1f} ms, console page "
                f"{page * 1000:8.1f} ms ({page_bytes:,} bytes, {len(shown)} points over "
                f"time), timeseries API {api_series * 1000:8.1f} ms, "
                + ", ".join(
                    f"{n} points {b * 1000:.1f} -> {a * 1000:.1f} ms"
                    for n, b, a in zip(POINTS, per_point, one_pass, strict=True)
                )
                + f", raw SQL {base:7.2f} s "
                f"(load {load_seconds:.1f} s)",
                flush=True,
            )
            results["sizes"].append(size)
            results["seconds"].append(seconds)
            results["seconds_mid_hour_period"].append(mid_hour)
            results["baseline_seconds"].append(base)
            results["load_seconds"].append(load_seconds)
            results["report_api_seconds"].append(api)
            results["console_page_seconds"].append(page)
            results["console_page_bytes"].append(page_bytes)
            results["console_page_points"].append(len(shown))
            results["timeseries_api_seconds"].append(api_series)
            results["timeseries_per_point_seconds"].append(per_point)
            results["timeseries_one_pass_seconds"].append(one_pass)
    return results


async def _backdate(dsn: str, experiment_id: str) -> None:
    """The experiment started at ``START``, when its first subject was exposed."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "UPDATE config_objects SET body = jsonb_set(body, '{started_at}', to_jsonb($2::text))"
            " WHERE id = $1",
            experiment_id,
            START.isoformat(),
        )
    finally:
        await conn.close()


async def _per_point(engine: Any, now: datetime) -> Any:
    """``report_timeseries`` as it was before ``Store.report_series``: the report, then one
    report per point but the last, in turn."""
    from assay.engine import SYSTEM_KEY, Experiment
    from assay.engine._report_timeseries import Timeseries, _point, point_times

    latest = await engine.report(PROJECT, EXPERIMENT)
    target = await engine.service.get_object(SYSTEM_KEY, Experiment, PROJECT, EXPERIMENT)
    times = point_times(target.started_at, now, "day")
    points = [_point(at, await engine.report(PROJECT, EXPERIMENT, end=at)) for at in times[:-1]]
    points.append(_point(times[-1], latest))
    return Timeseries(
        experiment=EXPERIMENT,
        interval="day",
        control=latest.control,
        correction=latest.correction,
        points=points,
    )


async def _median_of(call: Any) -> float:
    await call()  # warm-up

    async def once() -> float:
        started = time.perf_counter()
        await call()
        return time.perf_counter() - started

    return statistics.median([await once() for _ in range(POINT_RUNS)])


async def _signed_in_client(engine: Any) -> Any:
    """Quart's test client for the app, signed in to the console with an admin key (the
    same key then reads the report API)."""
    import re

    from assay.adapters.http import create_app
    from assay.engine import SYSTEM_KEY, Role

    _, secret = await engine.service.create_key(SYSTEM_KEY, role=Role.ADMIN, project=None)
    client = create_app(engine).test_client()
    form = await (await client.get("/console/sign-in")).get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', form)
    assert token is not None
    signed = await client.post("/console/sign-in", form={"csrf": token.group(1), "api_key": secret})
    assert signed.status_code == 303, signed.status_code
    client.headers = {"Authorization": f"Bearer {secret}"}
    return client


async def _get(client: Any, url: str) -> tuple[float, int]:
    started = time.perf_counter()
    response = await client.get(url, headers=client.headers)
    body = await response.get_data()
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, (url, response.status_code)
    return elapsed, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the 1M size only (under 60 s)")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    sizes = [1_000_000] if args.quick else [1_000_000, 10_000_000]

    from assay.adapters.embedded import start_embedded_postgres
    from assay.adapters.postgres import migrate

    started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="assay-bench-report-"))
    server = start_embedded_postgres(data_dir)
    try:
        server.create_database("bench")
        dsn = server.dsn_for("bench")
        trio.run(migrate, dsn)
        asyncio.run(tune(dsn))
        print(f"PostgreSQL in {data_dir}; sizes {sizes}", flush=True)
        results = trio.run(run, dsn, sizes)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    print()
    header = (
        ("exposures", 12),
        ("report (s)", 12),
        ("mid-hour (s)", 14),
        ("raw SQL (s)", 13),
        ("x faster", 10),
        ("API (s)", 10),
        ("console (s)", 13),
        ("console/API", 13),
        ("page KB", 9),
    )
    print("".join(f"{name:>{width}}" for name, width in header))
    for size, s, m, b, api, page, size_b in zip(
        results["sizes"],
        results["seconds"],
        results["seconds_mid_hour_period"],
        results["baseline_seconds"],
        results["report_api_seconds"],
        results["console_page_seconds"],
        results["console_page_bytes"],
        strict=True,
    ):
        print(
            f"{size:>12,}{s:>12.4f}{m:>14.4f}{b:>13.2f}{b / s:>10.0f}{api:>10.4f}{page:>13.4f}"
            f"{page / api:>13.2f}{size_b / 1024:>9.1f}"
        )
    print(
        "\nresults page with its charts over time, and the timeseries API, against the report API"
    )
    print(f"{'exposures':>12}{'API (s)':>10}{'page (s)':>10}{'/API':>7}{'points':>8}"
          f"{'series API (s)':>16}{'/API':>7}")  # fmt: skip
    for size, api, page, n, series in zip(
        results["sizes"],
        results["report_api_seconds"],
        results["console_page_seconds"],
        results["console_page_points"],
        results["timeseries_api_seconds"],
        strict=True,
    ):
        print(f"{size:>12,}{api:>10.4f}{page:>10.4f}{page / api:>7.2f}{n:>8}{series:>16.4f}"
              f"{series / api:>7.2f}")  # fmt: skip
    print("\ntimeseries in process: one report per point (before) against one pass (after)")
    print(f"{'exposures':>12}{'points':>8}{'before (s)':>12}{'after (s)':>11}{'x faster':>10}")
    for size, befores, afters in zip(
        results["sizes"],
        results["timeseries_per_point_seconds"],
        results["timeseries_one_pass_seconds"],
        strict=True,
    ):
        for n, b, a in zip(POINTS, befores, afters, strict=True):
            print(f"{size:>12,}{n:>8}{b:>12.4f}{a:>11.4f}{b / a:>10.1f}")
    if len(results["sizes"]) > 1:
        data_growth = results["sizes"][-1] / results["sizes"][0]
        cost_growth = results["seconds"][-1] / results["seconds"][0]
        mid = results["seconds_mid_hour_period"]
        raw = results["baseline_seconds"]
        print(
            f"\ndata grew {data_growth:.0f}x; report cost grew {cost_growth:.2f}x "
            f"(mid-hour period {mid[-1] / mid[0]:.2f}x, raw SQL {raw[-1] / raw[0]:.1f}x)"
        )
        results["data_growth"] = data_growth
        results["cost_growth"] = cost_growth
    elapsed = time.perf_counter() - started
    print(f"{elapsed:.1f}s in all")
    results.update(
        {
            "benchmark": "report",
            "quick": args.quick,
            "metrics": 2,
            "runs_per_size": RUNS,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "elapsed_seconds": elapsed,
        }
    )
    if args.json:
        args.json.write_text(msgspec.json.format(msgspec.json.encode(results)).decode() + "\n")


if __name__ == "__main__":
    main()
